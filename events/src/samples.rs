//! Sample events for load generators, benchmarks and tests: one builder instead of a
//! copy in every test crate.

use crate::proto::inventory::v1::StockRestocked;
use crate::proto::menu::v1::MenuItemPublished;
use crate::proto::orders::v1::{OrderLine, OrderPlaced};
use crate::{AggregateId, DomainEvent, EventEnvelope, EventId, IdError, ItemId, OrderId, Sku, StoreId};

/// Version 1 of `aggregate_id`, now, with fixed correlation ids.
fn first(aggregate_id: AggregateId, event: DomainEvent) -> EventEnvelope {
    EventEnvelope {
        event_id: EventId::new(),
        aggregate_id,
        version: 1,
        occurred_at: chrono::Utc::now(),
        correlation_id: "sample".into(),
        causation_id: "sample".into(),
        command_id: "sample".into(),
        event,
    }
}

/// A latte, `item`, published at 450 cents in category coffee.
pub fn menu_item_published(item: &str) -> Result<EventEnvelope, IdError> {
    let id = ItemId::parse(item)?;
    Ok(first(
        AggregateId::MenuItem(id),
        DomainEvent::MenuItemPublished(MenuItemPublished {
            item_id: item.to_owned(),
            name: "latte".into(),
            category: "coffee".into(),
            price_cents: 450,
            ..Default::default()
        }),
    ))
}

/// Order `order` of one `item` at 450 cents by `customer` at `store-1`.
pub fn order_placed(order: &str, customer: &str, item: &str) -> Result<EventEnvelope, IdError> {
    let id = OrderId::parse(order)?;
    Ok(first(
        AggregateId::Order(id),
        DomainEvent::OrderPlaced(OrderPlaced {
            order_id: order.to_owned(),
            customer_id: customer.to_owned(),
            store_id: "store-1".into(),
            lines: vec![OrderLine {
                item_id: item.to_owned(),
                quantity: 1,
                unit_price_cents: 450,
            }],
            currency: "USD".into(),
            total_cents: 450,
        }),
    ))
}

/// A `StockRestocked` of 24 units for store `store-NNNNN`, SKU `sku-NNNNN` (version 1),
/// the unit of the seed's restock storm. Fails only for numbers beyond five digits.
pub fn restocked(store: u32, sku: u32) -> Result<EventEnvelope, IdError> {
    let store_id = StoreId::parse(format!("store-{store:05}"))?;
    let sku_id = Sku::parse(format!("sku-{sku:05}"))?;
    Ok(EventEnvelope {
        event_id: EventId::new(),
        event: DomainEvent::StockRestocked(StockRestocked {
            store_id: store_id.to_string(),
            sku: sku_id.to_string(),
            quantity: 24,
            on_hand_after: 24,
        }),
        aggregate_id: AggregateId::StockItem(store_id, sku_id),
        version: 1,
        occurred_at: chrono::Utc::now(),
        correlation_id: "restock-storm".into(),
        causation_id: String::new(),
        command_id: String::new(),
    })
}
