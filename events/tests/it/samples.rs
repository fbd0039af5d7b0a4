//! One fixed, fully populated sample of every event type.

use cafe_events::proto::inventory::v1 as inventory;
use cafe_events::proto::loyalty::v1 as loyalty;
use cafe_events::proto::menu::v1 as menu;
use cafe_events::proto::orders::v1 as orders;
use cafe_events::{AggregateId, CustomerId, DomainEvent, EventEnvelope, EventId, ItemId, OrderId, Sku, StoreId};

fn order() -> AggregateId {
    AggregateId::Order(OrderId::parse("order-0001").unwrap())
}
fn stock() -> AggregateId {
    AggregateId::StockItem(
        StoreId::parse("store-00042").unwrap(),
        Sku::parse("sku-latte-beans-1kg").unwrap(),
    )
}
fn account() -> AggregateId {
    AggregateId::LoyaltyAccount(CustomerId::parse("cust-77").unwrap())
}
fn item() -> AggregateId {
    AggregateId::MenuItem(ItemId::parse("latte-grande").unwrap())
}

/// `(file stem, envelope)` for every known event type, in catalog order.
pub fn all() -> Vec<(&'static str, EventEnvelope)> {
    use orders::OrderStatus as S;
    let line = orders::OrderLine {
        item_id: "latte-grande".into(),
        quantity: 2,
        unit_price_cents: 525,
    };
    let events: Vec<(&str, AggregateId, DomainEvent)> = vec![
        (
            "OrderPlaced",
            order(),
            DomainEvent::OrderPlaced(orders::OrderPlaced {
                order_id: "order-0001".into(),
                customer_id: "cust-77".into(),
                store_id: "store-00042".into(),
                lines: vec![
                    line.clone(),
                    orders::OrderLine {
                        item_id: "croissant".into(),
                        quantity: 1,
                        unit_price_cents: 375,
                    },
                ],
                currency: "USD".into(),
                total_cents: 1425,
            }),
        ),
        (
            "OrderStatusChanged",
            order(),
            DomainEvent::OrderStatusChanged(orders::OrderStatusChanged {
                order_id: "order-0001".into(),
                from: S::Paid as i32,
                to: S::Preparing as i32,
            }),
        ),
        (
            "OrderCancelled",
            order(),
            DomainEvent::OrderCancelled(orders::OrderCancelled {
                order_id: "order-0001".into(),
                reason: "customer left".into(),
            }),
        ),
        (
            "PaymentAuthorized",
            order(),
            DomainEvent::PaymentAuthorized(orders::PaymentAuthorized {
                order_id: "order-0001".into(),
                payment_id: "pay-9".into(),
                amount_cents: 1425,
            }),
        ),
        (
            "PaymentDeclined",
            order(),
            DomainEvent::PaymentDeclined(orders::PaymentDeclined {
                order_id: "order-0001".into(),
                reason: "card blocked".into(),
            }),
        ),
        (
            "StockRestocked",
            stock(),
            DomainEvent::StockRestocked(inventory::StockRestocked {
                store_id: "store-00042".into(),
                sku: "sku-latte-beans-1kg".into(),
                quantity: 40,
                on_hand_after: 52,
            }),
        ),
        (
            "StockAdjusted",
            stock(),
            DomainEvent::StockAdjusted(inventory::StockAdjusted {
                store_id: "store-00042".into(),
                sku: "sku-latte-beans-1kg".into(),
                delta: -3,
                reason: "spoilage".into(),
                on_hand_after: 49,
            }),
        ),
        (
            "StockReserved",
            stock(),
            DomainEvent::StockReserved(inventory::StockReserved {
                store_id: "store-00042".into(),
                sku: "sku-latte-beans-1kg".into(),
                quantity: 1,
                order_id: "order-0001".into(),
                on_hand_after: 48,
            }),
        ),
        (
            "StockDepleted",
            stock(),
            DomainEvent::StockDepleted(inventory::StockDepleted {
                store_id: "store-00042".into(),
                sku: "sku-latte-beans-1kg".into(),
            }),
        ),
        (
            "PointsEarned",
            account(),
            DomainEvent::PointsEarned(loyalty::PointsEarned {
                customer_id: "cust-77".into(),
                points: 28,
                order_id: "order-0001".into(),
                balance_after: 528,
            }),
        ),
        (
            "PointsRedeemed",
            account(),
            DomainEvent::PointsRedeemed(loyalty::PointsRedeemed {
                customer_id: "cust-77".into(),
                points: 150,
                balance_after: 378,
            }),
        ),
        (
            "TierChanged",
            account(),
            DomainEvent::TierChanged(loyalty::TierChanged {
                customer_id: "cust-77".into(),
                from: loyalty::Tier::Green as i32,
                to: loyalty::Tier::Gold as i32,
            }),
        ),
        (
            "MenuItemPublished",
            item(),
            DomainEvent::MenuItemPublished(menu::MenuItemPublished {
                item_id: "latte-grande".into(),
                name: "Latte (grande)".into(),
                category: "espresso".into(),
                price_cents: 525,
                tags: vec!["hot".into(), "milk".into()],
            }),
        ),
        (
            "MenuItemRetired",
            item(),
            DomainEvent::MenuItemRetired(menu::MenuItemRetired {
                item_id: "latte-grande".into(),
                reason: "seasonal".into(),
            }),
        ),
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(i, (name, aggregate_id, event))| {
            let envelope = EventEnvelope {
                event_id: EventId::from_uuid(uuid::Uuid::from_u128(
                    0x0190_0000_0000_7000_8000_0000_0000_0000 + i as u128,
                )),
                aggregate_id,
                version: 3,
                occurred_at: chrono::DateTime::from_timestamp(1_767_250_800, 123_456_000).unwrap(),
                correlation_id: "corr-1".into(),
                causation_id: "cause-1".into(),
                command_id: "cmd-1".into(),
                event,
            };
            (name, envelope)
        })
        .collect()
}
