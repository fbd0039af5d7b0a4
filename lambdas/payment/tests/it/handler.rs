//! The handler against the local stack's DynamoDB (event store, idempotency) and Kinesis.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cafe_events::proto::orders::v1::OrderStatus;
use cafe_lambda_payment::gateway::SimulatedGateway;
use cafe_lambda_payment::handler::{Failed, Settled};
use cafe_lambda_payment::idempotency::{Claim, payload_hash};

use crate::helpers::*;

/// Everything logged while it lives (the test's thread only), as plain text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn a_fixture_batch_fails_exactly_its_bad_messages_with_their_reasons_logged() {
    let world = World::new().await;
    world.place("o-1", "c-1", 1).await;
    let payments = world.handler(SimulatedGateway::default());
    let fixture = fixture();
    let ids: Vec<String> = fixture.records.iter().map(|r| r.message_id.clone().unwrap()).collect();
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let (response, counts) = {
        let _guard = tracing::subscriber::set_default(subscriber);
        payments.handle_counted(fixture).await
    };
    // The batch's EMF line: valid EMF, one settled, four refused for good.
    assert_eq!((counts.settled, counts.retried, counts.refused), (1, 0, 4));
    let emf = counts.emf("CloudCafe", "cafe-lambda-payment", 1_800_000_000_000, None);
    cafe_consumers::emf::validate(&emf).unwrap();
    let v: serde_json::Value = serde_json::from_str(&emf).unwrap();
    assert_eq!(v["FunctionName"], "cafe-lambda-payment");
    assert_eq!(v[cafe_consumers::emf::PAYMENTS_REFUSED], 4.0);
    assert_eq!(
        cafe_consumers::emf::values(&emf, cafe_consumers::emf::INIT_DURATION),
        None
    );
    // An instance's first batch also says how long its init took.
    let first = counts.emf("CloudCafe", "cafe-lambda-payment", 1, Some(Duration::from_millis(42)));
    assert_eq!(
        cafe_consumers::emf::values(&first, cafe_consumers::emf::INIT_DURATION),
        Some(vec![42.0])
    );
    // Not JSON, a missing amount, a negative amount, a string amount: reported; the
    // good one is charged and its order paid.
    assert_eq!(failed_ids(&response), ids[1..].to_vec());
    assert_eq!(payments.gateway().decisions(), 1, "charged once");
    assert_eq!(world.status("o-1").await, Some(OrderStatus::Paid));
    assert_eq!(world.payment_events("o-1").await, 1);
    // Each refusal is logged with its message id and why.
    let text = logs.text();
    for (id, reason) in ids[1..].iter().zip([
        "expected value",
        "missing field `amount_cents`",
        "amount_cents: must be positive",
        "invalid type: string",
    ]) {
        let line = text
            .lines()
            .find(|l| l.contains(id.as_str()) && l.contains("refused"))
            .unwrap_or_else(|| panic!("no refusal logged for {id}:\n{text}"));
        assert!(line.contains(reason), "{line}");
    }
}

#[tokio::test]
async fn a_repeated_message_is_charged_once_and_appended_once() {
    let world = World::new().await;
    world.place("o-twice", "c-1", 2).await;
    let payments = world.handler(SimulatedGateway::default());
    let body = serde_json::to_string(&request("o-twice", "c-1", 2)).unwrap();
    for delivery in ["m-1", "m-2"] {
        let response = payments.handle(event(vec![message(delivery, &body)])).await;
        assert!(response.batch_item_failures.is_empty(), "{delivery}: {response:?}");
    }
    // A saga retry (next attempt, same payment) is the same payment too.
    let mut retry = request("o-twice", "c-1", 2);
    retry.attempt = 2;
    let outcome = payments
        .process(&message("m-3", &serde_json::to_string(&retry).unwrap()))
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Settled::Authorized {
            payment_id: "pay-o-twice:payment".into()
        }
    );
    assert_eq!(payments.gateway().decisions(), 1, "charged once");
    assert_eq!(world.payment_events("o-twice").await, 1);
}

#[tokio::test]
async fn twenty_concurrent_duplicates_charge_once() {
    let world = World::new().await;
    world.place("o-20", "c-1", 1).await;
    let payments = world.handler(SimulatedGateway::default());
    let body = serde_json::to_string(&request("o-20", "c-1", 1)).unwrap();
    // 20 invocations at once, as 20 pollers could deliver one message's duplicates.
    let calls = (0..20).map(|i| {
        let payments = payments.clone();
        let body = body.clone();
        tokio::spawn(async move { payments.handle(event(vec![message(&format!("m-{i}"), &body)])).await })
    });
    let responses = futures::future::join_all(calls).await;
    let mut pending: Vec<String> = responses.into_iter().flat_map(|r| failed_ids(&r.unwrap())).collect();
    assert!(pending.len() < 20, "at least one delivery got through");
    // What failed was told "in progress elsewhere": SQS redelivers it, and then it is
    // answered from the record.
    for _ in 0..5 {
        if pending.is_empty() {
            break;
        }
        let batch = pending.iter().map(|id| message(id, &body)).collect();
        pending = failed_ids(&payments.handle(event(batch)).await);
    }
    assert!(pending.is_empty(), "still failing: {pending:?}");
    assert_eq!(payments.gateway().decisions(), 1, "charged once");
    assert_eq!(world.payment_events("o-20").await, 1);
    assert_eq!(world.status("o-20").await, Some(OrderStatus::Paid));
}

#[tokio::test]
async fn a_key_reused_for_another_payment_is_refused_uncharged() {
    let world = World::new().await;
    world.place("o-a", "c-1", 1).await;
    world.place("o-b", "c-1", 3).await;
    let payments = world.handler(SimulatedGateway::default());
    let first = request("o-a", "c-1", 1);
    payments
        .process(&message("m-1", &serde_json::to_string(&first).unwrap()))
        .await
        .unwrap();
    let mut other = request("o-b", "c-1", 3);
    other.idempotency_key = first.idempotency_key.clone();
    let refused = payments
        .process(&message("m-2", &serde_json::to_string(&other).unwrap()))
        .await
        .unwrap_err();
    assert!(matches!(refused, Failed::KeyReused(_)), "{refused}");
    assert!(refused.is_permanent());
    assert_eq!(payments.gateway().decisions(), 1, "charged once");
    assert_eq!(world.status("o-b").await, Some(OrderStatus::Placed));
}

#[tokio::test]
async fn a_crashed_attempt_is_retried_once_its_claim_expires() {
    let world = World::new().await;
    world.place("o-crash", "c-1", 1).await;
    let request = request("o-crash", "c-1", 1);
    // An attempt that claimed the key and died before charging.
    let mut crashed = world.idempotency();
    crashed.lease = Duration::from_secs(1);
    assert_eq!(
        crashed.claim(&request, &payload_hash(&request)).await.unwrap(),
        Claim::Acquired
    );
    let payments = world.handler(SimulatedGateway::default());
    let body = serde_json::to_string(&request).unwrap();
    let early = payments.process(&message("m-1", &body)).await.unwrap_err();
    assert!(matches!(early, Failed::InProgress(_)), "{early}");
    assert!(!early.is_permanent());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    payments.process(&message("m-2", &body)).await.unwrap();
    assert_eq!(payments.gateway().decisions(), 1, "charged once");
    assert_eq!(world.status("o-crash").await, Some(OrderStatus::Paid));
}

#[tokio::test]
async fn declines_transient_failures_and_unpayable_orders() {
    let world = World::new().await;
    for (id, customer, units) in [
        ("o-blocked", "c-blocked", 1),
        ("o-big", "c-1", 20),
        ("o-flaky", "c-flaky", 1),
        ("o-wrong", "c-1", 1),
    ] {
        world.place(id, customer, units).await;
    }
    let gateway = SimulatedGateway::new(PRICE * 10).block("c-blocked").flaky("c-flaky", 2);
    let payments = world.handler(gateway);
    let process = |body: String, id: &'static str| {
        let payments = payments.clone();
        async move { payments.process(&message(id, &body)).await }
    };
    let body = |r| serde_json::to_string(&r).unwrap();
    let deliver = |body: String, delivery: u32| {
        let payments = payments.clone();
        async move { payments.process(&delivered(message("m-flaky", &body), delivery)).await }
    };

    let declined = process(body(request("o-blocked", "c-blocked", 1)), "m-1")
        .await
        .unwrap();
    assert_eq!(
        declined,
        Settled::Declined {
            reason: "customer_blocked".into()
        }
    );
    assert_eq!(world.status("o-blocked").await, Some(OrderStatus::PaymentDeclined));
    let over = process(body(request("o-big", "c-1", 20)), "m-2").await.unwrap();
    assert_eq!(
        over,
        Settled::Declined {
            reason: "amount_over_limit".into()
        }
    );
    assert_eq!(world.status("o-big").await, Some(OrderStatus::PaymentDeclined));

    // Two outages, then the third delivery goes through; each failure released its claim.
    for delivery in [1, 2] {
        let e = deliver(body(request("o-flaky", "c-flaky", 1)), delivery)
            .await
            .unwrap_err();
        assert!(matches!(e, Failed::Gateway(_)) && !e.is_permanent(), "{e}");
    }
    deliver(body(request("o-flaky", "c-flaky", 1)), 3).await.unwrap();
    assert_eq!(world.status("o-flaky").await, Some(OrderStatus::Paid));

    // An order that does not exist, or another amount than its total: never charged.
    let missing = process(body(request("o-nowhere", "c-1", 1)), "m-6").await.unwrap_err();
    let mut wrong = request("o-wrong", "c-1", 1);
    wrong.amount_cents += 1;
    let mismatch = process(body(wrong), "m-7").await.unwrap_err();
    for e in [&missing, &mismatch] {
        assert!(matches!(e, Failed::NotPayable { .. }) && e.is_permanent(), "{e}");
    }
    assert_eq!(world.status("o-wrong").await, Some(OrderStatus::Placed));
    assert_eq!(payments.gateway().authorizations(), 1, "only o-flaky was charged");
    assert_eq!(
        payments.gateway().decisions(),
        3,
        "two declines and o-flaky's authorisation"
    );
}

#[tokio::test]
async fn a_settled_order_is_acknowledged_without_a_charge() {
    let world = World::new().await;
    world.place("o-done", "c-1", 1).await;
    let payments = world.handler(SimulatedGateway::default());
    let body = serde_json::to_string(&request("o-done", "c-1", 1)).unwrap();
    payments.process(&message("m-1", &body)).await.unwrap();
    // A replay of the stream re-sends the request after its record expired: the order
    // is paid, so nothing is charged or appended, and the message is done.
    let mut forgetful = world.idempotency();
    forgetful.ttl = Duration::ZERO;
    let fresh = world.handler(SimulatedGateway::default());
    let replayed = request("o-done", "c-1", 1);
    forgetful
        .complete(
            &replayed,
            "stale",
            &cafe_lambda_payment::gateway::Charge::Declined { reason: "x".into() },
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        fresh.process(&message("m-2", &body)).await.unwrap(),
        Settled::AlreadySettled { status: "paid" }
    );
    assert_eq!(fresh.gateway().decisions(), 0);
    assert_eq!(world.payment_events("o-done").await, 1);
}
