//! The application's own metrics, named here and nowhere else (the consumer runtime's
//! are in `cafe_consumers::metrics`):
//!
//! - the HTTP server: requests by route, method and status, and latency by route, for
//!   every route the application serves (commands, queries, the dashboard). Routes are
//!   the router's patterns (`/v1/orders/{id}/status`), never the raw paths, so the label
//!   stays low-cardinality whatever clients send;
//! - the producer: events published, the Kinesis records they went out as, entries
//!   retried, throttles, events given up on, bytes in flight, and the outbox's stranded
//!   backlog, read from the publisher's and the relay's own counters at scrape time;
//! - the payment saga: invocations, requests done and failed, the queue's depth and age
//!   and the dead-letter queue's depth.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use cafe_consumers::metrics::{Kind, Latency, MetricDef, Scope, Unit};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Prefix of every name below.
pub const PREFIX: &str = "cafe_api";
/// Requests answered, by route, method and status.
pub const REQUESTS: &str = "requests";
/// Time to answer, by route.
pub const REQUEST_SECONDS: &str = "request_seconds";

/// Prefix of the producer's metrics.
pub const PRODUCER_PREFIX: &str = "cafe_producer";
/// Events (user records) published to the stream.
pub const EVENTS_PUBLISHED: &str = "events_published";
/// Kinesis records the events went out as (KPL aggregation packs many in one).
pub const KINESIS_RECORDS: &str = "kinesis_records";
/// PutRecords entries retried after a throttle or a failure.
pub const PUT_RETRIES: &str = "put_retries";
/// PutRecords entry refusals that were throttles.
pub const PUT_THROTTLES: &str = "put_throttles";
/// Events given up on after every attempt (the PutRecords failures that matter).
pub const PUT_FAILURES: &str = "put_failures";
/// Bytes of events queued or in flight to Kinesis.
pub const IN_FLIGHT_BYTES: &str = "in_flight_bytes";
/// Events whose pending marker outlived the relay's threshold, at its last scan.
pub const OUTBOX_PENDING: &str = "outbox_pending";
/// Events the relay republished.
pub const RELAY_REPUBLISHED: &str = "relay_republished";

const fn def(name: &'static str, kind: Kind, unit: Unit, help: &'static str) -> MetricDef {
    MetricDef {
        name,
        kind,
        unit,
        scope: Scope::Process,
        help,
    }
}

/// The producer's catalogue.
pub const PRODUCER_CATALOG: &[MetricDef] = &[
    def(
        EVENTS_PUBLISHED,
        Kind::Counter,
        Unit::Count,
        "Events published to the stream",
    ),
    def(
        KINESIS_RECORDS,
        Kind::Counter,
        Unit::Count,
        "Kinesis records the events went out as",
    ),
    def(
        PUT_RETRIES,
        Kind::Counter,
        Unit::Count,
        "PutRecords entries retried after a throttle or a failure",
    ),
    def(
        PUT_THROTTLES,
        Kind::Counter,
        Unit::Count,
        "PutRecords entry refusals that were the shard's write limit",
    ),
    def(
        PUT_FAILURES,
        Kind::Counter,
        Unit::Count,
        "Events not accepted after every attempt, left for the relay",
    ),
    def(
        IN_FLIGHT_BYTES,
        Kind::Gauge,
        Unit::Bytes,
        "Bytes of events queued or in flight to Kinesis",
    ),
    def(
        OUTBOX_PENDING,
        Kind::Gauge,
        Unit::Count,
        "Events pending past the relay's threshold at its last scan (at most one batch)",
    ),
    def(
        RELAY_REPUBLISHED,
        Kind::Counter,
        Unit::Count,
        "Events the outbox relay republished",
    ),
];

/// Writes one unlabelled counter or gauge of `def` under `prefix`.
fn encode_value(
    encoder: &mut prometheus_client::encoding::DescriptorEncoder,
    prefix: &str,
    def: &MetricDef,
    value: u64,
) -> Result<(), std::fmt::Error> {
    use prometheus_client::encoding::EncodeMetric;
    use prometheus_client::metrics::counter::ConstCounter;
    use prometheus_client::metrics::gauge::ConstGauge;
    let name = format!("{prefix}_{}", def.name);
    match def.kind {
        Kind::Counter => {
            let c = ConstCounter::new(value);
            c.encode(encoder.encode_descriptor(&name, def.help, None, c.metric_type())?)
        }
        Kind::Gauge | Kind::Histogram => {
            let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            g.encode(encoder.encode_descriptor(&name, def.help, None, g.metric_type())?)
        }
    }
}

/// Reads the publisher's counters and the relay's progress when scraped.
#[derive(Debug)]
struct ProducerCollector(std::sync::Arc<crate::pipeline::Service>);

impl ProducerCollector {
    /// The values in [`PRODUCER_CATALOG`]'s order.
    fn values(&self) -> [u64; 8] {
        use std::sync::atomic::Ordering::Relaxed;
        let publisher = self.0.publisher();
        let t = publisher.totals();
        let relay = self.0.relay_progress();
        [
            t.events.load(Relaxed),
            t.kinesis_records.load(Relaxed),
            t.retries.load(Relaxed),
            t.throttled.load(Relaxed),
            t.not_published.load(Relaxed),
            publisher.in_flight_bytes(),
            relay.pending.load(Relaxed),
            relay.published.load(Relaxed),
        ]
    }
}

impl prometheus_client::collector::Collector for ProducerCollector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (def, value) in PRODUCER_CATALOG.iter().zip(self.values()) {
            encode_value(&mut encoder, PRODUCER_PREFIX, def, value)?;
        }
        Ok(())
    }
}

/// Registers the producer's metrics over `service`'s publisher and relay.
pub fn register_producer(registry: &mut Registry, service: std::sync::Arc<crate::pipeline::Service>) {
    registry.register_collector(Box::new(ProducerCollector(service)));
}

/// Prefix of the payment saga's metrics (the local event source mapping's view; in
/// AWS the function's EMF lines and AWS/SQS's own metrics say the same).
pub const PAYMENT_PREFIX: &str = "cafe_payment";
/// Invocations of the payment function.
pub const PAYMENT_INVOCATIONS: &str = "invocations";
/// Invocations that failed whole (their batch comes back).
pub const PAYMENT_FAILED_INVOCATIONS: &str = "failed_invocations";
/// Payment requests the function finished (deleted from the queue).
pub const PAYMENT_DONE: &str = "messages_done";
/// Payment requests the function reported failed (they come back, then dead-letter).
pub const PAYMENT_FAILED: &str = "messages_failed";
/// Payment requests waiting on the queue.
pub const PAYMENT_QUEUE_DEPTH: &str = "queue_depth";
/// Age of the oldest payment request at the last receive.
pub const PAYMENT_QUEUE_AGE: &str = "queue_age_seconds";
/// Payment requests in the dead-letter queue.
pub const PAYMENT_DLQ_DEPTH: &str = "dlq_depth";

/// The payment saga's catalogue.
pub const PAYMENT_CATALOG: &[MetricDef] = &[
    def(
        PAYMENT_INVOCATIONS,
        Kind::Counter,
        Unit::Count,
        "Invocations of the payment function",
    ),
    def(
        PAYMENT_FAILED_INVOCATIONS,
        Kind::Counter,
        Unit::Count,
        "Invocations that failed whole (the batch is redelivered)",
    ),
    def(
        PAYMENT_DONE,
        Kind::Counter,
        Unit::Count,
        "Payment requests finished and deleted from the queue",
    ),
    def(
        PAYMENT_FAILED,
        Kind::Counter,
        Unit::Count,
        "Payment requests the function reported failed",
    ),
    def(
        PAYMENT_QUEUE_DEPTH,
        Kind::Gauge,
        Unit::Count,
        "Payment requests on the queue, waiting or being processed",
    ),
    def(
        PAYMENT_QUEUE_AGE,
        Kind::Gauge,
        Unit::Seconds,
        "Age of the oldest payment request at the last receive (0 when the queue was empty)",
    ),
    def(
        PAYMENT_DLQ_DEPTH,
        Kind::Gauge,
        Unit::Count,
        "Payment requests in the dead-letter queue",
    ),
];

/// Reads the saga's figures when scraped.
#[derive(Debug)]
struct PaymentCollector(std::sync::Arc<crate::payments::SagaGauges>);

impl prometheus_client::collector::Collector for PaymentCollector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (def, value) in PAYMENT_CATALOG.iter().zip(self.0.values()) {
            encode_value(&mut encoder, PAYMENT_PREFIX, def, value)?;
        }
        Ok(())
    }
}

/// Registers the payment saga's metrics.
pub fn register_payments(registry: &mut Registry, gauges: std::sync::Arc<crate::payments::SagaGauges>) {
    registry.register_collector(Box::new(PaymentCollector(gauges)));
}

/// The HTTP metrics' catalogue (the consumer runtime's shape).
pub const CATALOG: &[MetricDef] = &[
    MetricDef {
        name: REQUESTS,
        kind: Kind::Counter,
        unit: Unit::Count,
        scope: Scope::Process,
        help: "Requests answered, by route, method and status",
    },
    MetricDef {
        name: REQUEST_SECONDS,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        scope: Scope::Process,
        help: "Time to answer a request, by route",
    },
];

/// Labels of a request count.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The route's pattern (`unmatched` for the fallback).
    pub route: String,
    /// GET, POST, …
    pub method: String,
    /// The status code.
    pub status: String,
}

/// Labels of a latency.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// The route's pattern.
    pub route: String,
}

/// Handles to the HTTP metrics; cheap to clone.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    seconds: Family<RouteLabels, Latency>,
}

impl HttpMetrics {
    /// Registers them in `registry` under [`PREFIX`].
    pub fn register(registry: &mut Registry) -> HttpMetrics {
        let m = HttpMetrics {
            requests: Family::default(),
            seconds: Family::default(),
        };
        let r = registry.sub_registry_with_prefix(PREFIX);
        r.register(REQUESTS, CATALOG[0].help, m.requests.clone());
        r.register(REQUEST_SECONDS, CATALOG[1].help, m.seconds.clone());
        m
    }

    /// `router` with every request counted and timed.
    pub fn layer(&self, router: axum::Router) -> axum::Router {
        router.layer(axum::middleware::from_fn_with_state(self.clone(), track))
    }

    /// Requests answered so far on `route` with `status`.
    pub fn count(&self, route: &str, method: &str, status: u16) -> u64 {
        let labels = RequestLabels {
            route: route.to_owned(),
            method: method.to_owned(),
            status: status.to_string(),
        };
        self.requests.get(&labels).map_or(0, |c| c.get())
    }

    /// The latency histogram of `route`.
    pub fn latency(&self, route: &str) -> Option<cafe_consumers::metrics::LatencyCounts> {
        self.seconds
            .get(&RouteLabels {
                route: route.to_owned(),
            })
            .map(|h| h.read())
    }
}

async fn track(State(m): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    m.requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            method,
            status: response.status().as_u16().to_string(),
        })
        .inc();
    m.seconds
        .get_or_create(&RouteLabels { route })
        .observe(started.elapsed().as_secs_f64());
    response
}
