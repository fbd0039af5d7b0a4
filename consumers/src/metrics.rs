//! Every metric the consumer runtime emits, named here and nowhere else.
//!
//! Labels stay low-cardinality: the application (one per read model), the shard, the
//! worker. Rates (records/s, bytes/s) are the dashboards' `rate()` over the counters:
//! a counter survives a scrape gap, a pre-computed rate does not. The registry is
//! passed in rather than global so that several workers in one process (tests, the
//! benchmark) each keep their own.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
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

/// Labels of per-shard series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShardLabels {
    /// The consumer application.
    pub application: String,
    /// The shard.
    pub shard: String,
}

/// Labels of per-worker series.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabels {
    /// The consumer application.
    pub application: String,
    /// The worker.
    pub worker: String,
}

type HistogramFamily = Family<WorkerLabels, Histogram, fn() -> Histogram>;

fn batch_histogram() -> Histogram {
    // 1 ms .. ~33 s
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Handles to the runtime's metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub(crate) millis_behind_latest: Family<ShardLabels, Gauge>,
    pub(crate) records: Family<ShardLabels, Counter>,
    pub(crate) bytes: Family<ShardLabels, Counter>,
    pub(crate) parked: Family<ShardLabels, Counter>,
    pub(crate) retries: Family<ShardLabels, Counter>,
    pub(crate) deferred: Family<ShardLabels, Counter>,
    pub(crate) reads_throttled: Family<ShardLabels, Counter>,
    pub(crate) fanout_fallbacks: Family<ShardLabels, Counter>,
    pub(crate) batch_seconds: HistogramFamily,
    pub(crate) leases_held: Family<WorkerLabels, Gauge>,
    pub(crate) leases_taken: Family<WorkerLabels, Counter>,
    pub(crate) leases_lost: Family<WorkerLabels, Counter>,
    pub(crate) leases_handed_off: Family<WorkerLabels, Counter>,
}

impl Metrics {
    /// Registers the runtime's metrics in `registry` under [`PREFIX`].
    pub fn register(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            millis_behind_latest: Family::default(),
            records: Family::default(),
            bytes: Family::default(),
            parked: Family::default(),
            retries: Family::default(),
            deferred: Family::default(),
            reads_throttled: Family::default(),
            fanout_fallbacks: Family::default(),
            batch_seconds: HistogramFamily::new_with_constructor(batch_histogram),
            leases_held: Family::default(),
            leases_taken: Family::default(),
            leases_lost: Family::default(),
            leases_handed_off: Family::default(),
        };
        let r = registry.sub_registry_with_prefix(PREFIX);
        r.register(
            MILLIS_BEHIND_LATEST,
            "How far behind the tip of its shard the last read was, in ms",
            m.millis_behind_latest.clone(),
        );
        r.register(RECORDS, "User records processed (done or parked)", m.records.clone());
        r.register(BYTES, "User-record bytes processed", m.bytes.clone());
        r.register(PARKED, "Records parked as poison", m.parked.clone());
        r.register(
            RETRIES,
            "Batches offered again after a transient failure",
            m.retries.clone(),
        );
        r.register(
            DEFERRED,
            "Batches offered again because the processor's downstream was full",
            m.deferred.clone(),
        );
        r.register(
            READS_THROTTLED,
            "GetRecords calls refused with ProvisionedThroughputExceeded",
            m.reads_throttled.clone(),
        );
        r.register(
            FANOUT_FALLBACKS,
            "Shards that fell back from enhanced fan-out to polling",
            m.fanout_fallbacks.clone(),
        );
        r.register(BATCH_SECONDS, "Processor time per batch", m.batch_seconds.clone());
        r.register(LEASES_HELD, "Leases this worker holds", m.leases_held.clone());
        r.register(LEASES_TAKEN, "Leases taken", m.leases_taken.clone());
        r.register(
            LEASES_LOST,
            "Leases lost to another worker without a handoff",
            m.leases_lost.clone(),
        );
        r.register(
            LEASES_HANDED_OFF,
            "Leases handed to another worker on request",
            m.leases_handed_off.clone(),
        );
        m
    }

    /// A set registered nowhere, for code paths whose caller does not scrape.
    pub fn unregistered() -> Metrics {
        Metrics::register(&mut Registry::default())
    }

    /// Forgets a shard's series once this worker no longer reads it, so a dashboard does
    /// not show a stale lag for a shard another worker now owns.
    pub(crate) fn forget_shard(&self, labels: &ShardLabels) {
        self.millis_behind_latest.remove(labels);
    }
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
