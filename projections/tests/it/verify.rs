//! Verification against the real stores, for every read model: two copies built from
//! the same history match; a copy that is only behind (its aggregates moved after its
//! watermark) is told apart from one that lost rows; and a corrupted live row is
//! reported as `differs` under its key.

use std::collections::BTreeSet;

use cafe_events::EventEnvelope;
use cafe_projections::ProjectionError;
use cafe_projections::catalog::{AnyProjection, Namespace, ReadModel};
use cafe_projections::history::{self, HistoryConfig};
use cafe_projections::verify::{Buckets, KeyDiff, Settled, Verdict, Watermark, compare};

use crate::catalog::endpoints;
use crate::conformance::apply_sharded;
use crate::helpers::{stack, unique};

fn small_history() -> Vec<EventEnvelope> {
    // Few stores, so every store is first seen early in the history (the warehouse's
    // store dimension has no aggregate version to judge a late store by).
    history::generate(HistoryConfig {
        orders: 60,
        stores: 3,
        ..HistoryConfig::default()
    })
}

/// The aggregates with events in `later`.
struct MovedIn(BTreeSet<String>);

impl Watermark for MovedIn {
    async fn moved_after(&self, aggregates: &[String]) -> Result<BTreeSet<String>, ProjectionError> {
        Ok(aggregates.iter().filter(|a| self.0.contains(*a)).cloned().collect())
    }
}

async fn pair(
    model: ReadModel,
    live_history: &[EventEnvelope],
    shadow_history: &[EventEnvelope],
) -> (AnyProjection, AnyProjection, [Namespace; 2]) {
    let at = endpoints().await;
    let (l, s) = (
        Namespace::shadow(&unique("ver_l")).unwrap(),
        Namespace::shadow(&unique("ver_s")).unwrap(),
    );
    let live = model.connect(&at, &l).await.unwrap();
    let shadow = model.connect(&at, &s).await.unwrap();
    apply_sharded(&live, live_history, 3).await;
    apply_sharded(&shadow, shadow_history, 11).await;
    (live, shadow, [l, s])
}

async fn drop_both(model: ReadModel, spaces: [Namespace; 2]) {
    let at = endpoints().await;
    for ns in spaces {
        model.drop(&at, &ns).await.unwrap();
    }
}

#[tokio::test]
async fn copies_built_from_one_history_match_in_every_bucket() {
    let history = small_history();
    for model in ReadModel::ALL {
        let (live, shadow, spaces) = pair(model, &history, &history).await;
        let r = compare(&live, &shadow, Buckets::new(32).unwrap(), &Settled, 20)
            .await
            .unwrap();
        assert_eq!(
            (model, r.verdict(), r.count(Verdict::Match)),
            (model, Verdict::Match, 32),
            "{:?}",
            r.keys
        );
        let rows: u64 = r.buckets.iter().map(|b| b.live.rows).sum();
        assert!(rows > 0, "{model}: no rows compared");
        drop_both(model, spaces).await;
    }
}

#[tokio::test]
async fn a_live_copy_ahead_of_the_watermark_is_not_an_error_but_lost_rows_are() {
    let history = small_history();
    let cut = history.len() * 3 / 4;
    let moved = MovedIn(history[cut..].iter().map(|e| e.aggregate_id.to_string()).collect());
    for model in ReadModel::ALL {
        let (live, shadow, spaces) = pair(model, &history, &history[..cut]).await;
        let buckets = Buckets::new(32).unwrap();
        let r = compare(&live, &shadow, buckets, &moved, 1000).await.unwrap();
        assert_eq!(
            r.count(Verdict::Differs),
            0,
            "{model}: {:?}",
            r.keys.iter().filter(|k| k.is_error()).collect::<Vec<_>>()
        );
        assert!(r.count(Verdict::LiveAhead) > 0, "{model}: nothing ahead");
        // The same copies judged as if nothing had moved: the shadow lost those rows.
        let r = compare(&live, &shadow, buckets, &Settled, 1000).await.unwrap();
        assert_eq!(r.verdict(), Verdict::Differs, "{model}");
        assert!(
            r.keys.iter().all(|k| matches!(k, KeyDiff::MissingInShadow { .. })),
            "{model}: {:?}",
            r.keys
        );
        drop_both(model, spaces).await;
    }
}

/// Damages one row of `live` behind its projector's back; answers the key verification
/// must name.
async fn corrupt(live: &AnyProjection, ns: &Namespace, history: &[EventEnvelope]) -> String {
    let cfg = stack();
    let order = history
        .iter()
        .find_map(|e| match &e.event {
            cafe_events::DomainEvent::OrderPlaced(p) => Some(p.clone()),
            _ => None,
        })
        .unwrap();
    let Namespace::Shadow(name) = ns else { unreachable!() };
    match live {
        AnyProjection::Orders(pg) => {
            let n = pg
                .pool()
                .get()
                .await
                .unwrap()
                .execute(
                    "UPDATE orders SET total_cents = total_cents + 1 WHERE order_id = $1",
                    &[&order.order_id],
                )
                .await
                .unwrap();
            assert_eq!(n, 1);
            format!("orders:{}", order.order_id)
        }
        AnyProjection::ActiveOrders(_) => {
            let sdk = cafe_localstack::aws::sdk_config(&cfg).await;
            cafe_localstack::aws::dynamodb(&sdk, &cfg)
                .delete_item()
                .table_name(format!("{}-{name}", cfg.names.active_orders_table))
                .key(
                    "order_id",
                    aws_sdk_dynamodb::types::AttributeValue::S(order.order_id.clone()),
                )
                .send()
                .await
                .unwrap();
            order.order_id
        }
        AnyProjection::Documents(_) => {
            let client = mongodb::Client::with_uri_str(cfg.mongo_url()).await.unwrap();
            let db = client.database(&format!("{}_{name}", cfg.names.documents_database));
            let done = db
                .collection::<mongodb::bson::Document>("order_documents")
                .update_one(
                    mongodb::bson::doc! { "_id": &order.order_id },
                    mongodb::bson::doc! { "$set": { "total_cents": 1_i64 } },
                )
                .await
                .unwrap();
            assert_eq!(done.modified_count, 1);
            format!("order_documents:{}", order.order_id)
        }
        AnyProjection::Cache(_) => {
            let mut con = redis::Client::open(cfg.redis_url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let key = format!("{name}:cache:loyalty:{}", order.customer_id);
            let _: () = redis::cmd("HSET")
                .arg(&key)
                .arg("balance")
                .arg(999_999)
                .query_async(&mut con)
                .await
                .unwrap();
            format!("loyalty:{}", order.customer_id)
        }
        AnyProjection::Inventory(_) => {
            // MemoryDB is a cluster: the cluster client finds the store's shard.
            let mut con = redis::cluster::ClusterClient::new(vec![cfg.memorydb_url()])
                .unwrap()
                .get_async_connection()
                .await
                .unwrap();
            let item = &order.lines[0].item_id;
            let key = format!("{name}:inventory:{}", order.store_id);
            let exists: bool = redis::cmd("HEXISTS")
                .arg(&key)
                .arg(item)
                .query_async(&mut con)
                .await
                .unwrap();
            assert!(exists, "{key} {item}");
            let _: () = redis::cmd("HSET")
                .arg(&key)
                .arg(item)
                .arg(-5)
                .query_async(&mut con)
                .await
                .unwrap();
            format!("{}#{item}", order.store_id)
        }
        AnyProjection::Analytics(facts) => {
            use cafe_projections::analytics::Warehouse;
            facts
                .warehouse()
                .execute_batch(vec![format!(
                    "UPDATE {name}.fact_order_lines SET quantity = quantity + 1 WHERE order_id = '{}' AND line_no = 1",
                    order.order_id
                )])
                .await
                .unwrap();
            let rows = facts
                .warehouse()
                .query(format!(
                    "SELECT event_id FROM {name}.fact_order_lines WHERE order_id = '{}' AND line_no = 1",
                    order.order_id
                ))
                .await
                .unwrap();
            let event_id = rows.rows[0][0].clone().unwrap();
            format!("fact_order_lines:{event_id}#1")
        }
    }
}

#[tokio::test]
async fn a_corrupted_live_row_is_reported_as_differs_under_its_key() {
    let history = small_history();
    for model in ReadModel::ALL {
        let (live, shadow, spaces) = pair(model, &history, &history).await;
        let key = corrupt(&live, &spaces[0], &history).await;
        let r = compare(&live, &shadow, Buckets::DEFAULT, &Settled, 10).await.unwrap();
        assert_eq!(r.verdict(), Verdict::Differs, "{model}");
        assert_eq!(r.count(Verdict::Differs), 1, "{model}");
        let keys: Vec<&str> = r.keys.iter().map(KeyDiff::key).collect();
        assert_eq!(keys, vec![key.as_str()], "{model}: {:?}", r.keys);
        drop_both(model, spaces).await;
    }
}
