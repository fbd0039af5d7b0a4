//! The MemoryDB inventory read model against the local Redis.

use std::collections::BTreeMap;

use cafe_events::{AggregateId, DomainEvent};
use cafe_projections::history::{self, HistoryConfig};
use cafe_projections::inventory::RedisInventory;

use crate::conformance::{apply_sharded, conformance};
use crate::helpers::{stack, unique};

pub async fn fresh() -> RedisInventory {
    RedisInventory::connect(&stack().redis_url(), &format!("{}:", unique("it")))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms() {
    let snapshot = conformance(fresh).await;
    let cfg = HistoryConfig::default();
    assert_eq!(snapshot.len(), cfg.stores * cfg.menu_items);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_hand_is_the_last_count_the_history_reports_per_store_and_sku() {
    let inventory = fresh().await;
    let history = history::generate(HistoryConfig::default());
    apply_sharded(&inventory, &history, 5).await;
    let mut want: BTreeMap<String, BTreeMap<String, (i64, u64)>> = BTreeMap::new();
    for e in &history {
        let AggregateId::StockItem(store, sku) = &e.aggregate_id else {
            continue;
        };
        let on_hand = match &e.event {
            DomainEvent::StockRestocked(x) => x.on_hand_after,
            DomainEvent::StockAdjusted(x) => x.on_hand_after,
            DomainEvent::StockReserved(x) => x.on_hand_after,
            DomainEvent::StockDepleted(_) => 0,
            _ => continue,
        };
        want.entry(store.to_string())
            .or_default()
            .insert(sku.to_string(), (on_hand, e.version));
    }
    assert_eq!(want.len(), HistoryConfig::default().stores);
    for (store, skus) in &want {
        let got: BTreeMap<String, (i64, u64)> = inventory
            .store(store)
            .await
            .unwrap()
            .into_iter()
            .map(|s| (s.sku, (s.on_hand, s.version)))
            .collect();
        assert_eq!(&got, skus, "{store}");
    }
    assert!(inventory.store("store-nope").await.unwrap().is_empty());
}
