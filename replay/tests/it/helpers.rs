//! What the replay tests share: fresh names, the test stack's stores, a history
//! appended to an event store as the command side would, and a world of an event store
//! with live copies of every model built from it.

use std::collections::BTreeMap;

use cafe_events::EventEnvelope;
use cafe_localstack::{StackConfig, aws, provision};
use cafe_producers::store::{DynamoEventStore, EventStore};
use cafe_projections::catalog::{AnalyticsEndpoint, Endpoints, Namespace, ReadModel};
use cafe_projections::history::{self, HistoryConfig};
use cafe_projections::serving::LiveSide;
use cafe_projections::{Batch, Projection};
use cafe_replay::{Filter, Params, Replayer, Replays};

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
        memorydb_url: Some(cfg.memorydb_url()),
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

pub struct World {
    pub replayer: Replayer<DynamoEventStore>,
    pub replays: Replays,
    pub history: Vec<EventEnvelope>,
    pub live: Namespace,
    pub at: Endpoints,
}

/// A history in an event store of its own, and a "live" copy of every model built from
/// it in order, as the live projectors would.
pub async fn world(orders: usize) -> World {
    let cfg = StackConfig::load().unwrap();
    let sdk = aws::sdk_config(&cfg).await;
    let dynamodb = aws::dynamodb(&sdk, &cfg);
    let names = &cfg.names;
    let events = provision::ensure_table_like(&dynamodb, names, &names.events_table, &unique("it-replay-events"))
        .await
        .unwrap()
        .name;
    let idempotency =
        provision::ensure_table_like(&dynamodb, names, &names.idempotency_table, &unique("it-replay-idem"))
            .await
            .unwrap()
            .name;
    let replays_table = provision::ensure_table_like(&dynamodb, names, &names.replays_table, &unique("it-replays"))
        .await
        .unwrap()
        .name;
    let store = DynamoEventStore::new(dynamodb.clone(), events, idempotency);
    let history = history::generate(HistoryConfig {
        orders,
        stores: 3,
        ..HistoryConfig::default()
    });
    append(&store, &history).await;
    let at = endpoints(&cfg, &dynamodb);
    let live = Namespace::shadow(&unique("live")).unwrap();
    for model in ReadModel::ALL {
        let p = model.connect(&at, &live).await.unwrap();
        for (shard, events) in history::sharded(&history, 4) {
            for chunk in events.chunks(100) {
                p.apply(Batch {
                    shard_id: &shard,
                    events: chunk,
                })
                .await
                .unwrap();
            }
        }
    }
    let replays = Replays::new(dynamodb, replays_table);
    World {
        replayer: Replayer::new(store, replays.clone(), at.clone(), LiveSide::Fixed(live.clone())),
        replays,
        history,
        live,
        at,
    }
}

impl World {
    pub async fn drop_all(&self, shadow: &Namespace) {
        for model in ReadModel::ALL {
            model.drop(&self.at, &self.live).await.unwrap();
            model.drop(&self.at, shadow).await.unwrap();
        }
    }
}

pub fn params(models: &[ReadModel], max_rate: Option<u32>) -> Params {
    Params {
        source: cafe_replay::record::Source::EventStore,
        models: models.iter().map(|m| m.name().to_owned()).collect(),
        filter: Filter::default(),
        segments: 4,
        // Small pages: most end inside an aggregate's run of events.
        page_size: 37,
        max_rate,
        slo: None,
    }
}
