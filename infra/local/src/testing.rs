//! Helpers the test suites of every crate share when they drive the local stack: one
//! copy instead of one per test crate. They panic on failure, as test code does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

/// Polls `check` every 100 ms until it holds; panics naming `what` after `limit`.
pub async fn eventually<F: AsyncFnMut() -> bool>(what: &str, limit: Duration, mut check: F) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts `(partition key, data)` records raw (one Kinesis record each), 500 per call;
/// panics unless every one was accepted.
pub async fn put_raw<D: AsRef<[u8]>>(kinesis: &aws_sdk_kinesis::Client, stream: &str, records: &[(String, D)]) {
    for chunk in records.chunks(500) {
        let entries = chunk
            .iter()
            .map(|(key, data)| {
                PutRecordsRequestEntry::builder()
                    .partition_key(key)
                    .data(Blob::new(data.as_ref()))
                    .build()
                    .unwrap()
            })
            .collect();
        let out = kinesis
            .put_records()
            .stream_name(stream)
            .set_records(Some(entries))
            .send()
            .await
            .unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
    }
}

/// A stack of a few services with its own state dir and free ports, for chaos tests
/// that restart or flush a server: the shared stack stays untouched for the tests
/// running beside them. Its processes are killed and its directory removed on drop.
#[derive(Debug)]
pub struct PrivateStack {
    /// The stack; `config()` has its ports and URLs.
    pub stack: crate::Stack,
    services: Vec<crate::Service>,
}

impl PrivateStack {
    /// Starts `services` (PostgreSQL, Redis, Mongo or the Lambda emulator; the embedded
    /// emulators need the `cafe` binary and are not offered here) and waits until they
    /// are healthy.
    pub async fn start(services: &[crate::Service]) -> PrivateStack {
        let shared = crate::StackConfig::load().unwrap();
        let mut cfg = shared.clone();
        cfg.state_dir = std::env::temp_dir().join(format!("cafe-private-{}", uuid::Uuid::now_v7().simple()));
        let free = || {
            std::net::TcpListener::bind((crate::config::LOOPBACK, 0))
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        cfg.ports.postgres = free();
        cfg.ports.redis = free();
        cfg.ports.mongo = free();
        cfg.ports.lambda = free();
        let stack = crate::Stack::new(cfg, std::path::PathBuf::from("/nonexistent"));
        stack.up_only(services).await.unwrap();
        PrivateStack {
            stack,
            services: services.to_vec(),
        }
    }

    /// Its configuration (ports, URLs).
    pub fn config(&self) -> &crate::StackConfig {
        self.stack.config()
    }
}

impl Drop for PrivateStack {
    fn drop(&mut self) {
        for &s in &self.services {
            if let Some(t) = self.stack.tracked(s) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(t.pid), nix::sys::signal::Signal::SIGKILL);
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(t.pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.stack.config().state_dir);
    }
}

/// One statistic (`Sum`, `Maximum`, `SampleCount`, …) of one metric over the last ten
/// minutes, one value per hour-long period, with exactly `dimensions` (GetMetricData
/// matches them exactly, as CloudWatch does; moto's GetMetricStatistics matches subsets).
pub async fn metric_values(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    name: &str,
    stat: &str,
    dimensions: &[(&str, &str)],
) -> Vec<f64> {
    use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
    let now = std::time::SystemTime::now();
    let metric = Metric::builder()
        .namespace(namespace)
        .metric_name(name)
        .set_dimensions(Some(
            dimensions
                .iter()
                .map(|(k, v)| Dimension::builder().name(*k).value(*v).build())
                .collect(),
        ))
        .build();
    let out = cloudwatch
        .get_metric_data()
        .start_time((now - Duration::from_secs(600)).into())
        .end_time((now + Duration::from_secs(60)).into())
        .metric_data_queries(
            MetricDataQuery::builder()
                .id("q")
                .metric_stat(MetricStat::builder().metric(metric).period(3600).stat(stat).build())
                .build(),
        )
        .send()
        .await
        .unwrap();
    out.metric_data_results()[0].values().to_vec()
}
