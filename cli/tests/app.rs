//! The application started as a library, in-process on port 0, the way tests and
//! benches embed it: it takes commands, answers queries from its projectors' read
//! models, serves one `/metrics` with every consumer application's series, and stops
//! with every stage drained.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cafe_app::dashboard::LagPage;
use cafe_app::{Application, Settings, load};
use cafe_consumers::cloudwatch::CloudWatchConfig;
use common::Sandbox;

/// The value of an unlabelled series in Prometheus text (NaN when absent).
fn value_of(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_in_process_serves_commands_queries_and_one_metrics_page() {
    let sandbox = Sandbox::new();
    sandbox.cafe(&["stack", "up"]);
    let mut settings = Settings::local(sandbox.config());
    // The saga runs too: the payment function as a process under the Lambda emulator,
    // found beside the binaries. A message already dead-lettered shows in its metrics.
    assert!(settings.saga);
    let clients = cafe_app::pipeline::Clients::new(&settings.stack, false).await;
    let dlq = cafe_app::payments::queue_url(&clients.sqs, &settings.stack.names.payments_dlq)
        .await
        .unwrap();
    for i in 0..3 {
        clients
            .sqs
            .send_message()
            .queue_url(&dlq)
            .message_body(format!("{{\"order_id\":\"o-dead-{i}\"}}"))
            .send()
            .await
            .unwrap();
    }
    let namespace = format!("CloudCafe/AppIt-{}", std::process::id());
    settings.cloudwatch = Some(CloudWatchConfig {
        namespace: namespace.clone(),
        every: Duration::from_secs(1),
        ..CloudWatchConfig::new(&namespace, &settings.stack.names.stream)
    });
    let stream = settings.stack.names.stream.clone();
    let app = Application::build(settings).await.unwrap();
    let addr = app.addr();
    assert_ne!(addr.port(), 0, "port 0 is resolved at build time");
    let running = app.start().await.unwrap();
    let base = format!("http://{addr}");
    let http = load::client(running.config()).unwrap();
    load::seed_menu(&http, &base).await.unwrap();
    let report = load::orders(&http, &base, 20, 16, tokio::time::sleep(Duration::from_secs(2))).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    let order = report.accepted.iter().next().expect("an order was accepted").clone();

    let (status, body) = load::get(&http, &base, &format!("/v1/orders/{order}?min_version=1"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["order_id"], order.as_str());

    // The HTTP server counts each request by its route's pattern and status; an
    // unknown path is one "unmatched" series, not a series per path.
    let (status, _) = load::get(&http, &base, "/no/such/path/42").await.unwrap();
    assert_eq!(status, 404);
    let api = running.http_metrics();
    assert_eq!(api.count("/v1/orders", "POST", 201), report.accepted.len() as u64);
    assert_eq!(api.count("/v1/orders/{id}", "GET", 200), 1);
    assert_eq!(api.count("unmatched", "GET", 404), 1);
    assert_eq!(
        api.latency("/v1/orders").map(|l| l.count()),
        Some(report.sent),
        "every order POST timed"
    );

    // One registry for the process: a series per consumer application, not a page per
    // projector (or none, as when each worker had an unregistered set).
    let (status, metrics) = load::get_bytes(&http, &base, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    let metrics = String::from_utf8_lossy(&metrics);
    for app in running.applications() {
        let series = format!("cafe_consumer_records_total{{application=\"{app}\"");
        assert!(metrics.contains(&series), "{series} missing from:\n{metrics}");
    }
    for series in [
        "cafe_api_requests_total{route=\"/v1/orders\",method=\"POST\",status=\"201\"}",
        "cafe_api_request_seconds_count{route=\"/v1/orders\"}",
        "cafe_producer_events_published_total",
        "cafe_producer_kinesis_records_total",
        "cafe_producer_put_throttles_total 0",
        "cafe_producer_put_failures_total 0",
        "cafe_producer_in_flight_bytes ",
        "cafe_producer_outbox_pending 0",
        "cafe_producer_relay_republished_total ",
        "cafe_payment_invocations_total ",
        "cafe_payment_messages_failed_total ",
        "cafe_payment_queue_depth ",
        "cafe_payment_queue_age_seconds ",
    ] {
        assert!(metrics.contains(series), "{series} missing from:\n{metrics}");
    }
    // The saga's figures: every order's payment request finished, the queue sampled
    // empty after that, and the three dead letters counted (depths are sampled every
    // few seconds, so read until a sample after the last request shows).
    let orders = report.accepted.len() as f64;
    let mut metrics = metrics.into_owned();
    let mut drained_at = None;
    for _ in 0..150 {
        let done = value_of(&metrics, "cafe_payment_messages_done_total");
        if done >= orders && drained_at.is_none() {
            drained_at = Some(std::time::Instant::now());
        }
        let sampled_since = drained_at.is_some_and(|t| t.elapsed() > Duration::from_secs(6));
        if sampled_since && value_of(&metrics, "cafe_payment_queue_depth") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        metrics = String::from_utf8_lossy(&load::get_bytes(&http, &base, "/metrics").await.unwrap().1).into_owned();
    }
    assert!(
        value_of(&metrics, "cafe_payment_messages_done_total") >= orders,
        "{metrics}"
    );
    assert_eq!(value_of(&metrics, "cafe_payment_queue_depth"), 0.0, "{metrics}");
    assert_eq!(value_of(&metrics, "cafe_payment_dlq_depth"), 3.0, "{metrics}");
    assert!(value_of(&metrics, "cafe_producer_events_published_total") >= report.accepted.len() as f64);

    // The lag dashboard on the same server: the page, its chart library from the
    // binary, and the data it polls.
    let (status, html) = load::get_bytes(&http, &base, "/dashboard").await.unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&html).contains("/dashboard/assets/uPlot.iife.min.js"));
    let (status, js) = load::get_bytes(&http, &base, "/dashboard/assets/uPlot.iife.min.js")
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(js.len() > 40_000 && String::from_utf8_lossy(&js).contains("uPlot"));
    let mut page = LagPage::default();
    for _ in 0..50 {
        let (status, body) = load::get_bytes(&http, &base, "/v1/lag").await.unwrap();
        assert_eq!(status, 200);
        page = serde_json::from_slice(&body).unwrap();
        if page.lag.history.t.len() >= 3 && page.lag.applications.iter().all(|a| a.events_per_s.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let names: Vec<&str> = page.lag.applications.iter().map(|a| a.application.as_str()).collect();
    assert_eq!(names.len(), 7, "{names:?}");
    assert!(page.lag.history.t.len() >= 3, "{:?}", page.lag.history);
    for a in &page.lag.applications {
        assert!(!a.shards.is_empty(), "{a:?}");
        assert!(a.events_per_s.is_some(), "{a:?}");
        assert!(a.parked.is_some(), "the parking lot is read: {a:?}");
        assert!(page.lag.history.lag_s.contains_key(&a.application));
    }

    // The same figures, typed, without parsing the text: every application applied
    // events, timed each by its own occurred_at, and checkpointed.
    let snapshot = running.consumer_metrics().snapshot();
    for app in running.applications() {
        let shards: Vec<_> = snapshot.shards.iter().filter(|s| s.application == app).collect();
        assert!(!shards.is_empty(), "{app}: {snapshot:?}");
        assert!(shards.iter().map(|s| s.records).sum::<u64>() > 0, "{app}");
        assert!(shards.iter().all(|s| s.checkpoint_timestamp.is_some()), "{app}");
        let lag = shards
            .iter()
            .filter_map(|s| s.projection_lag_seconds)
            .fold(f64::NAN, f64::max);
        assert!((0.0..60.0).contains(&lag), "{app}: projection lag {lag}");
        let (_, e2e) = snapshot.end_to_end.iter().find(|(a, _)| a == app).unwrap();
        assert!(e2e.count() > 0, "{app}");
        let p99 = e2e.quantile(0.99).unwrap();
        assert!(p99 < 60.0, "{app}: end-to-end p99 {p99}");
    }

    let stopped = running.stop(Duration::from_secs(20)).await.unwrap();
    assert!(stopped.undone.is_empty(), "{:?}", stopped.undone);
    assert!(stopped.relay.is_some());
    assert_eq!(stopped.projectors.len(), 7, "six read models and the payment requests");
    for (name, r) in &stopped.projectors {
        assert!(r.records > 0, "{name} processed nothing: {r:?}");
        assert!(r.shards_abandoned.is_empty(), "{name}: {r:?}");
    }
    // Stopped means stopped: the port no longer answers.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());

    // The publisher sent to CloudWatch (moto) while it ran, and once more at the stop:
    // what every projector applied is there, per application.
    let cfg = sandbox.config();
    let cw = cafe_localstack::aws::cloudwatch(&cafe_localstack::aws::sdk_config(&cfg).await, &cfg);
    for (name, r) in &stopped.projectors {
        let sum: f64 = cafe_localstack::testing::metric_values(
            &cw,
            &namespace,
            cafe_consumers::metrics::RECORDS,
            "Sum",
            &[("Stream", &stream), ("Application", name)],
        )
        .await
        .iter()
        .sum();
        assert_eq!(sum, r.records as f64, "{name} in CloudWatch");
    }
}
