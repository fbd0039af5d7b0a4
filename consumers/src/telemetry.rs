//! The runtime's telemetry events, after vector's `internal_events`: one struct per thing
//! that happens, whose `emit` writes the log line, moves the metrics and counts it for
//! the worker's report, so the three cannot disagree (before, each call site did a
//! `warn!`, a metric and a total by hand, and one of the three was sometimes missing).
//!
//! Call sites build an event and emit it; nothing else in the runtime touches
//! [`Metrics`] or [`Totals`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};

use crate::metrics::{ApplicationLabels, Metrics, ShardLabels, WorkerLabels};
use crate::retrieval::Record;

/// Counts a worker keeps for its caller's report (the metrics have the same and more,
/// but are shared by every worker of the process).
#[derive(Debug, Default)]
pub(crate) struct Totals {
    pub(crate) records: AtomicU64,
    pub(crate) parked: AtomicU64,
    pub(crate) fanout_fallbacks: AtomicU64,
    pub(crate) leases_taken: AtomicU64,
    pub(crate) leases_lost: AtomicU64,
    pub(crate) leases_handed_off: AtomicU64,
}

impl Totals {
    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Where events go: the process's metrics and this worker's totals.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sink<'a> {
    pub(crate) metrics: &'a Metrics,
    pub(crate) totals: &'a Totals,
}

/// One telemetry event.
pub(crate) trait InternalEvent {
    fn emit(self, to: Sink<'_>);
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// A read returned (records or not) with the shard's MillisBehindLatest.
pub(crate) struct ShardRead<'a> {
    pub(crate) shard: &'a ShardLabels,
    pub(crate) millis_behind_latest: i64,
    /// User records the read brought (none: nothing waits past what was applied).
    pub(crate) records: usize,
}

impl InternalEvent for ShardRead<'_> {
    fn emit(self, to: Sink<'_>) {
        to.metrics.saw_shard(self.shard);
        to.metrics
            .millis_behind_latest
            .get_or_create(self.shard)
            .set(self.millis_behind_latest);
        to.metrics
            .projection_lag_seconds
            .get_or_create(self.shard)
            .read(self.records > 0);
    }
}

/// The processor answered a batch (whatever the outcomes).
pub(crate) struct BatchOffered<'a> {
    pub(crate) worker: &'a WorkerLabels,
    pub(crate) elapsed: Duration,
}

impl InternalEvent for BatchOffered<'_> {
    fn emit(self, to: Sink<'_>) {
        to.metrics
            .batch_seconds
            .get_or_create(self.worker)
            .observe(self.elapsed.as_secs_f64());
    }
}

/// Records finished (done or parked) and the shard moved past them. Each record's
/// event is timed by its own `occurred_at`: the end-to-end latency of every event, and
/// the projection lag of the newest.
pub(crate) struct BatchApplied<'a> {
    pub(crate) shard: &'a ShardLabels,
    pub(crate) records: &'a [Record],
}

impl InternalEvent for BatchApplied<'_> {
    fn emit(self, to: Sink<'_>) {
        let Some(last) = self.records.last() else { return };
        let n = self.records.len() as u64;
        let bytes: u64 = self.records.iter().map(|r| r.data.len() as u64).sum();
        let m = to.metrics;
        m.records.get_or_create(self.shard).inc_by(n);
        m.bytes.get_or_create(self.shard).inc_by(bytes);
        to.totals.records.fetch_add(n, Ordering::Relaxed);
        let now = unix_now();
        let app = ApplicationLabels {
            application: self.shard.application.clone(),
        };
        let histogram = m.end_to_end.get_or_create_owned(&app);
        let staleness = m.projection_lag_seconds.get_or_create_owned(self.shard);
        for r in self.records {
            // A record that is not an envelope (a test's bytes, poison) has no age.
            if let Some(at) = cafe_events::envelope::occurred_at_of(&r.data) {
                histogram.observe(now - at.timestamp_micros() as f64 / 1e6);
                staleness.applied(at.timestamp_micros());
            }
        }
        debug!(sequence = %last.sequence, sub = last.sub, records = n, "batch processed");
    }
}

/// A record was stored in the parking lot and the shard moves on without it.
pub(crate) struct RecordParked<'a> {
    pub(crate) shard: &'a ShardLabels,
    pub(crate) record: &'a Record,
    pub(crate) reason: &'a str,
}

impl InternalEvent for RecordParked<'_> {
    fn emit(self, to: Sink<'_>) {
        warn!(sequence = %self.record.sequence, sub = self.record.sub, reason = self.reason, "record parked");
        to.metrics.parked.get_or_create(self.shard).inc();
        to.totals.parked.fetch_add(1, Ordering::Relaxed);
    }
}

/// The rest of a batch is offered again after a failure.
pub(crate) struct BatchRetried<'a> {
    pub(crate) shard: &'a ShardLabels,
    pub(crate) first: Option<&'a Record>,
    pub(crate) reason: &'a str,
}

impl InternalEvent for BatchRetried<'_> {
    fn emit(self, to: Sink<'_>) {
        to.metrics.retries.get_or_create(self.shard).inc();
        if let Some(first) = self.first {
            warn!(
                sequence = %first.sequence,
                sub = first.sub,
                reason = self.reason,
                "processing failed; offering the rest of the batch again"
            );
        }
    }
}

/// The rest of a batch is offered again because the processor's downstream is full.
pub(crate) struct BatchDeferred<'a> {
    pub(crate) shard: &'a ShardLabels,
    pub(crate) first: Option<&'a Record>,
    pub(crate) reason: &'a str,
}

impl InternalEvent for BatchDeferred<'_> {
    fn emit(self, to: Sink<'_>) {
        to.metrics.deferred.get_or_create(self.shard).inc();
        if let Some(first) = self.first {
            debug!(
                sequence = %first.sequence,
                sub = first.sub,
                reason = self.reason,
                "downstream full; offering the rest of the batch again shortly"
            );
        }
    }
}

/// A GetRecords call was refused for the shard's read allowance.
pub(crate) struct ReadThrottled<'a> {
    pub(crate) shard: &'a ShardLabels,
}

impl InternalEvent for ReadThrottled<'_> {
    fn emit(self, to: Sink<'_>) {
        to.metrics.reads_throttled.get_or_create(self.shard).inc();
        debug!("read throttled; backing off");
    }
}

/// Enhanced fan-out kept failing; the shard is polled from now on.
pub(crate) struct FanoutFellBack<'a> {
    pub(crate) shard: &'a ShardLabels,
}

impl InternalEvent for FanoutFellBack<'_> {
    fn emit(self, to: Sink<'_>) {
        warn!("enhanced fan-out keeps failing; this shard falls back to polling");
        to.metrics.fanout_fallbacks.get_or_create(self.shard).inc();
        to.totals.fanout_fallbacks.fetch_add(1, Ordering::Relaxed);
    }
}

/// The shard's checkpoint was stored (or found already current).
pub(crate) struct Checkpointed<'a> {
    pub(crate) shard: &'a ShardLabels,
}

impl InternalEvent for Checkpointed<'_> {
    fn emit(self, to: Sink<'_>) {
        to.metrics.saw_shard(self.shard);
        to.metrics
            .checkpoint_timestamp
            .get_or_create(self.shard)
            .set(unix_now());
    }
}

/// The shard's lease was renewed: the owner's heartbeat.
pub(crate) struct LeaseRenewed<'a> {
    pub(crate) shard: &'a ShardLabels,
}

impl InternalEvent for LeaseRenewed<'_> {
    fn emit(self, to: Sink<'_>) {
        to.metrics.saw_shard(self.shard);
        to.metrics.heartbeat_timestamp.get_or_create(self.shard).set(unix_now());
    }
}

/// This worker took a lease (unowned, expired, or handed to it).
pub(crate) struct LeaseTaken<'a> {
    pub(crate) worker: &'a WorkerLabels,
    pub(crate) shard: &'a str,
}

impl InternalEvent for LeaseTaken<'_> {
    fn emit(self, to: Sink<'_>) {
        debug!(shard = self.shard, "shard started");
        to.metrics.leases_taken.get_or_create(self.worker).inc();
        to.totals.leases_taken.fetch_add(1, Ordering::Relaxed);
    }
}

/// Another worker took a lease from this one without a handoff.
pub(crate) struct LeaseLost<'a> {
    pub(crate) worker: &'a WorkerLabels,
    pub(crate) shard: &'a str,
}

impl InternalEvent for LeaseLost<'_> {
    fn emit(self, to: Sink<'_>) {
        warn!(shard = self.shard, "lease lost to another worker");
        to.metrics.leases_lost.get_or_create(self.worker).inc();
        to.totals.leases_lost.fetch_add(1, Ordering::Relaxed);
    }
}

/// This worker handed a lease to the worker that asked for it.
pub(crate) struct LeaseHandedOff<'a> {
    pub(crate) worker: &'a WorkerLabels,
    pub(crate) shard: &'a str,
    pub(crate) successor: &'a str,
}

impl InternalEvent for LeaseHandedOff<'_> {
    fn emit(self, to: Sink<'_>) {
        info!(shard = self.shard, successor = self.successor, "lease handed over");
        to.metrics.leases_handed_off.get_or_create(self.worker).inc();
        to.totals.leases_handed_off.fetch_add(1, Ordering::Relaxed);
    }
}

/// How many leases this worker holds now.
pub(crate) struct LeasesHeld<'a> {
    pub(crate) worker: &'a WorkerLabels,
    pub(crate) held: usize,
}

impl InternalEvent for LeasesHeld<'_> {
    fn emit(self, to: Sink<'_>) {
        let held = i64::try_from(self.held).unwrap_or(i64::MAX);
        to.metrics.leases_held.get_or_create(self.worker).set(held);
    }
}
