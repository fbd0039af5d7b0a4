//! What the replay tests share: fresh names, the test stack's stores, and a history
//! appended to an event store as the command side would.

use std::collections::BTreeMap;

use cafe_events::EventEnvelope;
use cafe_localstack::StackConfig;
use cafe_producers::store::{DynamoEventStore, EventStore};
use cafe_projections::catalog::{AnalyticsEndpoint, Endpoints};

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// The test stack's stores, as the main job configures them.
pub fn endpoints(cfg: &StackConfig, dynamodb: &aws_sdk_dynamodb::Client) -> Endpoints {
    let names = &cfg.names;
    Endpoints {
        postgres_url: Some(cfg.postgres_url(&names.orders_database)),
        analytics: Some((
            AnalyticsEndpoint::Postgres(cfg.postgres_url(&names.analytics_database)),
            "analytics".to_owned(),
        )),
        mongo: Some((cfg.mongo_url(), names.documents_database.clone())),
        redis_url: Some(cfg.redis_url()),
        dynamodb: Some((dynamodb.clone(), names.active_orders_table.clone())),
    }
}

/// Appends `events` to `store`, each aggregate's in version order, a transaction of at
/// most 25 at a time.
pub async fn append(store: &DynamoEventStore, events: &[EventEnvelope]) {
    let mut by_aggregate: BTreeMap<String, Vec<EventEnvelope>> = BTreeMap::new();
    for e in events {
        by_aggregate
            .entry(e.aggregate_id.to_string())
            .or_default()
            .push(e.clone());
    }
    for events in by_aggregate.values() {
        for chunk in events.chunks(25) {
            store.append(chunk, None).await.unwrap();
        }
    }
}
