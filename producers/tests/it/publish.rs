use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use cafe_events::EventEnvelope;
use cafe_producers::publish::{FaultySink, Publisher, PublisherConfig};

use crate::helpers::{account, earned, fresh_stream, read_stream};

fn fast_retries(aggregate: bool) -> PublisherConfig {
    PublisherConfig {
        aggregate,
        base_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(100),
        ..PublisherConfig::default()
    }
}

/// Per aggregate, versions must appear in increasing order within its shard.
fn assert_in_order(per_shard: &[Vec<EventEnvelope>]) {
    for events in per_shard {
        let mut last: HashMap<String, u64> = HashMap::new();
        for e in events {
            let prev = last.insert(e.aggregate_id.to_string(), e.version).unwrap_or(0);
            assert!(e.version > prev, "{} v{} after v{prev}", e.aggregate_id, e.version);
        }
    }
}

async fn throttled_publish_delivers_everything(aggregate: bool) {
    let (client, stream, sink) = fresh_stream(4).await;
    let publisher = Publisher::new(FaultySink::new(sink, 200, 42), fast_retries(aggregate));
    let mut sent = BTreeSet::new();
    let mut retries = 0;
    // 200 accounts × 10 versions, published in batches of 100 events (10 commands' worth).
    for version in 1..=10u64 {
        for chunk in (0..200).collect::<Vec<_>>().chunks(100) {
            let batch: Vec<EventEnvelope> = chunk
                .iter()
                .map(|i| earned(&account(&format!("c-{i}")), version))
                .collect();
            let report = publisher.publish(&batch).await.unwrap();
            retries += report.retries;
            sent.extend(batch.iter().map(|e| (e.aggregate_id.to_string(), e.version)));
        }
    }
    assert!(retries > 0, "the fault injection must have throttled something");
    let totals = publisher.totals();
    let throttled = totals.throttled.load(std::sync::atomic::Ordering::Relaxed);
    // Each refusal is a throttle (the injection's only code), and a retried entry was
    // refused at least once.
    assert!(
        throttled >= retries as u64,
        "{throttled} throttles, {retries} retried entries"
    );
    assert_eq!(totals.not_published.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(
        publisher.in_flight_bytes(),
        0,
        "nothing reserved once every publish returned"
    );
    let (_, per_shard) = read_stream(&client, &stream).await;
    let got: Vec<(String, u64)> = per_shard
        .iter()
        .flatten()
        .map(|e| (e.aggregate_id.to_string(), e.version))
        .collect();
    let unique: BTreeSet<_> = got.iter().cloned().collect();
    assert_eq!(unique, sent, "every appended event reaches the stream");
    assert_eq!(
        got.len(),
        sent.len(),
        "and exactly once: throttled entries were never written"
    );
    assert_in_order(&per_shard);
    client.delete_stream().stream_name(&stream).send().await.unwrap();
}

#[tokio::test]
async fn with_20_percent_throttling_every_event_arrives_once_and_in_order_raw() {
    throttled_publish_delivers_everything(false).await;
}

#[tokio::test]
async fn with_20_percent_throttling_every_event_arrives_once_and_in_order_aggregated() {
    throttled_publish_delivers_everything(true).await;
}

fn restocked(store: u32, sku: u32) -> EventEnvelope {
    cafe_events::samples::restocked(store, sku).unwrap()
}

/// The seed's "Inventory Restock Storm": 100 stores × 5,000 SKUs at once.
#[tokio::test]
async fn restock_storm_is_sent_in_a_twentieth_of_the_records_and_deaggregates_intact() {
    const STORES: u32 = 100;
    const SKUS: u32 = 5_000;
    let (client, stream, sink) = fresh_stream(4).await;
    let publisher = Publisher::new(sink, PublisherConfig::default());
    let mut kinesis_records = 0;
    for store in 0..STORES {
        let batch: Vec<EventEnvelope> = (0..SKUS).map(|sku| restocked(store, sku)).collect();
        kinesis_records += publisher.publish(&batch).await.unwrap().kinesis_records;
    }
    let user_records = (STORES * SKUS) as usize;
    assert!(
        kinesis_records * 20 <= user_records,
        "{kinesis_records} Kinesis records for {user_records} user records"
    );

    let (read_records, per_shard) = read_stream(&client, &stream).await;
    assert_eq!(read_records, kinesis_records);
    let keys: BTreeSet<String> = per_shard.iter().flatten().map(|e| e.aggregate_id.to_string()).collect();
    assert_eq!(per_shard.iter().map(Vec::len).sum::<usize>(), user_records);
    assert_eq!(keys.len(), user_records, "every store#sku exactly once");
    println!("restock storm: {user_records} user records in {kinesis_records} Kinesis records");
    client.delete_stream().stream_name(&stream).send().await.unwrap();
}

/// Publishes while the stream is split from 2 to 4 shards: the first publish after the
/// reshard predicts with the old map, sees records land elsewhere, and the next one
/// reads the map again and predicts right. Nothing is lost either way.
#[tokio::test]
async fn after_a_live_reshard_the_shard_map_is_read_again_and_nothing_is_lost() {
    use aws_sdk_kinesis::types::ScalingType;
    use std::sync::atomic::Ordering::Relaxed;

    let (client, stream, sink) = fresh_stream(2).await;
    let publisher = Publisher::new(sink, PublisherConfig::default());
    let batch = |round: u32| -> Vec<EventEnvelope> { (0..300).map(|sku| restocked(round, sku)).collect() };
    let totals = publisher.totals();

    publisher.publish(&batch(0)).await.unwrap();
    assert_eq!(totals.shard_map_reads.load(Relaxed), 1);
    assert_eq!(totals.mispredicted.load(Relaxed), 0, "a fresh map predicts every shard");

    client
        .update_shard_count()
        .stream_name(&stream)
        .target_shard_count(4)
        .scaling_type(ScalingType::UniformScaling)
        .send()
        .await
        .unwrap();
    cafe_localstack::provision::wait_for_stream_active(&client, &stream)
        .await
        .unwrap();

    publisher.publish(&batch(1)).await.unwrap();
    let mispredicted = totals.mispredicted.load(Relaxed);
    assert!(
        mispredicted > 0,
        "the old map's parents are closed, so records landed on children"
    );

    publisher.publish(&batch(2)).await.unwrap();
    assert_eq!(totals.shard_map_reads.load(Relaxed), 2, "the map was read again once");
    assert_eq!(
        totals.mispredicted.load(Relaxed),
        mispredicted,
        "the new map predicts right"
    );

    let (_, per_shard) = read_stream(&client, &stream).await;
    let mut seen: Vec<String> = per_shard.iter().flatten().map(|e| e.aggregate_id.to_string()).collect();
    seen.sort();
    let mut sent: Vec<String> = (0..3).flat_map(batch).map(|e| e.aggregate_id.to_string()).collect();
    sent.sort();
    assert_eq!(seen, sent, "every event once, across parents and children");
    client.delete_stream().stream_name(&stream).send().await.unwrap();
}

/// A shard that refuses everything: the events are given up on after the last attempt
/// and counted, so a dashboard sees what the relay will have to publish.
#[tokio::test]
async fn events_given_up_on_are_counted_and_their_room_is_returned() {
    use std::sync::atomic::Ordering::Relaxed;
    let (client, stream, sink) = fresh_stream(1).await;
    let cfg = PublisherConfig {
        max_attempts: 2,
        ..fast_retries(false)
    };
    let publisher = Publisher::new(FaultySink::new(sink, 1000, 7), cfg);
    let batch: Vec<EventEnvelope> = (0..5).map(|i| earned(&account(&format!("g-{i}")), 1)).collect();
    let room = publisher.reserve(4096).await;
    assert_eq!(
        publisher.in_flight_bytes(),
        4096,
        "a reservation is in flight until dropped"
    );
    drop(room);
    let err = publisher.publish(&batch).await.unwrap_err();
    assert!(err.to_string().contains("5 events not accepted"), "{err}");
    let totals = publisher.totals();
    assert_eq!(totals.not_published.load(Relaxed), 5);
    assert_eq!(totals.events.load(Relaxed), 0);
    assert_eq!(totals.throttled.load(Relaxed), 10, "five entries, two attempts each");
    assert_eq!(publisher.in_flight_bytes(), 0);
    client.delete_stream().stream_name(&stream).send().await.unwrap();
}
