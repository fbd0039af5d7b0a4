//! The live lag dashboard: `/dashboard` (one page, charts by uPlot, embedded in the
//! binary: nothing is fetched from the internet) over `/v1/lag` (the lag monitor's
//! report and the replays' progress, as JSON the page polls every second).
//!
//! Served by the main job's HTTP server and by `cafe lag serve` on its own; both start
//! it with [`Dashboard::start`].

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::header;
use axum::response::IntoResponse;
use cafe_consumers::metrics::Metrics;
use cafe_consumers::monitor::{LagMonitor, LagReport, LagView, MonitorConfig};
use cafe_consumers::parking::DynamoParkingLot;
use cafe_localstack::StackConfig;
use cafe_producers::api::openapi::ObserverErrors;
use cafe_projections::catalog::ReadModel;
use cafe_replay::record::Summary;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::pipeline::Clients;

const PAGE: &str = include_str!("../assets/dashboard.html");
const UPLOT_JS: &str = include_str!("../assets/uplot/uPlot.iife.min.js");
const UPLOT_CSS: &str = include_str!("../assets/uplot/uPlot.min.css");

/// How often the replays table is read (a replay moves slowly; its table is a Query).
const REPLAYS_EVERY: Duration = Duration::from_secs(2);

/// What `/v1/lag` answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LagPage {
    /// The lag monitor's report.
    #[serde(flatten)]
    pub lag: LagReport,
    /// Replays not yet dropped, newest first.
    pub replays: Vec<Summary>,
}

/// The consumer applications of the pipeline: every read model's projector and the
/// payment-requests consumer.
pub fn applications() -> Vec<String> {
    let mut apps: Vec<String> = ReadModel::ALL.iter().map(|m| m.name().to_owned()).collect();
    apps.push(cafe_lambda_payment::requests::APPLICATION.to_owned());
    apps
}

/// The dashboard's data sources, running.
#[derive(Debug, Clone)]
pub struct Dashboard {
    view: LagView,
    replays: Arc<RwLock<Vec<Summary>>>,
}

impl Dashboard {
    /// Starts the lag monitor over `applications` (with this process's `metrics`, when
    /// its workers run here) and the replays reader, both until `stop`.
    pub fn start(
        cfg: &StackConfig,
        clients: &Clients,
        applications: Vec<String>,
        metrics: Option<Metrics>,
        monitor: MonitorConfig,
        stop: CancellationToken,
    ) -> Dashboard {
        let probe = crate::read_side::lag_probe(cfg, clients, applications);
        let mut lag = LagMonitor::new(probe, monitor)
            .with_parking(DynamoParkingLot::new(clients.dynamodb.clone(), &cfg.names.parked_table));
        if let Some(m) = metrics {
            lag = lag.with_metrics(m);
        }
        let view = lag.view();
        tokio::spawn(lag.run(stop.clone()));
        let replays = Arc::new(RwLock::new(Vec::new()));
        let table = cafe_replay::Replays::new(clients.dynamodb.clone(), &cfg.names.replays_table);
        let into = replays.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REPLAYS_EVERY);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match read_replays(&table).await {
                    Ok(list) => *into.write().unwrap_or_else(|p| p.into_inner()) = list,
                    Err(e) => tracing::debug!(error = %e, "dashboard: could not read the replays"),
                }
            }
        });
        Dashboard { view, replays }
    }

    /// What `/v1/lag` answers now.
    pub fn page(&self) -> LagPage {
        LagPage {
            lag: self.view.report(),
            replays: self.replays.read().unwrap_or_else(|p| p.into_inner()).clone(),
        }
    }

    /// `/dashboard`, its assets, and `/v1/lag`.
    pub fn router(&self) -> axum::Router {
        let me = self.clone();
        axum::Router::new()
            .route("/dashboard", axum::routing::get(page))
            .route("/dashboard/assets/uPlot.iife.min.js", axum::routing::get(uplot_js))
            .route("/dashboard/assets/uPlot.min.css", axum::routing::get(uplot_css))
            .route(
                "/v1/lag",
                axum::routing::get(move || {
                    let me = me.clone();
                    async move { axum::Json(me.page()) }
                }),
            )
    }
}

/// The page as a terminal table: per application its status, lag, MillisBehindLatest,
/// events/s, end-to-end p99 and parked records, then (with `shards`) each shard.
pub fn table(page: &LagPage, shards: bool) -> String {
    use std::fmt::Write;
    let opt = |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    let mut out = String::new();
    let at = page
        .lag
        .at
        .map_or("never".to_owned(), |t| t.format("%H:%M:%S").to_string());
    let _ = writeln!(out, "lag at {at} (every {} ms)", page.lag.every_ms);
    if let Some(e) = &page.lag.error {
        let _ = writeln!(out, "last look failed: {e}");
    }
    let _ = writeln!(
        out,
        "{:<18} {:<7} {:>8} {:>9} {:>9} {:>10} {:>7} {:>11}",
        "application", "status", "lag s", "MBL ms", "events/s", "e2e p99 ms", "parked", "oldest park"
    );
    for a in &page.lag.applications {
        let mbl = a.shards.iter().filter_map(|s| s.millis_behind_latest).max();
        let _ = writeln!(
            out,
            "{:<18} {:<7} {:>8.2} {:>9} {:>9} {:>10} {:>7} {:>11}",
            a.application,
            format!("{:?}", a.status).to_uppercase(),
            a.lag_ms as f64 / 1e3,
            mbl.map_or("-".to_owned(), |m| m.to_string()),
            opt(a.events_per_s, 1),
            opt(a.end_to_end_p99_ms, 0),
            a.parked.map_or("-".to_owned(), |n| n.to_string()),
            a.parked_oldest_age_s.map_or("-".to_owned(), |s| format!("{s:.0} s")),
        );
        if shards {
            for s in &a.shards {
                let _ = writeln!(
                    out,
                    "  {:<16} {:<7} {:>8.2} {:>9} {:>9}  owner {} heartbeat {:.0} s ago",
                    s.shard.trim_start_matches("shardId-"),
                    format!("{:?}", s.status).to_uppercase(),
                    s.lag_ms as f64 / 1e3,
                    s.millis_behind_latest.map_or("-".to_owned(), |m| m.to_string()),
                    opt(s.events_per_s, 1),
                    s.owner.as_deref().unwrap_or("none"),
                    s.heartbeat_age_ms as f64 / 1e3,
                );
            }
        }
    }
    for r in &page.replays {
        let _ = writeln!(
            out,
            "replay {} {:?} {}: {} read{}, {:.0} events/s{}",
            r.id,
            r.state,
            r.models.join(","),
            r.read,
            r.fraction.map_or(String::new(), |f| format!(" ({:.0} %)", f * 100.0)),
            r.events_per_s,
            r.eta_s.map_or(String::new(), |e| format!(", ETA {e:.0} s")),
        );
    }
    out
}

async fn read_replays(table: &cafe_replay::Replays) -> Result<Vec<Summary>, cafe_replay::ReplayError> {
    let now = chrono::Utc::now();
    let mut out = Vec::new();
    for meta in table.list().await? {
        if meta.state == cafe_replay::record::State::Dropped {
            continue;
        }
        let (meta, segments) = table.load(&meta.id).await?;
        out.push(Summary::of(&meta, &segments, now));
    }
    Ok(out)
}

/// The observers' routes the dashboard serves, for the server's OpenAPI document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(page, uplot_js, uplot_css, lag_json))]
struct DashboardDoc;

/// The dashboard's routes in the OpenAPI document (merged by the server that serves
/// them).
pub fn openapi() -> utoipa::openapi::OpenApi {
    <DashboardDoc as utoipa::OpenApi>::openapi()
}

/// `/metrics`, which every server of the application serves, for its document.
#[derive(utoipa::OpenApi)]
#[openapi(paths(metrics_text))]
struct MetricsDoc;

/// `/metrics` in the OpenAPI document.
pub fn metrics_openapi() -> utoipa::openapi::OpenApi {
    <MetricsDoc as utoipa::OpenApi>::openapi()
}

/// `GET /metrics`'s entry in the document (the route is `cafe_consumers::metrics::router`).
#[utoipa::path(get, path = "/metrics", tag = "observers", security((), ("bearer" = [])),
    responses((status = 200, description = "Every metric of the process, OpenMetrics text", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String), ObserverErrors))]
#[allow(dead_code)]
async fn metrics_text() {}

/// `GET /v1/lag`'s entry in the document (the route is a closure over the dashboard).
#[utoipa::path(get, path = "/v1/lag", tag = "observers", security((), ("bearer" = [])),
    responses((status = 200, description = "The lag page's data: every application's lag, statuses and history", content_type = "application/json", body = Object), ObserverErrors))]
#[allow(dead_code)]
async fn lag_json() {}

/// The lag dashboard (HTML; its data from `/v1/lag`).
#[utoipa::path(get, path = "/dashboard", tag = "observers", security((), ("bearer" = [])),
    responses((status = 200, description = "The page", content_type = "text/html; charset=utf-8", body = String), ObserverErrors))]
async fn page() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE)
}

/// The charting library the page uses (uPlot), served from here: no network.
#[utoipa::path(get, path = "/dashboard/assets/uPlot.iife.min.js", tag = "observers", security((), ("bearer" = [])),
    responses((status = 200, description = "uPlot", content_type = "text/javascript; charset=utf-8", body = String), ObserverErrors))]
async fn uplot_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], UPLOT_JS)
}

/// uPlot's style sheet.
#[utoipa::path(get, path = "/dashboard/assets/uPlot.min.css", tag = "observers", security((), ("bearer" = [])),
    responses((status = 200, description = "uPlot's CSS", content_type = "text/css; charset=utf-8", body = String), ObserverErrors))]
async fn uplot_css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], UPLOT_CSS)
}
