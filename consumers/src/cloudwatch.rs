//! The runtime's metrics to CloudWatch: what KCL publishes (MillisBehindLatest per
//! shard, records and bytes, per application), and what it does not (projection lag,
//! end-to-end latency as a distribution, parked records, heartbeats).
//!
//! Off the hot path: a task reads [`Metrics::snapshot`] every interval and sends the
//! difference since the last one in batched `PutMetricData` calls (at most
//! [`MAX_DATUMS_PER_CALL`] datums each). Counters go as the interval's increase, gauges
//! as their value, the end-to-end histogram as Values/Counts (CloudWatch takes
//! percentiles of it). What a failed call could not send waits for the next interval in
//! a bounded buffer; past [`CloudWatchConfig::buffer`] datums the oldest are dropped,
//! and counted (the `cloudwatch_datums_dropped` counter), never dropped silently.
//!
//! Names are the catalogue's ([`crate::metrics::CATALOG`]), so the generated dashboard
//! and alarms name exactly what is sent. Dimensions: `Stream` and `Application` on
//! everything, plus `Shard` on per-shard series; per-shard gauges are also sent rolled
//! up per application (their maximum), which is what the alarms watch.

use std::collections::VecDeque;
use std::time::Duration;

use aws_sdk_cloudwatch::primitives::DateTime as AwsDateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use tokio_util::sync::CancellationToken;

use crate::metrics::{
    self, END_TO_END_SECONDS, MILLIS_BEHIND_LATEST, Metrics, PROJECTION_LAG_SECONDS, ShardSnapshot, Snapshot, Unit,
};

/// PutMetricData's limit.
pub const MAX_DATUMS_PER_CALL: usize = 1000;

/// Where and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudWatchConfig {
    /// The CloudWatch namespace.
    pub namespace: String,
    /// The stream, as the `Stream` dimension.
    pub stream: String,
    /// Time between sends (CloudWatch's standard resolution is a minute).
    pub every: Duration,
    /// Datums kept for a later send when a call fails, at most.
    pub buffer: usize,
}

impl CloudWatchConfig {
    /// The defaults for `stream`, into `namespace` (`infra/names.json`'s
    /// `metrics_namespace`).
    pub fn new(namespace: impl Into<String>, stream: impl Into<String>) -> CloudWatchConfig {
        CloudWatchConfig {
            namespace: namespace.into(),
            stream: stream.into(),
            every: Duration::from_secs(60),
            buffer: 20_000,
        }
    }
}

/// A send failed.
#[derive(Debug, thiserror::Error)]
#[error("PutMetricData failed: {0}")]
pub struct CloudWatchError(pub String);

/// What one flush did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flushed {
    /// Datums sent.
    pub sent: usize,
    /// PutMetricData calls made.
    pub calls: usize,
    /// Datums left in the buffer (a call failed).
    pub buffered: usize,
    /// Datums dropped because the buffer was full.
    pub dropped: u64,
}

fn unit(u: Unit) -> StandardUnit {
    StandardUnit::from(u.cloudwatch())
}

fn dim(name: &str, value: &str) -> Dimension {
    Dimension::builder().name(name).value(value).build()
}

/// The datums for the interval from `before` to `now` (pure; `at` stamps them).
pub fn datums(stream: &str, before: Option<&Snapshot>, now: &Snapshot, at: AwsDateTime) -> Vec<MetricDatum> {
    let mut out = Vec::new();
    let find = |s: &ShardSnapshot| {
        before.and_then(|b| {
            b.shards
                .iter()
                .find(|x| x.application == s.application && x.shard == s.shard)
        })
    };
    let datum = |name: &str, value: f64, dims: Vec<Dimension>| {
        let def = metrics::definition(name);
        MetricDatum::builder()
            .metric_name(name)
            .value(value)
            .unit(unit(def.map_or(Unit::Count, |d| d.unit)))
            .timestamp(at)
            .set_dimensions(Some(dims))
            .build()
    };
    let shard_dims = |s: &ShardSnapshot| {
        vec![
            dim("Stream", stream),
            dim("Application", &s.application),
            dim("Shard", &s.shard),
        ]
    };
    let app_dims = |app: &str| vec![dim("Stream", stream), dim("Application", app)];
    let mut apps: Vec<&str> = now.shards.iter().map(|s| s.application.as_str()).collect();
    apps.dedup();
    for s in &now.shards {
        let prev = find(s);
        let delta = |f: fn(&ShardSnapshot) -> u64| f(s).saturating_sub(prev.map_or(0, f)) as f64;
        let counters: [(&str, f64); 6] = [
            (metrics::RECORDS, delta(|x| x.records)),
            (metrics::BYTES, delta(|x| x.bytes)),
            (metrics::PARKED, delta(|x| x.parked)),
            (metrics::RETRIES, delta(|x| x.retries)),
            (metrics::DEFERRED, delta(|x| x.deferred)),
            (metrics::READS_THROTTLED, delta(|x| x.reads_throttled)),
        ];
        for (name, v) in counters {
            out.push(datum(name, v, shard_dims(s)));
        }
        if let Some(mbl) = s.millis_behind_latest {
            out.push(datum(MILLIS_BEHIND_LATEST, mbl as f64, shard_dims(s)));
        }
        if let Some(lag) = s.projection_lag_seconds {
            out.push(datum(PROJECTION_LAG_SECONDS, lag, shard_dims(s)));
        }
        if let Some(beat) = s.heartbeat_timestamp {
            out.push(datum(metrics::HEARTBEAT_TIMESTAMP, beat, shard_dims(s)));
        }
        if let Some(cp) = s.checkpoint_timestamp {
            out.push(datum(metrics::CHECKPOINT_TIMESTAMP, cp, shard_dims(s)));
        }
    }
    for app in apps {
        let of_app = || now.shards.iter().filter(move |s| s.application == app);
        let max = |f: fn(&ShardSnapshot) -> Option<f64>| {
            of_app()
                .filter_map(f)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
        };
        if let Some(v) = max(|s| s.millis_behind_latest.map(|m| m as f64)) {
            out.push(datum(MILLIS_BEHIND_LATEST, v, app_dims(app)));
        }
        if let Some(v) = max(|s| s.projection_lag_seconds) {
            out.push(datum(PROJECTION_LAG_SECONDS, v, app_dims(app)));
        }
        let records: u64 = of_app()
            .map(|s| s.records.saturating_sub(find(s).map_or(0, |p| p.records)))
            .sum();
        out.push(datum(metrics::RECORDS, records as f64, app_dims(app)));
        let parked: u64 = of_app()
            .map(|s| s.parked.saturating_sub(find(s).map_or(0, |p| p.parked)))
            .sum();
        out.push(datum(metrics::PARKED, parked as f64, app_dims(app)));
    }
    for (app, reading) in &now.end_to_end {
        let earlier = before.and_then(|b| b.end_to_end.iter().find(|(a, _)| a == app).map(|(_, r)| r));
        let interval = earlier.map_or_else(|| reading.clone(), |e| reading.since(e));
        let pairs = interval.values_and_counts();
        if pairs.is_empty() {
            continue;
        }
        out.push(
            MetricDatum::builder()
                .metric_name(END_TO_END_SECONDS)
                .set_values(Some(pairs.iter().map(|(v, _)| *v).collect()))
                .set_counts(Some(pairs.iter().map(|(_, n)| *n as f64).collect()))
                .unit(StandardUnit::Seconds)
                .timestamp(at)
                .set_dimensions(Some(app_dims(app)))
                .build(),
        );
    }
    out
}

/// The publisher; see the module docs.
#[derive(Debug)]
pub struct CloudWatchPublisher {
    client: aws_sdk_cloudwatch::Client,
    cfg: CloudWatchConfig,
    metrics: Metrics,
    previous: Option<Snapshot>,
    buffer: VecDeque<MetricDatum>,
}

impl CloudWatchPublisher {
    /// Publishes `metrics` through `client`.
    pub fn new(client: aws_sdk_cloudwatch::Client, cfg: CloudWatchConfig, metrics: Metrics) -> CloudWatchPublisher {
        CloudWatchPublisher {
            client,
            cfg,
            metrics,
            previous: None,
            buffer: VecDeque::new(),
        }
    }

    /// Adds datums to send at the next flush (besides the runtime's own).
    pub fn queue(&mut self, more: impl IntoIterator<Item = MetricDatum>) {
        self.buffer.extend(more);
    }

    /// Takes a snapshot and sends the interval's datums (and what earlier failures left).
    pub async fn flush(&mut self) -> Flushed {
        let now = self.metrics.snapshot();
        let at = AwsDateTime::from(std::time::SystemTime::now());
        self.buffer
            .extend(datums(&self.cfg.stream, self.previous.as_ref(), &now, at));
        self.previous = Some(now);
        let mut flushed = Flushed::default();
        let overflow = self.buffer.len().saturating_sub(self.cfg.buffer);
        if overflow > 0 {
            self.buffer.drain(..overflow);
            flushed.dropped = overflow as u64;
            self.metrics.cloudwatch_dropped.inc_by(flushed.dropped);
            tracing::warn!(dropped = overflow, "CloudWatch buffer full; oldest datums dropped");
        }
        while !self.buffer.is_empty() {
            let n = self.buffer.len().min(MAX_DATUMS_PER_CALL);
            let batch: Vec<MetricDatum> = self.buffer.iter().take(n).cloned().collect();
            match self
                .client
                .put_metric_data()
                .namespace(&self.cfg.namespace)
                .set_metric_data(Some(batch))
                .send()
                .await
            {
                Ok(_) => {
                    self.buffer.drain(..n);
                    flushed.sent += n;
                    flushed.calls += 1;
                }
                Err(e) => {
                    let e = CloudWatchError(aws_sdk_cloudwatch::error::DisplayErrorContext(e).to_string());
                    tracing::warn!(error = %e, buffered = self.buffer.len(), "CloudWatch send failed; keeping the datums for the next interval");
                    break;
                }
            }
        }
        flushed.buffered = self.buffer.len();
        flushed
    }

    /// Sends every `every` until `shutdown`, then once more (the last interval).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            self.flush().await;
        }
        self.flush().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::metrics::LatencyCounts;

    fn shard(app: &str, records: u64, lag: Option<f64>) -> ShardSnapshot {
        ShardSnapshot {
            application: app.into(),
            shard: "shardId-0".into(),
            held: true,
            millis_behind_latest: Some(5),
            projection_lag_seconds: lag,
            records,
            ..ShardSnapshot::default()
        }
    }

    fn find<'a>(d: &'a [MetricDatum], name: &str, shard: bool) -> Vec<&'a MetricDatum> {
        d.iter()
            .filter(|m| m.metric_name() == Some(name))
            .filter(|m| m.dimensions().iter().any(|x| x.name() == Some("Shard")) == shard)
            .collect()
    }

    #[test]
    fn counters_go_as_the_intervals_increase_gauges_as_values_latency_as_a_distribution() {
        let at = AwsDateTime::from_secs(1_800_000_000);
        let mut h = LatencyCounts {
            counts: vec![0; 32],
            ..LatencyCounts::default()
        };
        h.counts[3] = 4;
        let before = Snapshot {
            shards: vec![shard("orders", 100, Some(0.5))],
            end_to_end: vec![("orders".into(), h.clone())],
        };
        h.counts[3] = 10;
        h.counts[20] = 1;
        let now = Snapshot {
            shards: vec![shard("orders", 130, Some(2.0))],
            end_to_end: vec![("orders".into(), h)],
        };
        let d = datums("s", Some(&before), &now, at);
        let records = find(&d, metrics::RECORDS, true);
        assert_eq!(records[0].value(), Some(30.0), "the increase, not the total");
        assert_eq!(records[0].unit(), Some(&StandardUnit::Count));
        let dims: Vec<_> = records[0]
            .dimensions()
            .iter()
            .map(|x| (x.name().unwrap(), x.value().unwrap()))
            .collect();
        assert_eq!(
            dims,
            vec![("Stream", "s"), ("Application", "orders"), ("Shard", "shardId-0")]
        );
        assert_eq!(find(&d, metrics::RECORDS, false)[0].value(), Some(30.0));
        assert_eq!(find(&d, PROJECTION_LAG_SECONDS, true)[0].value(), Some(2.0));
        assert_eq!(find(&d, PROJECTION_LAG_SECONDS, false)[0].value(), Some(2.0));
        assert_eq!(
            find(&d, MILLIS_BEHIND_LATEST, true)[0].unit(),
            Some(&StandardUnit::Milliseconds)
        );
        let e2e = find(&d, END_TO_END_SECONDS, false);
        assert_eq!(e2e[0].counts(), &[6.0, 1.0], "only what the interval added");
        assert_eq!(e2e[0].values().len(), 2);
        // The first interval sends totals; nothing is sent for an empty histogram.
        let first = datums("s", None, &before, at);
        assert_eq!(find(&first, metrics::RECORDS, true)[0].value(), Some(100.0));
        let quiet = datums("s", Some(&now), &now, at);
        assert!(find(&quiet, END_TO_END_SECONDS, false).is_empty());
        assert_eq!(find(&quiet, metrics::RECORDS, true)[0].value(), Some(0.0));
    }
}
