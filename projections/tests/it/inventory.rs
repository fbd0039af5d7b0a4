//! The MemoryDB inventory read model against the local Redis.

use std::collections::BTreeMap;

use cafe_events::{AggregateId, DomainEvent};
use cafe_projections::Projection;
use cafe_projections::history::{self, HistoryConfig};
use cafe_projections::inventory::RedisInventory;

use crate::conformance::{apply_sharded, conformance};
use crate::helpers::{stack, unique};

pub async fn fresh() -> RedisInventory {
    RedisInventory::connect(&stack().memorydb_url(), &format!("{}:", unique("it")))
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

/// Keys under `prefix` that one node of the MemoryDB stand-in holds itself (a plain
/// client: SCAN answers for that node only).
async fn keys_on_node(url: &str, prefix: &str) -> usize {
    let mut con = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut cursor = 0u64;
    let mut n = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .unwrap();
        n += keys.len();
        if next == 0 {
            return n;
        }
        cursor = next;
    }
}

/// MemoryDB is always a cluster, and its endpoint may hand the client any node. Reached
/// through either shard, the model writes each store to the shard serving its slot
/// (both hold some), finds every store again, reloads its script on the node that lost
/// it, and drops its copy from both shards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_either_shard_the_cluster_holds_every_store_on_its_own_shard() {
    let cfg = stack();
    let nodes = [
        cfg.redis_node_url(cfg.ports.memorydb),
        cfg.redis_node_url(cfg.ports.memorydb_2),
    ];
    let prefix = format!("{}:", unique("it"));
    let history = history::generate(HistoryConfig::default());
    let via_second = RedisInventory::connect(&nodes[1], &prefix).await.unwrap();
    apply_sharded(&via_second, &history, 11).await;

    let stores = HistoryConfig::default().stores;
    let held: Vec<usize> = futures::future::join_all(nodes.iter().map(|n| keys_on_node(n, &prefix))).await;
    assert_eq!(held.iter().sum::<usize>(), stores, "one hash per store: {held:?}");
    assert!(held.iter().all(|&n| n > 0), "both shards hold stores: {held:?}");

    let via_first = RedisInventory::connect(&nodes[0], &prefix).await.unwrap();
    let snapshot = via_first.snapshot().await.unwrap();
    assert_eq!(snapshot, via_second.snapshot().await.unwrap());
    assert_eq!(snapshot.len(), stores * HistoryConfig::default().menu_items);

    // A node that lost its scripts (restarted, failed over) answers NOSCRIPT: applied
    // again, the history loads them where needed and changes nothing.
    for node in &nodes {
        let mut con = redis::Client::open(node.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut con).await.unwrap();
    }
    apply_sharded(&via_first, &history, 12).await;
    assert_eq!(via_second.snapshot().await.unwrap(), snapshot);

    via_first.delete_all().await.unwrap();
    let left: Vec<usize> = futures::future::join_all(nodes.iter().map(|n| keys_on_node(n, &prefix))).await;
    assert_eq!(left, [0, 0]);
}
