//! Payment requests read from an SQS event exactly as Lambda delivers it.

use cafe_events::payment::{BadMessage, PaymentRequest};

use crate::helpers::fixture;

#[test]
fn a_well_formed_body_is_a_request() {
    let event = fixture();
    let body = event.records[0].body.as_deref().unwrap();
    assert_eq!(
        PaymentRequest::parse(body),
        Ok(PaymentRequest {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            amount_cents: 1250,
            currency: "USD".into(),
            attempt: 1,
            idempotency_key: "pay:o-1".into(),
        })
    );
}

#[test]
fn bad_bodies_are_refused_with_a_reason() {
    let event = fixture();
    let parsed: Vec<_> = event
        .records
        .iter()
        .map(|r| PaymentRequest::parse(r.body.as_deref().unwrap_or_default()))
        .collect();
    assert!(
        matches!(&parsed[1], Err(BadMessage::Shape(m)) if m.contains("expected")),
        "{:?}",
        parsed[1]
    );
    assert!(
        matches!(&parsed[2], Err(BadMessage::Shape(m)) if m.contains("amount_cents")),
        "{:?}",
        parsed[2]
    );
    assert_eq!(
        parsed[3],
        Err(BadMessage::Field {
            field: "amount_cents",
            reason: "must be positive"
        })
    );
    assert!(
        matches!(&parsed[4], Err(BadMessage::Shape(m)) if m.contains("invalid type")),
        "{:?}",
        parsed[4]
    );
}

#[test]
fn every_field_is_checked() {
    let good =
        r#"{"order_id":"o-1","customer_id":"c-1","amount_cents":1,"currency":"EUR","attempt":1,"idempotency_key":"k"}"#;
    assert!(PaymentRequest::parse(good).is_ok());
    let cases = [
        (r#""order_id":"o-1""#, r#""order_id":" ""#, "order_id"),
        (r#""customer_id":"c-1""#, r#""customer_id":"""#, "customer_id"),
        (r#""idempotency_key":"k""#, r#""idempotency_key":"""#, "idempotency_key"),
        (r#""amount_cents":1"#, r#""amount_cents":0"#, "amount_cents"),
        (r#""currency":"EUR""#, r#""currency":"eur""#, "currency"),
        (r#""currency":"EUR""#, r#""currency":"EURO""#, "currency"),
        (r#""attempt":1"#, r#""attempt":0"#, "attempt"),
    ];
    for (from, to, field) in cases {
        let body = good.replace(from, to);
        match PaymentRequest::parse(&body) {
            Err(BadMessage::Field { field: f, .. }) => assert_eq!(f, field, "{body}"),
            other => panic!("{body}: {other:?}"),
        }
    }
    let long = good.replace(r#""order_id":"o-1""#, &format!(r#""order_id":"{}""#, "o".repeat(256)));
    assert!(matches!(
        PaymentRequest::parse(&long),
        Err(BadMessage::Field { field: "order_id", .. })
    ));
}
