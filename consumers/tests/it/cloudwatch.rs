//! The runtime's metrics published to the CloudWatch stand-in (moto) and read back with
//! GetMetricData: the names, dimensions and values a dashboard and an alarm would see.

use std::time::Duration;

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
use cafe_consumers::cloudwatch::{CloudWatchConfig, CloudWatchPublisher};
use cafe_consumers::metrics::{self, Metrics};
use cafe_consumers::{BatchContext, Outcome, Processor, Record, Worker};
use cafe_localstack::{StackConfig, aws};
use tokio_util::sync::CancellationToken;

use crate::helpers::fixture;

/// Applies everything.
#[derive(Debug)]
struct AllDone;

impl Processor for AllDone {
    async fn process(&self, _: BatchContext<'_>, records: &[Record]) -> Vec<Outcome> {
        vec![Outcome::Done; records.len()]
    }
}

async fn cloudwatch() -> aws_sdk_cloudwatch::Client {
    let cfg = StackConfig::load().unwrap();
    aws::cloudwatch(&aws::sdk_config(&cfg).await, &cfg)
}

#[tokio::test]
async fn published_metrics_read_back_from_cloudwatch_with_their_dimensions_and_values() {
    let f = fixture(1).await;
    // Twenty events that happened two seconds ago.
    let occurred = chrono::Utc::now() - chrono::Duration::seconds(2);
    let records: Vec<(String, bytes::Bytes)> = (0..20)
        .map(|i| {
            let mut e = cafe_events::samples::restocked(1, i).unwrap();
            e.occurred_at = occurred;
            (e.partition_key(), e.encode())
        })
        .collect();
    cafe_localstack::testing::put_raw(&f.kinesis, &f.stream, &records).await;
    let app = format!("cw-{}", uuid::Uuid::now_v7().simple());
    let metrics = Metrics::unregistered();
    let worker = Worker::new(
        f.config(&app, "w"),
        f.kinesis.clone(),
        f.leases(&app),
        std::sync::Arc::new(f.parking()),
        std::sync::Arc::new(AllDone),
        metrics.clone(),
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    // Applied, and read again to find nothing more (so not stale).
    let done = |s: &cafe_consumers::metrics::Snapshot| {
        s.shards.iter().map(|s| s.records).sum::<u64>() == 20
            && s.shards.iter().all(|s| s.projection_lag_seconds == Some(0.0))
    };
    while !done(&metrics.snapshot()) {
        assert!(std::time::Instant::now() < deadline, "{:?}", metrics.snapshot());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shard = metrics.snapshot().shards[0].shard.clone();

    let ns = format!("CloudCafe/It-{}", uuid::Uuid::now_v7().simple());
    let cw = cloudwatch().await;
    let mut cfg = CloudWatchConfig::new("unused", &f.stream);
    cfg.namespace = ns.clone();
    let mut publisher = CloudWatchPublisher::new(cw.clone(), cfg, metrics.clone());
    let flushed = publisher.flush().await;
    assert!(
        flushed.sent > 0 && flushed.buffered == 0 && flushed.dropped == 0,
        "{flushed:?}"
    );

    let per_shard = [
        ("Stream", f.stream.as_str()),
        ("Application", app.as_str()),
        ("Shard", shard.as_str()),
    ];
    let per_app = [("Stream", f.stream.as_str()), ("Application", app.as_str())];
    let read = async |name: &str, stat: &str, dims: &[(&str, &str)]| {
        cafe_localstack::testing::metric_values(&cw, &ns, name, stat, dims).await
    };
    assert_eq!(read(metrics::RECORDS, "Sum", &per_shard).await, vec![20.0]);
    assert_eq!(read(metrics::RECORDS, "Sum", &per_app).await, vec![20.0]);
    // Every event timed by its own occurred_at: twenty samples of about two seconds.
    assert_eq!(
        read(metrics::END_TO_END_SECONDS, "SampleCount", &per_app).await,
        vec![20.0]
    );
    let e2e = read(metrics::END_TO_END_SECONDS, "Maximum", &per_app).await;
    assert!((1.4..30.0).contains(&e2e[0]), "{e2e:?}");
    // Caught up (the last read found nothing more): not stale.
    let lag = read(metrics::PROJECTION_LAG_SECONDS, "Maximum", &per_app).await;
    assert_eq!(lag, vec![0.0]);
    let mbl = read(metrics::MILLIS_BEHIND_LATEST, "Maximum", &per_shard).await;
    assert_eq!(mbl.len(), 1);

    // The next interval sends the increase: nothing new, so the sum stays 20.
    let again = publisher.flush().await;
    assert_eq!(again.buffered, 0);
    assert_eq!(read(metrics::RECORDS, "Sum", &per_shard).await, vec![20.0]);

    // Batches stay within PutMetricData's 1,000 datums.
    publisher.queue((0..2_500).map(|i| {
        MetricDatum::builder()
            .metric_name("batching_probe")
            .value(f64::from(i))
            .set_dimensions(Some(
                per_app
                    .iter()
                    .map(|(k, v)| Dimension::builder().name(*k).value(*v).build())
                    .collect(),
            ))
            .build()
    }));
    let big = publisher.flush().await;
    assert!(big.calls >= 3 && big.sent >= 2_500, "{big:?}");
    assert_eq!(read("batching_probe", "SampleCount", &per_app).await, vec![2_500.0]);
    stop.cancel();
    running.await.unwrap();
}

/// CloudWatch unreachable: datums wait in the bounded buffer, and what does not fit is
/// dropped and counted, on /metrics too.
#[tokio::test]
async fn an_unreachable_cloudwatch_buffers_then_drops_and_counts() {
    let cfg = StackConfig::load().unwrap();
    let sdk = aws::sdk_config(&cfg).await;
    let dead = aws_sdk_cloudwatch::Client::from_conf(
        aws_sdk_cloudwatch::config::Builder::from(&sdk)
            .endpoint_url("http://127.0.0.1:9")
            .build(),
    );
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let mut c = CloudWatchConfig::new("CloudCafe", "s");
    c.buffer = 100;
    let mut publisher = CloudWatchPublisher::new(dead, c, metrics);
    let datum = || MetricDatum::builder().metric_name("x").value(1.0).build();
    publisher.queue((0..60).map(|_| datum()));
    let first = publisher.flush().await;
    assert_eq!((first.sent, first.buffered, first.dropped), (0, 60, 0), "{first:?}");
    publisher.queue((0..70).map(|_| datum()));
    let second = publisher.flush().await;
    assert_eq!(
        (second.sent, second.buffered, second.dropped),
        (0, 100, 30),
        "{second:?}"
    );
    let text = metrics::render(&registry);
    assert!(
        text.contains("cafe_consumer_cloudwatch_datums_dropped_total 30"),
        "{text}"
    );
}
