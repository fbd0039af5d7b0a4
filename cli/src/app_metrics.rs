//! The application's own metrics, named here and nowhere else (the consumer runtime's
//! are in `cafe_consumers::metrics`):
//!
//! - the HTTP server: requests by route, method and status, and latency by route, for
//!   every route the application serves (commands, queries, the dashboard). Routes are
//!   the router's patterns (`/v1/orders/{id}/status`), never the raw paths, so the label
//!   stays low-cardinality whatever clients send;
//! - the producer: events published, the Kinesis records they went out as, entries
//!   retried (throttled or failed), read from the publisher's own counters at scrape
//!   time.

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

/// The producer's catalogue.
pub const PRODUCER_CATALOG: &[MetricDef] = &[
    MetricDef {
        name: EVENTS_PUBLISHED,
        kind: Kind::Counter,
        unit: Unit::Count,
        scope: Scope::Process,
        help: "Events published to the stream",
    },
    MetricDef {
        name: KINESIS_RECORDS,
        kind: Kind::Counter,
        unit: Unit::Count,
        scope: Scope::Process,
        help: "Kinesis records the events went out as",
    },
    MetricDef {
        name: PUT_RETRIES,
        kind: Kind::Counter,
        unit: Unit::Count,
        scope: Scope::Process,
        help: "PutRecords entries retried after a throttle or a failure",
    },
];

/// Reads the publisher's counters when scraped.
#[derive(Debug)]
struct ProducerCollector(std::sync::Arc<crate::pipeline::Service>);

impl prometheus_client::collector::Collector for ProducerCollector {
    fn encode(&self, mut encoder: prometheus_client::encoding::DescriptorEncoder) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use std::sync::atomic::Ordering;
        let t = self.0.publisher().totals();
        for (def, value) in PRODUCER_CATALOG.iter().zip([&t.events, &t.kinesis_records, &t.retries]) {
            let c = ConstCounter::new(value.load(Ordering::Relaxed));
            let name = format!("{PRODUCER_PREFIX}_{}", def.name);
            let m = encoder.encode_descriptor(&name, def.help, None, c.metric_type())?;
            c.encode(m)?;
        }
        Ok(())
    }
}

/// Registers the producer's metrics over `service`'s publisher.
pub fn register_producer(registry: &mut Registry, service: std::sync::Arc<crate::pipeline::Service>) {
    registry.register_collector(Box::new(ProducerCollector(service)));
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
