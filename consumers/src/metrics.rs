//! Every metric the consumer runtime emits, named here and nowhere else.
//!
//! [`CATALOG`] is the one list: registration, the CloudWatch publisher, the generated
//! CloudWatch dashboard and alarms, and the tests all read it, so a dashboard cannot name
//! a metric the code does not emit. Labels stay low-cardinality: the application (one
//! per read model), the shard, the worker. Rates (records/s, bytes/s) are the
//! dashboards' `rate()` over the counters: a counter survives a scrape gap, a
//! pre-computed rate does not. The registry is passed in rather than global so that
//! several workers in one process (tests, the benchmark) each keep their own, and a
//! process that runs several applications (`cafe run`) registers once and shares the
//! handles.
//!
//! What changes a metric is a telemetry event ([`crate::telemetry`]), never a call site.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// Prefix of every name below.
pub const PREFIX: &str = "cafe_consumer";
/// How far behind the tip of its shard the last read was (GetRecords' MillisBehindLatest).
pub const MILLIS_BEHIND_LATEST: &str = "millis_behind_latest";
/// User records processed (done or parked). `_total` is added by the encoder.
pub const RECORDS: &str = "records";
/// User-record bytes processed.
pub const BYTES: &str = "bytes";
/// Time a processor took for one batch.
pub const BATCH_SECONDS: &str = "batch_seconds";
/// Leases this worker holds now.
pub const LEASES_HELD: &str = "leases_held";
/// Leases taken (unowned, expired, or handed over to us).
pub const LEASES_TAKEN: &str = "leases_taken";
/// Leases lost to another worker without a handoff (we paused past the failover time).
pub const LEASES_LOST: &str = "leases_lost";
/// Leases handed to another worker on its request (rebalancing).
pub const LEASES_HANDED_OFF: &str = "leases_handed_off";
/// Records parked as poison.
pub const PARKED: &str = "parked";
/// Batches offered again after a transient failure.
pub const RETRIES: &str = "retries";
/// Batches offered again because the processor's downstream was full (back-pressure).
pub const DEFERRED: &str = "deferred";
/// GetRecords calls refused with ProvisionedThroughputExceeded.
pub const READS_THROTTLED: &str = "reads_throttled";
/// Shards that fell back from enhanced fan-out to polling.
pub const FANOUT_FALLBACKS: &str = "fanout_fallbacks";
/// How stale the read model is on the shard, in time: now minus the `occurred_at` of
/// the newest event applied while the last read brought records (zero once a read
/// finds nothing more). Computed when read, so a projector stuck on a batch shows a lag
/// that grows by the second, where MillisBehindLatest (arrival-based, and as of the
/// last read) stands still.
pub const PROJECTION_LAG_SECONDS: &str = "projection_lag_seconds";
/// Per applied event, the time it was applied minus its `occurred_at`: the pipeline's
/// end-to-end latency from the command's decision to the read model.
pub const END_TO_END_SECONDS: &str = "end_to_end_seconds";
/// When the shard's checkpoint was last stored (Unix seconds); its age is the staleness
/// of the restart point.
pub const CHECKPOINT_TIMESTAMP: &str = "checkpoint_timestamp_seconds";
/// When the shard's lease was last renewed (Unix seconds): the owner's heartbeat, which
/// tells an idle shard (fresh) from a dead owner (stale).
pub const HEARTBEAT_TIMESTAMP: &str = "heartbeat_timestamp_seconds";
/// Datums the CloudWatch publisher dropped because its buffer was full (CloudWatch
/// unreachable for long): counted, never dropped silently.
pub const CLOUDWATCH_DROPPED: &str = "cloudwatch_datums_dropped";

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up; rates are taken over it.
    Counter,
    /// A value now.
    Gauge,
    /// A distribution (buckets, sum, count).
    Histogram,
}

/// The unit, as CloudWatch names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// A count of things.
    Count,
    /// Bytes.
    Bytes,
    /// Seconds.
    Seconds,
    /// Milliseconds.
    Milliseconds,
}

impl Unit {
    /// CloudWatch's name of the unit.
    pub fn cloudwatch(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Bytes => "Bytes",
            Unit::Seconds => "Seconds",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// Which labels a metric's series carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// `application`, `shard`.
    Shard,
    /// `application`, `worker`.
    Worker,
    /// `application`.
    Application,
    /// None: one series for the process.
    Process,
}

impl Scope {
    /// The label (and CloudWatch dimension) names.
    pub fn labels(self) -> &'static [&'static str] {
        match self {
            Scope::Shard => &["application", "shard"],
            Scope::Worker => &["application", "worker"],
            Scope::Application => &["application"],
            Scope::Process => &[],
        }
    }
}

/// One metric of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// The name under [`PREFIX`].
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Its unit.
    pub unit: Unit,
    /// Its labels.
    pub scope: Scope,
    /// One line for humans (the Prometheus HELP text).
    pub help: &'static str,
}

impl MetricDef {
    /// The series name as Prometheus shows it (counters get `_total` from the encoder).
    pub fn prometheus_name(&self) -> String {
        match self.kind {
            Kind::Counter => format!("{PREFIX}_{}_total", self.name),
            Kind::Gauge | Kind::Histogram => format!("{PREFIX}_{}", self.name),
        }
    }
}

const fn def(name: &'static str, kind: Kind, unit: Unit, scope: Scope, help: &'static str) -> MetricDef {
    MetricDef {
        name,
        kind,
        unit,
        scope,
        help,
    }
}

/// Every metric of the consumer runtime.
pub const CATALOG: &[MetricDef] = &[
    def(
        MILLIS_BEHIND_LATEST,
        Kind::Gauge,
        Unit::Milliseconds,
        Scope::Shard,
        "How far behind the tip of its shard the last read was, in ms",
    ),
    def(
        PROJECTION_LAG_SECONDS,
        Kind::Gauge,
        Unit::Seconds,
        Scope::Shard,
        "Now minus occurred_at of the newest event applied",
    ),
    def(
        CHECKPOINT_TIMESTAMP,
        Kind::Gauge,
        Unit::Seconds,
        Scope::Shard,
        "When the checkpoint was last stored (Unix seconds)",
    ),
    def(
        HEARTBEAT_TIMESTAMP,
        Kind::Gauge,
        Unit::Seconds,
        Scope::Shard,
        "When the lease was last renewed (Unix seconds)",
    ),
    def(
        RECORDS,
        Kind::Counter,
        Unit::Count,
        Scope::Shard,
        "User records processed (done or parked)",
    ),
    def(
        BYTES,
        Kind::Counter,
        Unit::Bytes,
        Scope::Shard,
        "User-record bytes processed",
    ),
    def(
        PARKED,
        Kind::Counter,
        Unit::Count,
        Scope::Shard,
        "Records parked as poison",
    ),
    def(
        RETRIES,
        Kind::Counter,
        Unit::Count,
        Scope::Shard,
        "Batches offered again after a transient failure",
    ),
    def(
        DEFERRED,
        Kind::Counter,
        Unit::Count,
        Scope::Shard,
        "Batches offered again because the processor's downstream was full",
    ),
    def(
        READS_THROTTLED,
        Kind::Counter,
        Unit::Count,
        Scope::Shard,
        "GetRecords calls refused with ProvisionedThroughputExceeded",
    ),
    def(
        FANOUT_FALLBACKS,
        Kind::Counter,
        Unit::Count,
        Scope::Shard,
        "Shards that fell back from enhanced fan-out to polling",
    ),
    def(
        END_TO_END_SECONDS,
        Kind::Histogram,
        Unit::Seconds,
        Scope::Application,
        "Applied time minus occurred_at, per event",
    ),
    def(
        BATCH_SECONDS,
        Kind::Histogram,
        Unit::Seconds,
        Scope::Worker,
        "Processor time per batch",
    ),
    def(
        LEASES_HELD,
        Kind::Gauge,
        Unit::Count,
        Scope::Worker,
        "Leases this worker holds",
    ),
    def(LEASES_TAKEN, Kind::Counter, Unit::Count, Scope::Worker, "Leases taken"),
    def(
        LEASES_LOST,
        Kind::Counter,
        Unit::Count,
        Scope::Worker,
        "Leases lost to another worker without a handoff",
    ),
    def(
        LEASES_HANDED_OFF,
        Kind::Counter,
        Unit::Count,
        Scope::Worker,
        "Leases handed to another worker on request",
    ),
    def(
        CLOUDWATCH_DROPPED,
        Kind::Counter,
        Unit::Count,
        Scope::Process,
        "CloudWatch datums dropped because the send buffer was full",
    ),
];

/// The catalogue entry of `name`.
pub fn definition(name: &str) -> Option<&'static MetricDef> {
    CATALOG.iter().find(|d| d.name == name)
}

/// Labels of per-shard series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ShardLabels {
    /// The consumer application.
    pub application: String,
    /// The shard.
    pub shard: String,
}

/// Labels of per-worker series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct WorkerLabels {
    /// The consumer application.
    pub application: String,
    /// The worker.
    pub worker: String,
}

/// Labels of per-application series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ApplicationLabels {
    /// The consumer application.
    pub application: String,
}

type HistogramFamily = Family<WorkerLabels, Histogram, fn() -> Histogram>;
type LatencyFamily = Family<ApplicationLabels, Latency, fn() -> Latency>;
type SecondsGauge = Gauge<f64, AtomicU64>;

/// The projection lag of one shard ([`PROJECTION_LAG_SECONDS`]): the newest applied
/// event's time and whether the last read found more, turned into seconds when read.
#[derive(Debug, Clone, Default)]
pub struct Staleness {
    inner: Arc<StalenessInner>,
}

#[derive(Debug, Default)]
struct StalenessInner {
    /// `occurred_at` of the newest event applied, Unix microseconds (0: none yet).
    newest_micros: AtomicU64,
    /// Whether the last read brought records (so something may wait past the newest).
    waiting: std::sync::atomic::AtomicBool,
}

impl Staleness {
    pub(crate) fn applied(&self, occurred_micros: i64) {
        let micros = u64::try_from(occurred_micros).unwrap_or(0);
        self.inner.newest_micros.fetch_max(micros, Ordering::Relaxed);
    }

    pub(crate) fn read(&self, brought_records: bool) {
        self.inner.waiting.store(brought_records, Ordering::Relaxed);
    }

    /// Seconds behind at `now_micros`; None before anything was applied or read.
    pub fn seconds_at(&self, now_micros: i64) -> Option<f64> {
        let newest = self.inner.newest_micros.load(Ordering::Relaxed);
        if !self.inner.waiting.load(Ordering::Relaxed) {
            return Some(0.0);
        }
        if newest == 0 {
            return None;
        }
        Some(((now_micros as f64 - newest as f64) / 1e6).max(0.0))
    }

    /// Seconds behind now.
    pub fn seconds(&self) -> Option<f64> {
        self.seconds_at(chrono::Utc::now().timestamp_micros())
    }
}

impl TypedMetric for Staleness {
    const TYPE: MetricType = MetricType::Gauge;
}

impl EncodeMetric for Staleness {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        encoder.encode_gauge(&self.seconds().unwrap_or(0.0))
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

fn batch_histogram() -> Histogram {
    // 1 ms .. ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Upper bounds of [`Latency`]'s buckets: 5 ms to ~164 s by factors of √2, fine enough
/// that a p99 read from them is within about 20 % of the true one.
fn latency_bounds() -> &'static [f64] {
    static BOUNDS: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    BOUNDS.get_or_init(|| (0..31).map(|i| 0.005 * std::f64::consts::SQRT_2.powi(i)).collect())
}

/// A latency histogram whose buckets can be read back, unlike prometheus-client's own:
/// the dashboard shows its quantiles and the CloudWatch publisher sends it as values and
/// counts (a distribution CloudWatch can take percentiles of).
#[derive(Debug, Clone)]
pub struct Latency {
    inner: Arc<LatencyInner>,
}

#[derive(Debug)]
struct LatencyInner {
    /// One per bound, and one past the last.
    counts: Vec<AtomicU64>,
    /// Sum of observations in microseconds.
    sum_micros: AtomicU64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            inner: Arc::new(LatencyInner {
                counts: (0..=latency_bounds().len()).map(|_| AtomicU64::new(0)).collect(),
                sum_micros: AtomicU64::new(0),
            }),
        }
    }
}

impl Latency {
    /// Records one observation.
    pub fn observe(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        let i = latency_bounds().partition_point(|b| *b < seconds);
        self.inner.counts[i].fetch_add(1, Ordering::Relaxed);
        self.inner
            .sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// The counts per bucket now.
    pub fn read(&self) -> LatencyCounts {
        LatencyCounts {
            counts: self.inner.counts.iter().map(|c| c.load(Ordering::Relaxed)).collect(),
            sum_seconds: self.inner.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// A reading of a [`Latency`]: what it holds, or (by [`LatencyCounts::since`]) what was
/// added over an interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyCounts {
    /// Observations per bucket; bucket i holds values up to [`LatencyCounts::bound`]`(i)`.
    pub counts: Vec<u64>,
    /// Sum of the observations.
    pub sum_seconds: f64,
}

impl LatencyCounts {
    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The upper bound of bucket `i` (the last is open: its lower bound is returned).
    pub fn bound(i: usize) -> f64 {
        let bounds = latency_bounds();
        bounds.get(i).copied().unwrap_or(bounds[bounds.len() - 1])
    }

    /// What was added since `earlier` (a reading of the same histogram).
    pub fn since(&self, earlier: &LatencyCounts) -> LatencyCounts {
        LatencyCounts {
            counts: self
                .counts
                .iter()
                .zip(earlier.counts.iter().chain(std::iter::repeat(&0)))
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            sum_seconds: (self.sum_seconds - earlier.sum_seconds).max(0.0),
        }
    }

    /// The `q` quantile (0..=1), interpolated within its bucket; None when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0u64;
        for (i, &n) in self.counts.iter().enumerate() {
            if n > 0 && seen + n >= rank {
                let lower = if i == 0 { 0.0 } else { Self::bound(i - 1) };
                let upper = Self::bound(i);
                let within = (rank - seen) as f64 / n as f64;
                return Some(lower + (upper - lower) * within);
            }
            seen += n;
        }
        None
    }

    /// Non-empty buckets as (representative value, count): each bucket's midpoint, for
    /// CloudWatch's Values/Counts form.
    pub fn values_and_counts(&self) -> Vec<(f64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| {
                let lower = if i == 0 { 0.0 } else { Self::bound(i - 1) };
                ((lower + Self::bound(i)) / 2.0, *n)
            })
            .collect()
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let reading = self.read();
        let bounds = latency_bounds();
        let mut cumulative = 0u64;
        let buckets: Vec<(f64, u64)> = reading
            .counts
            .iter()
            .enumerate()
            .map(|(i, n)| {
                cumulative += n;
                (bounds.get(i).copied().unwrap_or(f64::MAX), cumulative)
            })
            .collect();
        encoder.encode_histogram::<NoLabelSet>(reading.sum_seconds, cumulative, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Handles to the runtime's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub(crate) millis_behind_latest: Family<ShardLabels, Gauge>,
    pub(crate) projection_lag_seconds: Family<ShardLabels, Staleness>,
    pub(crate) checkpoint_timestamp: Family<ShardLabels, SecondsGauge>,
    pub(crate) heartbeat_timestamp: Family<ShardLabels, SecondsGauge>,
    pub(crate) records: Family<ShardLabels, Counter>,
    pub(crate) bytes: Family<ShardLabels, Counter>,
    pub(crate) parked: Family<ShardLabels, Counter>,
    pub(crate) retries: Family<ShardLabels, Counter>,
    pub(crate) deferred: Family<ShardLabels, Counter>,
    pub(crate) reads_throttled: Family<ShardLabels, Counter>,
    pub(crate) fanout_fallbacks: Family<ShardLabels, Counter>,
    pub(crate) end_to_end: LatencyFamily,
    pub(crate) batch_seconds: HistogramFamily,
    pub(crate) leases_held: Family<WorkerLabels, Gauge>,
    pub(crate) leases_taken: Family<WorkerLabels, Counter>,
    pub(crate) leases_lost: Family<WorkerLabels, Counter>,
    pub(crate) leases_handed_off: Family<WorkerLabels, Counter>,
    pub(crate) cloudwatch_dropped: Counter,
    /// The shards seen, so [`Metrics::snapshot`] can list them (a `Family` cannot be
    /// iterated).
    shards: Arc<Mutex<BTreeSet<ShardLabels>>>,
}

impl Metrics {
    /// Registers the runtime's metrics in `registry` under [`PREFIX`].
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            millis_behind_latest: Family::default(),
            projection_lag_seconds: Family::default(),
            checkpoint_timestamp: Family::default(),
            heartbeat_timestamp: Family::default(),
            records: Family::default(),
            bytes: Family::default(),
            parked: Family::default(),
            retries: Family::default(),
            deferred: Family::default(),
            reads_throttled: Family::default(),
            fanout_fallbacks: Family::default(),
            end_to_end: LatencyFamily::new_with_constructor(Latency::default),
            batch_seconds: HistogramFamily::new_with_constructor(batch_histogram),
            leases_held: Family::default(),
            leases_taken: Family::default(),
            leases_lost: Family::default(),
            leases_handed_off: Family::default(),
            cloudwatch_dropped: Counter::default(),
            shards: Arc::default(),
        };
        let r = registry.sub_registry_with_prefix(PREFIX);
        for d in CATALOG {
            let help = d.help;
            match d.name {
                MILLIS_BEHIND_LATEST => r.register(d.name, help, m.millis_behind_latest.clone()),
                PROJECTION_LAG_SECONDS => r.register(d.name, help, m.projection_lag_seconds.clone()),
                CHECKPOINT_TIMESTAMP => r.register(d.name, help, m.checkpoint_timestamp.clone()),
                HEARTBEAT_TIMESTAMP => r.register(d.name, help, m.heartbeat_timestamp.clone()),
                RECORDS => r.register(d.name, help, m.records.clone()),
                BYTES => r.register(d.name, help, m.bytes.clone()),
                PARKED => r.register(d.name, help, m.parked.clone()),
                RETRIES => r.register(d.name, help, m.retries.clone()),
                DEFERRED => r.register(d.name, help, m.deferred.clone()),
                READS_THROTTLED => r.register(d.name, help, m.reads_throttled.clone()),
                FANOUT_FALLBACKS => r.register(d.name, help, m.fanout_fallbacks.clone()),
                END_TO_END_SECONDS => r.register(d.name, help, m.end_to_end.clone()),
                BATCH_SECONDS => r.register(d.name, help, m.batch_seconds.clone()),
                LEASES_HELD => r.register(d.name, help, m.leases_held.clone()),
                LEASES_TAKEN => r.register(d.name, help, m.leases_taken.clone()),
                LEASES_LOST => r.register(d.name, help, m.leases_lost.clone()),
                LEASES_HANDED_OFF => r.register(d.name, help, m.leases_handed_off.clone()),
                CLOUDWATCH_DROPPED => r.register(d.name, help, m.cloudwatch_dropped.clone()),
                // A catalogue entry without a handle fails the registration test.
                _ => {}
            }
        }
        m
    }

    /// A set registered nowhere, for code paths whose caller does not scrape.
    pub fn unregistered() -> Metrics {
        Metrics::register(&mut Registry::default())
    }

    pub(crate) fn saw_shard(&self, labels: &ShardLabels) {
        let mut shards = self.shards.lock().unwrap_or_else(|p| p.into_inner());
        if !shards.contains(labels) {
            shards.insert(labels.clone());
        }
    }

    /// Forgets a shard's gauges once this worker no longer reads it, so a dashboard does
    /// not show a stale lag for a shard another worker now owns. Its counters stay (a
    /// counter that vanished would read as a reset).
    pub(crate) fn forget_shard(&self, labels: &ShardLabels) {
        self.millis_behind_latest.remove(labels);
        self.projection_lag_seconds.remove(labels);
        self.heartbeat_timestamp.remove(labels);
    }

    /// Every series' value now, typed: what the dashboard, `cafe lag` and the CloudWatch
    /// publisher read, so nothing parses the Prometheus text to get a counter back.
    pub fn snapshot(&self) -> Snapshot {
        let labels: Vec<ShardLabels> = self
            .shards
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let counter = |f: &Family<ShardLabels, Counter>, l: &ShardLabels| f.get(l).map_or(0, |c| c.get());
        let seconds = |f: &Family<ShardLabels, SecondsGauge>, l: &ShardLabels| f.get(l).map(|g| g.get());
        let shards = labels
            .iter()
            .map(|l| ShardSnapshot {
                application: l.application.clone(),
                shard: l.shard.clone(),
                held: self.millis_behind_latest.get(l).is_some(),
                millis_behind_latest: self.millis_behind_latest.get(l).map(|g| g.get()),
                projection_lag_seconds: self.projection_lag_seconds.get(l).and_then(|s| s.seconds()),
                checkpoint_timestamp: seconds(&self.checkpoint_timestamp, l),
                heartbeat_timestamp: seconds(&self.heartbeat_timestamp, l),
                records: counter(&self.records, l),
                bytes: counter(&self.bytes, l),
                parked: counter(&self.parked, l),
                retries: counter(&self.retries, l),
                deferred: counter(&self.deferred, l),
                reads_throttled: counter(&self.reads_throttled, l),
            })
            .collect();
        let applications: BTreeSet<&String> = labels.iter().map(|l| &l.application).collect();
        let end_to_end = applications
            .into_iter()
            .map(|a| {
                let key = ApplicationLabels { application: a.clone() };
                let reading = self.end_to_end.get(&key).map(|h| h.read()).unwrap_or_default();
                (a.clone(), reading)
            })
            .collect();
        Snapshot { shards, end_to_end }
    }
}

/// The runtime's series at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Per application and shard, sorted.
    pub shards: Vec<ShardSnapshot>,
    /// Per application: its end-to-end latency histogram.
    pub end_to_end: Vec<(String, LatencyCounts)>,
}

/// One application's series on one shard.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardSnapshot {
    /// The consumer application.
    pub application: String,
    /// The shard.
    pub shard: String,
    /// Whether a worker of this process reads it now.
    pub held: bool,
    /// MillisBehindLatest of the last read (None once the shard is no longer held).
    pub millis_behind_latest: Option<i64>,
    /// Now minus `occurred_at` of the newest event applied, as of the last batch.
    pub projection_lag_seconds: Option<f64>,
    /// When the checkpoint was last stored (Unix seconds).
    pub checkpoint_timestamp: Option<f64>,
    /// When the lease was last renewed (Unix seconds).
    pub heartbeat_timestamp: Option<f64>,
    /// User records processed.
    pub records: u64,
    /// Bytes processed.
    pub bytes: u64,
    /// Records parked.
    pub parked: u64,
    /// Batches retried.
    pub retries: u64,
    /// Batches deferred.
    pub deferred: u64,
    /// Reads throttled.
    pub reads_throttled: u64,
}

/// The registry in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// `GET /metrics` over `registry`, for a worker's HTTP listener.
pub fn router(registry: Arc<Registry>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render(&registry),
                )
            }
        }),
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Every catalogue entry is registered under the name the catalogue gives, so the
    /// dashboards generated from the catalogue name series that exist.
    #[test]
    fn every_catalogue_metric_is_registered_under_its_name() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        // Families appear in the text once they have a series.
        let s = ShardLabels {
            application: "a".into(),
            shard: "s".into(),
        };
        let w = WorkerLabels {
            application: "a".into(),
            worker: "w".into(),
        };
        let a = ApplicationLabels {
            application: "a".into(),
        };
        m.millis_behind_latest.get_or_create(&s).set(1);
        m.projection_lag_seconds.get_or_create(&s).applied(1);
        m.checkpoint_timestamp.get_or_create(&s).set(1.0);
        m.heartbeat_timestamp.get_or_create(&s).set(1.0);
        for c in [
            &m.records,
            &m.bytes,
            &m.parked,
            &m.retries,
            &m.deferred,
            &m.reads_throttled,
            &m.fanout_fallbacks,
        ] {
            c.get_or_create(&s).inc();
        }
        m.end_to_end.get_or_create(&a).observe(0.1);
        m.batch_seconds.get_or_create(&w).observe(0.1);
        m.leases_held.get_or_create(&w).set(1);
        for c in [&m.leases_taken, &m.leases_lost, &m.leases_handed_off] {
            c.get_or_create(&w).inc();
        }
        m.cloudwatch_dropped.inc();
        let text = render(&registry);
        for d in CATALOG {
            assert!(
                text.contains(&format!("# HELP {PREFIX}_{} {}", d.name, d.help)),
                "{} not registered:\n{text}",
                d.name
            );
            assert!(text.contains(&d.prometheus_name()), "{}", d.prometheus_name());
        }
        let families = text.lines().filter(|l| l.starts_with("# HELP")).count();
        assert_eq!(families, CATALOG.len(), "a metric outside the catalogue:\n{text}");
    }

    #[test]
    fn staleness_grows_with_the_clock_while_records_wait_and_is_zero_once_a_read_finds_none() {
        let s = Staleness::default();
        assert_eq!(s.seconds_at(0), Some(0.0), "nothing read: nothing known to wait");
        s.read(true);
        assert_eq!(s.seconds_at(5_000_000), None, "records wait, none applied yet");
        s.applied(1_000_000);
        s.applied(500_000); // an older one later does not move it back
        assert_eq!(s.seconds_at(3_000_000), Some(2.0));
        // Stuck on a batch: the lag keeps growing with the clock.
        assert_eq!(s.seconds_at(11_000_000), Some(10.0));
        s.read(false);
        assert_eq!(s.seconds_at(11_000_000), Some(0.0));
    }

    #[test]
    fn latency_quantiles_come_from_the_buckets_and_intervals_subtract() {
        let h = Latency::default();
        let empty = h.read();
        assert_eq!(empty.quantile(0.99), None);
        for _ in 0..99 {
            h.observe(0.010);
        }
        h.observe(3.0);
        let all = h.read();
        assert_eq!(all.count(), 100);
        let p50 = all.quantile(0.5).unwrap();
        assert!((0.007..=0.0142).contains(&p50), "{p50}");
        let max = all.quantile(1.0).unwrap();
        assert!((2.1..=4.25).contains(&max), "{max}");
        assert!((all.sum_seconds - (0.99 + 3.0)).abs() < 1e-3);
        // What came after a reading is what the interval shows.
        h.observe(20.0);
        let later = h.read().since(&all);
        assert_eq!(later.count(), 1);
        let only = later.quantile(0.5).unwrap();
        assert!((14.0..=28.3).contains(&only), "{only}");
        let vc = later.values_and_counts();
        assert_eq!(vc.len(), 1);
        assert!((14.0..=28.3).contains(&vc[0].0));
        // Negative ages (a clock ahead of ours) count as zero, not as a panic.
        h.observe(-1.0);
        assert_eq!(h.read().counts[0], 1);
    }

    #[test]
    fn the_prometheus_histogram_is_cumulative_with_a_count() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        let a = ApplicationLabels {
            application: "x".into(),
        };
        m.end_to_end.get_or_create(&a).observe(0.004);
        m.end_to_end.get_or_create(&a).observe(1.0);
        let text = render(&registry);
        assert!(
            text.contains("cafe_consumer_end_to_end_seconds_count{application=\"x\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("cafe_consumer_end_to_end_seconds_bucket{le=\"0.005\",application=\"x\"} 1")
                || text.contains("cafe_consumer_end_to_end_seconds_bucket{application=\"x\",le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(text.contains("le=\"+Inf\"") && text.contains("} 2\n"), "{text}");
    }
}
