//! Sample events for load generators, benchmarks and tests: one builder instead of a
//! copy in every test crate.

use crate::proto::inventory::v1::StockRestocked;
use crate::{AggregateId, DomainEvent, EventEnvelope, EventId, IdError, Sku, StoreId};

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
