//! Property tests of the codec: round trips, and no panic on any input.

use bytes::Bytes;
use cafe_events::proto::inventory::v1 as inventory;
use cafe_events::proto::loyalty::v1 as loyalty;
use cafe_events::proto::menu::v1 as menu;
use cafe_events::proto::orders::v1 as orders;
use cafe_events::{
    AggregateId, AggregateType, CustomerId, DecodeError, DomainEvent, EventEnvelope, EventId, ItemId, MAX_RECORD_BYTES,
    OrderId, Sku, StoreId, UnknownEvent,
};
use proptest::prelude::*;

fn id() -> impl Strategy<Value = String> {
    "[a-z0-9-]{1,20}"
}
fn text() -> impl Strategy<Value = String> {
    ".{0,40}"
}

fn line() -> impl Strategy<Value = orders::OrderLine> {
    (id(), 1u32..=20, 0i64..100_000).prop_map(|(item_id, quantity, unit_price_cents)| orders::OrderLine {
        item_id,
        quantity,
        unit_price_cents,
    })
}

/// Any known event, or an unknown one, with the aggregate type it belongs to.
fn event() -> impl Strategy<Value = DomainEvent> {
    prop_oneof![
        (
            id(),
            id(),
            id(),
            prop::collection::vec(line(), 0..5),
            "[A-Z]{3}",
            any::<i64>()
        )
            .prop_map(|(order_id, customer_id, store_id, lines, currency, total_cents)| {
                DomainEvent::OrderPlaced(orders::OrderPlaced {
                    order_id,
                    customer_id,
                    store_id,
                    lines,
                    currency,
                    total_cents,
                })
            }),
        (id(), 0i32..8, 0i32..8).prop_map(|(order_id, from, to)| DomainEvent::OrderStatusChanged(
            orders::OrderStatusChanged { order_id, from, to }
        )),
        (id(), text())
            .prop_map(|(order_id, reason)| DomainEvent::OrderCancelled(orders::OrderCancelled { order_id, reason })),
        (id(), id(), any::<i64>()).prop_map(|(order_id, payment_id, amount_cents)| DomainEvent::PaymentAuthorized(
            orders::PaymentAuthorized {
                order_id,
                payment_id,
                amount_cents
            }
        )),
        (id(), text())
            .prop_map(|(order_id, reason)| DomainEvent::PaymentDeclined(orders::PaymentDeclined { order_id, reason })),
        (id(), id(), any::<i64>(), any::<i64>()).prop_map(|(store_id, sku, quantity, on_hand_after)| {
            DomainEvent::StockRestocked(inventory::StockRestocked {
                store_id,
                sku,
                quantity,
                on_hand_after,
            })
        }),
        (id(), id(), any::<i64>(), text(), any::<i64>()).prop_map(|(store_id, sku, delta, reason, on_hand_after)| {
            DomainEvent::StockAdjusted(inventory::StockAdjusted {
                store_id,
                sku,
                delta,
                reason,
                on_hand_after,
            })
        }),
        (id(), id(), any::<i64>(), id(), any::<i64>()).prop_map(
            |(store_id, sku, quantity, order_id, on_hand_after)| {
                DomainEvent::StockReserved(inventory::StockReserved {
                    store_id,
                    sku,
                    quantity,
                    order_id,
                    on_hand_after,
                })
            }
        ),
        (id(), id()).prop_map(|(store_id, sku)| DomainEvent::StockDepleted(inventory::StockDepleted { store_id, sku })),
        (id(), any::<i64>(), id(), any::<i64>()).prop_map(|(customer_id, points, order_id, balance_after)| {
            DomainEvent::PointsEarned(loyalty::PointsEarned {
                customer_id,
                points,
                order_id,
                balance_after,
            })
        }),
        (id(), any::<i64>(), any::<i64>()).prop_map(|(customer_id, points, balance_after)| {
            DomainEvent::PointsRedeemed(loyalty::PointsRedeemed {
                customer_id,
                points,
                balance_after,
            })
        }),
        (id(), 0i32..4, 0i32..4).prop_map(
            |(customer_id, from, to)| DomainEvent::TierChanged(loyalty::TierChanged { customer_id, from, to })
        ),
        (id(), text(), id(), any::<i64>(), prop::collection::vec(id(), 0..4)).prop_map(
            |(item_id, name, category, price_cents, tags)| DomainEvent::MenuItemPublished(menu::MenuItemPublished {
                item_id,
                name,
                category,
                price_cents,
                tags
            })
        ),
        (id(), text())
            .prop_map(|(item_id, reason)| DomainEvent::MenuItemRetired(menu::MenuItemRetired { item_id, reason })),
        (
            "cloudcafe\\.future\\.v[0-9]\\.[A-Z][a-z]{1,10}",
            1u32..10,
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(
                |(event_type, schema_version, payload)| DomainEvent::Unknown(UnknownEvent {
                    event_type,
                    schema_version,
                    payload: Bytes::from(payload)
                })
            ),
    ]
}

fn aggregate_id(t: AggregateType, a: String, b: String) -> AggregateId {
    match t {
        AggregateType::Order => AggregateId::Order(OrderId::parse(a).unwrap()),
        AggregateType::StockItem => AggregateId::StockItem(StoreId::parse(a).unwrap(), Sku::parse(b).unwrap()),
        AggregateType::LoyaltyAccount => AggregateId::LoyaltyAccount(CustomerId::parse(a).unwrap()),
        AggregateType::MenuItem => AggregateId::MenuItem(ItemId::parse(a).unwrap()),
    }
}

fn envelope() -> impl Strategy<Value = EventEnvelope> {
    (
        event(),
        0usize..4,
        id(),
        id(),
        1u64..u64::MAX,
        any::<u128>(),
        -62_135_596_800i64..253_402_300_799,
        0u32..1_000_000_000,
        (text(), text(), text()),
    )
        .prop_map(
            |(event, t, a, b, version, uuid, secs, nanos, (correlation_id, causation_id, command_id))| {
                let t = event.aggregate_type().unwrap_or(AggregateType::ALL[t]);
                EventEnvelope {
                    event_id: EventId::from_uuid(uuid::Uuid::from_u128(uuid)),
                    aggregate_id: aggregate_id(t, a, b),
                    version,
                    occurred_at: chrono::DateTime::from_timestamp(secs, nanos).unwrap(),
                    correlation_id,
                    causation_id,
                    command_id,
                    event,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn envelopes_round_trip(e in envelope()) {
        let bytes = e.encode();
        prop_assert!(bytes.len() <= MAX_RECORD_BYTES);
        prop_assert_eq!(EventEnvelope::decode(&bytes).unwrap(), e);
    }

    /// The runtime times records by this field alone; it must read what the full
    /// decode reads.
    #[test]
    fn occurred_at_alone_is_the_envelopes(e in envelope()) {
        prop_assert_eq!(cafe_events::envelope::occurred_at_of(&e.encode()), Some(e.occurred_at));
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = EventEnvelope::decode(&bytes);
        let _ = cafe_events::envelope::occurred_at_of(&bytes);
    }

    #[test]
    fn truncation_is_an_error_or_a_different_event(e in envelope(), cut in any::<prop::sample::Index>()) {
        let bytes = e.encode();
        let cut = cut.index(bytes.len());
        if let Ok(decoded) = EventEnvelope::decode(&bytes[..cut]) {
            prop_assert_ne!(decoded, e);
        }
    }

    #[test]
    fn flipped_bytes_never_panic(e in envelope(), at in any::<prop::sample::Index>(), x in 1u8..=255) {
        let mut bytes = e.encode().to_vec();
        let i = at.index(bytes.len());
        bytes[i] ^= x;
        let _ = EventEnvelope::decode(&bytes);
    }
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let bytes = vec![0u8; MAX_RECORD_BYTES + 1];
    assert!(matches!(
        EventEnvelope::decode(&bytes),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn empty_input_lacks_required_fields() {
    assert!(EventEnvelope::decode(&[]).is_err());
}

#[test]
fn an_event_on_the_wrong_aggregate_is_refused() {
    let (_, mut e) = crate::samples::all().remove(0);
    e.aggregate_id = AggregateId::MenuItem(ItemId::parse("x").unwrap());
    let err = EventEnvelope::decode(&e.encode()).unwrap_err();
    assert!(matches!(err, DecodeError::AggregateMismatch { .. }), "{err}");
}

#[test]
fn unknown_types_pass_through_byte_for_byte() {
    let (_, mut e) = crate::samples::all().remove(0);
    e.event = DomainEvent::Unknown(UnknownEvent {
        event_type: "cloudcafe.gifts.v1.GiftCardIssued".into(),
        schema_version: 1,
        payload: Bytes::from_static(&[0x0a, 0x02, b'g', b'1', 0x10, 0x64]),
    });
    let bytes = e.encode();
    let decoded = EventEnvelope::decode(&bytes).unwrap();
    assert_eq!(decoded.encode(), bytes);
}
