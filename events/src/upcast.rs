//! Upcasters: lift a payload written with an old layout to the current one.
//!
//! Events are immutable, so the event store and a stream's retention window hold every
//! layout ever written. Each upcaster turns version `n` of one event type into `n + 1`;
//! [`to_current`] chains them, so a reader only ever decodes the current layout.

use bytes::Bytes;
use prost::Message;

use crate::error::DecodeError;
use crate::money::Cents;
use crate::proto::orders::v1::{OrderPlaced, legacy::OrderPlacedV1};

type Step = fn(Bytes) -> Result<Bytes, String>;

/// `(event type, from version, step to from + 1)`.
const CHAIN: &[(&str, u32, Step)] = &[("cloudcafe.orders.v1.OrderPlaced", 1, order_placed_v1_to_v2)];

/// Applies the upcaster chain until the payload has the `current` layout.
pub(crate) fn to_current(
    event_type: &str,
    mut version: u32,
    current: u32,
    mut payload: Bytes,
) -> Result<Bytes, DecodeError> {
    if version > current {
        return Err(DecodeError::SchemaTooNew {
            event_type: event_type.to_owned(),
            found: version,
            current,
        });
    }
    if version == 0 {
        return Err(DecodeError::MissingField("schema_version"));
    }
    while version < current {
        let step = CHAIN
            .iter()
            .find(|(t, from, _)| *t == event_type && *from == version)
            .map(|(.., step)| step)
            .ok_or_else(|| DecodeError::Upcast {
                event_type: event_type.to_owned(),
                from: version,
                reason: "no upcaster for this version".to_owned(),
            })?;
        payload = step(payload).map_err(|reason| DecodeError::Upcast {
            event_type: event_type.to_owned(),
            from: version,
            reason,
        })?;
        version += 1;
    }
    Ok(payload)
}

/// v1 (the seed's layout) carried the total as decimal text in field 5; v2 carries
/// integer cents in field 7 and reserves 5.
fn order_placed_v1_to_v2(payload: Bytes) -> Result<Bytes, String> {
    let old = OrderPlacedV1::decode(payload).map_err(|e| e.to_string())?;
    let total = Cents::parse_decimal(&old.total_amount).map_err(|e| e.to_string())?;
    let new = OrderPlaced {
        order_id: old.order_id,
        customer_id: old.customer_id,
        store_id: old.store_id,
        lines: old.lines,
        currency: old.currency,
        total_cents: total.get(),
    };
    Ok(Bytes::from(new.encode_to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::DomainEvent;
    use crate::proto::orders::v1::OrderLine;

    fn v1_bytes(total: &str) -> Bytes {
        Bytes::from(
            OrderPlacedV1 {
                order_id: "o-1".into(),
                customer_id: "c-1".into(),
                store_id: "s-1".into(),
                lines: vec![OrderLine {
                    item_id: "latte".into(),
                    quantity: 2,
                    unit_price_cents: 475,
                }],
                total_amount: total.into(),
                currency: "USD".into(),
            }
            .encode_to_vec(),
        )
    }

    #[test]
    fn order_placed_v1_decodes_into_the_current_layout() {
        let ev = DomainEvent::decode_payload("cloudcafe.orders.v1.OrderPlaced", 1, v1_bytes("9.50")).unwrap();
        let DomainEvent::OrderPlaced(placed) = ev else {
            panic!("wrong variant: {ev:?}")
        };
        assert_eq!(placed.total_cents, 950);
        assert_eq!(placed.currency, "USD");
        assert_eq!(placed.lines.len(), 1);
        assert_eq!(placed.order_id, "o-1");
    }

    #[test]
    fn v1_bytes_read_as_v2_lose_the_total() {
        // Why the upcaster exists: without it, the old total is silently dropped.
        let ev = DomainEvent::decode_payload("cloudcafe.orders.v1.OrderPlaced", 2, v1_bytes("9.50")).unwrap();
        let DomainEvent::OrderPlaced(placed) = ev else {
            panic!("wrong variant")
        };
        assert_eq!(placed.total_cents, 0);
    }

    #[test]
    fn an_unreadable_old_total_is_a_typed_error() {
        let err = DomainEvent::decode_payload("cloudcafe.orders.v1.OrderPlaced", 1, v1_bytes("nine")).unwrap_err();
        assert!(matches!(err, DecodeError::Upcast { from: 1, .. }), "{err}");
    }

    #[test]
    fn schema_version_zero_is_missing() {
        let err = to_current("x", 0, 1, Bytes::new()).unwrap_err();
        assert!(matches!(err, DecodeError::MissingField("schema_version")));
    }
}
