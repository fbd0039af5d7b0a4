//! Enhanced fan-out against the Kinesis stand-in.

use std::collections::BTreeMap;
use std::time::Duration;

use cafe_consumers::WorkerConfig;
use cafe_consumers::fanout;
use cafe_consumers::lease::Checkpoint;
use tokio_util::sync::CancellationToken;

use crate::helpers::{Collector, fixture};

/// A registered consumer's subscription pushes what was put, in order, deaggregated.
#[tokio::test]
async fn a_subscription_pushes_the_shards_records() {
    let fx = fixture(1).await;
    let records: Vec<(String, u64)> = (0..20).map(|n| ("k".to_owned(), n)).collect();
    fx.put(&records).await;
    let arn = fanout::register(&fx.kinesis, &fx.stream, "probe").await.unwrap();
    assert_eq!(
        arn,
        fanout::register(&fx.kinesis, &fx.stream, "probe").await.unwrap(),
        "idempotent"
    );
    let shard = cafe_consumers::discovery::list_shards(&fx.kinesis, &fx.stream)
        .await
        .unwrap()[0]
        .shard_id
        .clone();
    let mut sub = fanout::subscribe(&fx.kinesis, &arn, &shard, &Checkpoint::TrimHorizon, None, None)
        .await
        .unwrap();
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while got.len() < 20 {
        let batch = tokio::time::timeout_at(deadline, sub.next(&Checkpoint::TrimHorizon))
            .await
            .expect("records within 10 s")
            .unwrap()
            .expect("subscription open");
        got.extend(
            batch
                .records
                .into_iter()
                .map(|r| String::from_utf8(r.data.to_vec()).unwrap()),
        );
    }
    let expected: Vec<String> = records.iter().map(|(k, n)| format!("{k}:{n}")).collect();
    assert_eq!(got, expected);
}

/// With a producer running, a worker reading by enhanced fan-out (resubscribing every
/// second, so the 5-minute renewal happens many times) processes exactly what a polling
/// worker processes, in the same per-shard order, each record once.
#[tokio::test]
async fn enhanced_fan_out_delivers_the_same_records_as_polling() {
    let fx = fixture(2).await;
    let stop = CancellationToken::new();
    let producer = fx.produce(8, stop.clone());
    let (polled, pushed) = (Collector::new("poll"), Collector::new("efo"));
    let (stop_poll, poll_worker) = fx.spawn(fx.config("poll", "p"), polled.clone());
    let efo = WorkerConfig {
        fan_out: Some("efo-it".into()),
        fan_out_resubscribe: Duration::from_secs(1),
        ..fx.config("efo", "e")
    };
    let (stop_efo, efo_worker) = fx.spawn(efo, pushed.clone());
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.cancel();
    let sent = producer.await.unwrap();
    fx.eventually("both saw everything", Duration::from_secs(30), async || {
        polled.seen().len() >= sent.len() && pushed.seen().len() >= sent.len()
    })
    .await;
    stop_poll.cancel();
    stop_efo.cancel();
    poll_worker.await.unwrap();
    let report = efo_worker.await.unwrap();
    assert_eq!(report.fanout_fallbacks, 0, "pushed, not polled: {report:?}");

    let per_shard = |c: &Collector| {
        let mut m: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
        for s in c.seen() {
            m.entry(s.shard).or_default().push((s.key, s.n));
        }
        m
    };
    assert_eq!(pushed.seen().len(), sent.len(), "each record once");
    assert_eq!(per_shard(&pushed), per_shard(&polled));
    assert_eq!(report.records, sent.len() as u64);
}

/// When subscriptions keep failing (here: the consumer was deregistered under the
/// worker), each shard falls back to polling and nothing is lost or repeated.
#[tokio::test]
async fn a_shard_falls_back_to_polling_when_fan_out_keeps_failing() {
    let fx = fixture(1).await;
    let first: Vec<(String, u64)> = (0..10).map(|n| ("k".to_owned(), n)).collect();
    fx.put(&first).await;
    let c = Collector::new("w");
    let cfg = WorkerConfig {
        fan_out: Some("doomed-consumer".into()),
        fan_out_resubscribe: Duration::from_millis(500),
        ..fx.config("fallback", "w")
    };
    let (stop, worker) = fx.spawn(cfg, c.clone());
    fx.eventually("the first records pushed", Duration::from_secs(20), async || {
        c.seen().len() >= 10
    })
    .await;
    let stream_arn = fx
        .kinesis
        .describe_stream_summary()
        .stream_name(&fx.stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary()
        .unwrap()
        .stream_arn()
        .to_owned();
    fx.kinesis
        .deregister_stream_consumer()
        .stream_arn(stream_arn)
        .consumer_name("doomed-consumer")
        .send()
        .await
        .unwrap();
    // The open subscription outlives the consumer in the stand-in; its renewal (every
    // 500 ms here) is what fails. Records put after that can only come by polling.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second: Vec<(String, u64)> = (10..30).map(|n| ("k".to_owned(), n)).collect();
    fx.put(&second).await;
    fx.eventually("the rest read by polling", Duration::from_secs(30), async || {
        c.seen().len() >= 30
    })
    .await;
    stop.cancel();
    let report = worker.await.unwrap();
    assert_eq!(report.fanout_fallbacks, 1, "{report:?}");
    let seen: Vec<(String, u64)> = c.seen().into_iter().map(|s| (s.key, s.n)).collect();
    let all: Vec<(String, u64)> = first.into_iter().chain(second).collect();
    assert_eq!(seen, all, "in order, each once");
}
