//! The saga end to end on the local stack: `POST /v1/orders` → event store → Kinesis →
//! the payment-requests consumer → SQS → the event source mapping → the Lambda emulator
//! → the function's own binary (the `main` that `cargo lambda build` packages) →
//! `PaymentAuthorized` / `PaymentDeclined` on the order → Kinesis → the Aurora orders
//! read model, where the order is read back.
//!
//! The function runs as its own process under a Lambda emulator of this test's own: the
//! emulator knows functions by the workspace's binary names, so on the shared one a
//! `cafe run` (the main job's test) serving the same name could take this test's
//! invocations with its own tables.

use std::path::Path;
use std::time::Duration;

use axum::body::Body;
use cafe_events::proto::orders::v1::OrderStatus;
use cafe_lambda_payment::requests::PaymentRequests;
use cafe_localstack::Service;
use cafe_localstack::lambda::{EmulatorInvoker, EventSourceMapping, MappingConfig, spawn_function};
use cafe_localstack::testing::{PrivateStack, eventually};
use cafe_producers::domain::order::status_name;
use cafe_projections::Projector;
use cafe_projections::postgres::orders::PgOrdersView;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::helpers::*;

const FUNCTION: &str = "cafe-lambda-payment";

async fn post(router: &axum::Router, path: &str, key: &str, body: serde_json::Value) -> u16 {
    let who = cafe_producers::auth::sender(true, path, body["customer_id"].as_str());
    let request = axum::http::Request::post(path)
        .header("authorization", auth().bearer(&who).unwrap())
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.to_string()))
        .unwrap();
    router.clone().oneshot(request).await.unwrap().status().as_u16()
}

fn auth() -> &'static cafe_producers::api::guard::LocalAuth {
    static AUTH: std::sync::OnceLock<cafe_producers::api::guard::LocalAuth> = std::sync::OnceLock::new();
    AUTH.get_or_init(|| cafe_producers::api::guard::LocalAuth::ephemeral().unwrap())
}

#[tokio::test]
async fn placed_orders_end_paid_declined_or_paid_after_a_retry() {
    let world = World::new().await;
    let emulator = PrivateStack::start(&[Service::Lambda]).await;
    let mut cfg = world.cfg.clone();
    cfg.ports.lambda = emulator.config().ports.lambda;
    let (queue, dlq) = world.queue().await;

    // The function, configured as its deployment would be.
    let mut names = world.cfg.names.clone();
    names.events_table.clone_from(&world.events_table);
    names.idempotency_table.clone_from(&world.idempotency_table);
    names.stream.clone_from(&world.stream);
    let mut env = names.env(cafe_settings::units::PAYMENT_FUNCTION.names);
    env.extend(
        [
            ("CAFE_GATEWAY_BLOCKED", "c-blocked"),
            ("CAFE_GATEWAY_FLAKY", "c-flaky:1"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let mut function = spawn_function(
        &cfg,
        Path::new(env!("CARGO_BIN_EXE_cafe-lambda-payment")),
        FUNCTION,
        &env,
    )
    .unwrap();

    // On this test's stream: the consumer that turns OrderPlaced into payment requests,
    // and the Aurora orders projector the order is read back from.
    let leases = world.leases_table().await;
    let orders_view = PgOrdersView::connect(
        &world.cfg.postgres_url(&world.cfg.names.orders_database),
        &unique("it_pay").replace('-', "_"),
    )
    .await
    .unwrap();
    let stop_workers = CancellationToken::new();
    let workers = [
        world.spawn_worker(
            &leases,
            "payment-requests",
            PaymentRequests::new(world.sqs.clone(), &queue),
            &stop_workers,
        ),
        world.spawn_worker(&leases, "orders", Projector::new(orders_view.clone()), &stop_workers),
    ];

    // The event source mapping, invoking through the emulator.
    let mapping = EventSourceMapping::new(
        world.sqs.clone(),
        &queue,
        EmulatorInvoker::new(&cfg, FUNCTION, Duration::from_secs(30)),
        MappingConfig {
            visibility_timeout: Duration::from_secs(3),
            ..MappingConfig::default()
        },
    )
    .await
    .unwrap();
    let stats = mapping.stats();
    let (stop_mapping, stopped) = watch::channel(false);
    let mapping = tokio::spawn(mapping.run(stopped));

    // Clients order through the command API.
    let router = auth().protect(cafe_producers::api::router(world.orders.clone()), None);
    let menu = serde_json::json!({"item_id": "latte", "name": "latte", "category": "coffee", "price_cents": PRICE});
    assert_eq!(post(&router, "/v1/menu/items", "menu-latte", menu).await, 201);
    for (order, customer) in [("o-paid", "c-1"), ("o-declined", "c-blocked"), ("o-retried", "c-flaky")] {
        let body = serde_json::json!({
            "order_id": order, "customer_id": customer, "store_id": "store-1",
            "lines": [{"item_id": "latte", "quantity": 2}],
        });
        assert_eq!(post(&router, "/v1/orders", order, body).await, 201, "{order}");
    }

    let expected = [
        ("o-paid", OrderStatus::Paid),
        ("o-declined", OrderStatus::PaymentDeclined),
        ("o-retried", OrderStatus::Paid),
    ];
    // The orders read model (Aurora's role) is where a client reads the order.
    eventually("every order read back settled", Duration::from_secs(60), async || {
        for (order, status) in expected {
            let read = orders_view.order(order).await.unwrap();
            if read.map(|o| o.status) != Some(status_name(status).to_owned()) {
                return false;
            }
        }
        true
    })
    .await;
    for (order, status) in expected {
        assert_eq!(world.status(order).await, Some(status), "{order} in the event store");
        assert_eq!(world.payment_events(order).await, 1, "{order}");
    }
    // Stopping lets the invocation in flight finish its deletes.
    stop_mapping.send(true).unwrap();
    mapping.await.unwrap();
    // The flaky customer's payment failed once and came back after its visibility
    // timeout: one more message received than orders, one reported failure.
    let counts = stats.counts();
    assert_eq!(
        (counts.failed_invocations, counts.reported_failures, counts.deleted),
        (0, 1, 3)
    );
    assert_eq!(counts.received, 4);
    assert!(drain(&world.sqs, &dlq, Duration::from_secs(30)).await.is_empty());

    stop_workers.cancel();
    for worker in workers {
        worker.await.unwrap();
    }
    function.kill().await.unwrap();
}
