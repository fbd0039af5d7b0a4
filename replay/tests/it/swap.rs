//! A swap under traffic, made deterministic: events that arrive after the watermark
//! before the swap, and events the old copy takes while the swap is between its first
//! catch-up and the pointer move, must all be in the new serving copy.

use std::sync::Arc;

use cafe_events::EventEnvelope;
use cafe_localstack::{StackConfig, aws, provision};
use cafe_producers::store::DynamoEventStore;
use cafe_projections::catalog::{Endpoints, Namespace, ReadModel};
use cafe_projections::history::{self, HistoryConfig};
use cafe_projections::serving::{LiveSide, Pointers};
use cafe_projections::verify::{Buckets, Settled, Verdict, compare};
use cafe_projections::{Batch, Positioned, Projection};
use cafe_replay::{Filter, Params, Replayer, Replays};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::helpers::{append, endpoints, unique};

const MODELS: [ReadModel; 2] = [ReadModel::Orders, ReadModel::Inventory];

/// Appends `events` to the store, puts them on the stream, and applies them to the
/// live copy `live`: what the command side and a live projector do.
async fn happen(
    store: &DynamoEventStore,
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    at: &Endpoints,
    live: &Namespace,
    events: &[EventEnvelope],
) {
    append(store, events).await;
    let records: Vec<(String, bytes::Bytes)> = events.iter().map(|e| (e.partition_key(), e.encode())).collect();
    cafe_localstack::testing::put_raw(kinesis, stream, &records).await;
    let positioned: Vec<Positioned> = events
        .iter()
        .enumerate()
        .map(|(i, e)| Positioned {
            event: e.clone(),
            sequence: format!("{:020}", i + 1),
            sub: 0,
        })
        .collect();
    for model in MODELS {
        model
            .connect(at, live)
            .await
            .unwrap()
            .apply(Batch {
                // A shard name of its own per call: the orders model skips what its
                // per-shard checkpoint has passed, and each call numbers from 1.
                shard_id: &format!("live-{}", events[0].event_id),
                events: &positioned,
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_swap_brings_over_what_the_old_copy_took_before_and_during_it() {
    let cfg = StackConfig::load().unwrap();
    let sdk = aws::sdk_config(&cfg).await;
    let (dynamodb, kinesis) = (aws::dynamodb(&sdk, &cfg), aws::kinesis(&sdk, &cfg));
    let names = &cfg.names;
    let table = |template: &str, prefix: &str| {
        let (dynamodb, names) = (dynamodb.clone(), names.clone());
        let (template, name) = (template.to_owned(), unique(prefix));
        async move {
            provision::ensure_table_like(&dynamodb, &names, &template, &name)
                .await
                .unwrap()
                .name
        }
    };
    let events_table = table(&names.events_table, "it-swap-events").await;
    let idempotency = table(&names.idempotency_table, "it-swap-idem").await;
    let replays_table = table(&names.replays_table, "it-swap-replays").await;
    let stream = unique("it-swap").replace('_', "-");
    provision::ensure_stream(&kinesis, &stream, 2).await.unwrap();
    let store = DynamoEventStore::new(dynamodb.clone(), events_table.clone(), idempotency.clone());
    let at = endpoints(&cfg, &dynamodb);
    // This test's own pointers, initially at a copy of its own playing the live one.
    let pointers = Pointers::new(dynamodb.clone(), &replays_table);
    let live = Namespace::shadow(&format!("swl{}", &uuid::Uuid::now_v7().simple().to_string()[18..])).unwrap();
    for model in MODELS {
        pointers.set(model, &live).await.unwrap();
    }

    // A history in three parts: before the replay, after its watermark, and during the
    // swap's window. Later parts occur now, after the watermark.
    let history = history::generate(HistoryConfig {
        orders: 60,
        stores: 3,
        ..HistoryConfig::default()
    });
    let (a, b) = (history.len() * 6 / 10, history.len() * 8 / 10);
    let now = |events: &[EventEnvelope]| {
        events
            .iter()
            .map(|e| EventEnvelope {
                occurred_at: Utc::now(),
                ..e.clone()
            })
            .collect::<Vec<_>>()
    };
    happen(&store, &kinesis, &stream, &at, &live, &history[..a]).await;

    let window = Arc::new(now(&history[b..]));
    let hook = {
        let (store, kinesis, stream, at, live, window) = (
            DynamoEventStore::new(dynamodb.clone(), events_table.clone(), idempotency.clone()),
            kinesis.clone(),
            stream.clone(),
            at.clone(),
            live.clone(),
            window.clone(),
        );
        let store = Arc::new(store);
        Arc::new(move || {
            let (store, kinesis, stream, at, live, window) = (
                store.clone(),
                kinesis.clone(),
                stream.clone(),
                at.clone(),
                live.clone(),
                window.clone(),
            );
            Box::pin(async move { happen(&store, &kinesis, &stream, &at, &live, &window).await })
                as futures::future::BoxFuture<'static, ()>
        })
    };
    let replayer = Replayer::new(
        store,
        Replays::new(dynamodb.clone(), &replays_table),
        at.clone(),
        LiveSide::Serving(pointers.clone()),
    )
    .with_stream(kinesis.clone(), &stream)
    .with_before_flip(hook);

    let params = Params {
        source: cafe_replay::record::Source::EventStore,
        models: MODELS.iter().map(|m| m.name().to_owned()).collect(),
        filter: Filter::default(),
        segments: 2,
        page_size: 100,
        max_rate: None,
        slo: None,
    };
    let meta = replayer.create(params, None).await.unwrap();
    assert!(
        replayer
            .run(
                &meta.id,
                CancellationToken::new(),
                false,
                std::time::Duration::from_secs(60)
            )
            .await
            .unwrap()
            .finished
    );
    let after_watermark = now(&history[a..b]);
    let history_store = DynamoEventStore::new(dynamodb.clone(), events_table.clone(), idempotency.clone());
    happen(&history_store, &kinesis, &stream, &at, &live, &after_watermark).await;

    for (model, report) in replayer.verify(&meta.id, Buckets::new(32).unwrap(), 5).await.unwrap() {
        assert_eq!(report.count(Verdict::Differs), 0, "{model}: {:?}", report.keys);
        assert!(
            report.count(Verdict::LiveAhead) > 0,
            "{model}: nothing after the watermark"
        );
    }
    let out = replayer.swap(&meta.id, false).await.unwrap();
    assert!(out.caught_up as usize >= history.len() - a, "{out:?}");

    // The new serving copy holds all three parts: equal to the old copy, which took
    // every event.
    for model in MODELS {
        assert_eq!(pointers.get(model).await.unwrap(), meta.id.namespace());
        let old = model.connect(&at, &live).await.unwrap();
        let new = model.connect(&at, &meta.id.namespace()).await.unwrap();
        let r = compare(&old, &new, Buckets::new(32).unwrap(), &Settled, 5)
            .await
            .unwrap();
        assert_eq!(r.verdict(), Verdict::Match, "{model}: {:?}", r.keys);
    }
    let dropped = replayer.drop(&meta.id).await.unwrap();
    assert!(dropped.iter().all(|(_, ns)| *ns == live), "{dropped:?}");
    for model in MODELS {
        model.drop(&at, &meta.id.namespace()).await.unwrap();
    }
}
