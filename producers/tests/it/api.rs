use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use cafe_events::{AggregateId, CustomerId, ItemId, OrderId, Sku, StoreId};
use cafe_producers::api;
use cafe_producers::publish::{FaultySink, KinesisSink, Publisher, PublisherConfig};
use cafe_producers::service::{CommandService, ServiceConfig};
use cafe_producers::store::{DynamoEventStore, EventStore};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::helpers::{auth, fresh_store, fresh_stream, read_stream};

struct App {
    router: Router,
    service: Arc<CommandService<DynamoEventStore, FaultySink<KinesisSink>>>,
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
}

async fn app() -> App {
    app_with(0, PublisherConfig::default(), ServiceConfig::default()).await
}

/// An app whose publisher fails `fail_per_mille` / 1000 of PutRecords entries.
async fn app_with(fail_per_mille: u64, publisher: PublisherConfig, service: ServiceConfig) -> App {
    let (kinesis, stream, sink) = fresh_stream(2).await;
    let service = Arc::new(CommandService::new(
        fresh_store().await,
        Publisher::new(FaultySink::new(sink, fail_per_mille, 7), publisher),
        service,
    ));
    App {
        router: auth().protect(api::router(service.clone()), None),
        service,
        kinesis,
        stream,
    }
}

/// One request: `(status, JSON body, replayed?)`.
async fn call(
    app: &App,
    path: &str,
    key: Option<&str>,
    content_type: Option<&str>,
    body: impl Into<Body>,
) -> (StatusCode, Value, bool) {
    let mut req = Request::post(path);
    // As whoever the tools send it as (the customer of an order: always c-1 here).
    req = req.header(
        "authorization",
        auth()
            .bearer(&cafe_producers::auth::sender(true, path, Some("c-1")))
            .unwrap(),
    );
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    let resp = app
        .router
        .clone()
        .oneshot(req.body(body.into()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let replayed = resp.headers().contains_key(api::REPLAYED);
    let retry_after = resp.headers().contains_key("retry-after");
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value: Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(retry_after, "503 must carry Retry-After");
    }
    (status, value, replayed)
}

async fn post(app: &App, path: &str, key: &str, body: Value) -> (StatusCode, Value, bool) {
    call(app, path, Some(key), Some("application/json"), body.to_string()).await
}

async fn menu(app: &App) {
    for (id, price) in [("latte", 525), ("muffin", 300)] {
        let (s, b, _) = post(
            app,
            "/v1/menu/items",
            &format!("menu-{id}"),
            json!({"item_id": id, "name": id, "category": "x", "price_cents": price}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
    }
}

fn order_body(order: &str) -> Value {
    json!({"order_id": order, "customer_id": "c-1", "store_id": "s-1",
           "lines": [{"item_id": "latte", "quantity": 2}, {"item_id": "muffin", "quantity": 1}]})
}

#[tokio::test]
async fn every_endpoint_happy_path() {
    let app = app().await;
    menu(&app).await;
    let (s, b, _) = post(&app, "/v1/orders", "o-1", order_body("o-1")).await;
    assert_eq!(
        (s, b["total_cents"].as_i64(), b["version"].as_u64()),
        (StatusCode::CREATED, Some(1350), Some(1)),
        "{b}"
    );
    let (s, b, _) = post(&app, "/v1/orders/o-1/cancel", "c-1", json!({"reason": "changed mind"})).await;
    assert_eq!((s, b["version"].as_u64()), (StatusCode::OK, Some(2)), "{b}");
    let (s, b, _) = post(
        &app,
        "/v1/stores/s-1/inventory/beans/restock",
        "r-1",
        json!({"quantity": 10}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b, _) = post(
        &app,
        "/v1/stores/s-1/inventory/beans/adjust",
        "a-1",
        json!({"delta": -10, "reason": "spoilage"}),
    )
    .await;
    assert_eq!(
        (s, b["events"].as_array().map(Vec::len)),
        (StatusCode::CREATED, Some(2)),
        "adjust + depleted: {b}"
    );
    let (s, b, _) = post(
        &app,
        "/v1/loyalty/c-1/earn",
        "e-1",
        json!({"points": 100, "order_id": "o-1"}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b, _) = post(&app, "/v1/loyalty/c-1/redeem", "d-1", json!({"points": 40})).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    // Status moves need payment first; the same command with a key is retried safely.
    let (s, b, _) = post(&app, "/v1/orders/o-1/status", "s-1", json!({"status": "preparing"})).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("illegal_transition")),
        "{b}"
    );
    let health = app
        .router
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);

    let (_, per_shard) = read_stream(&app.kinesis, &app.stream).await;
    assert_eq!(
        per_shard.iter().map(Vec::len).sum::<usize>(),
        2 + 2 + 1 + 2 + 1 + 1,
        "every event published"
    );
}

#[tokio::test]
async fn a_retry_with_the_same_key_answers_the_same_without_writing() {
    let app = app().await;
    menu(&app).await;
    let first = post(&app, "/v1/orders", "k", order_body("o-2")).await;
    let again = post(&app, "/v1/orders", "k", order_body("o-2")).await;
    assert_eq!((first.0, &first.1), (again.0, &again.1));
    assert!(!first.2 && again.2, "the retry is marked as replayed");
    let other = post(&app, "/v1/orders", "k", order_body("o-3")).await;
    assert_eq!(
        (other.0, other.1["error"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("idempotency_key_reused"))
    );
    let o3 = AggregateId::Order(OrderId::parse("o-3").unwrap());
    assert!(app.service.store().load(&o3).await.unwrap().is_empty());
}

/// `(case, path, idempotency key, content type, body, status, error code, first field path)`
type Case = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Option<&'static str>,
    String,
    StatusCode,
    &'static str,
    Option<&'static str>,
);

fn bad_inputs() -> Vec<Case> {
    use StatusCode as S;
    let json = Some("application/json");
    let k = Some("bad-key");
    let order = |v: Value| v.to_string();
    let line = |item: &str, q: Value| json!({"order_id": "o-bad", "customer_id": "c-1", "store_id": "s-1", "lines": [{"item_id": item, "quantity": q}]});
    vec![
        (
            "malformed json",
            "/v1/orders",
            k,
            json,
            "{\"order_id\": ".into(),
            S::BAD_REQUEST,
            "malformed_json",
            None,
        ),
        (
            "trailing garbage",
            "/v1/orders",
            k,
            json,
            format!("{} x", order_body("o-bad")),
            S::BAD_REQUEST,
            "malformed_json",
            None,
        ),
        (
            "wrong type",
            "/v1/orders",
            k,
            json,
            order(line("latte", json!("two"))),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("lines[0].quantity"),
        ),
        (
            "missing field",
            "/v1/orders",
            k,
            json,
            order(json!({"order_id": "o-bad", "customer_id": "c-1", "lines": []})),
            S::BAD_REQUEST,
            "invalid_fields",
            None,
        ),
        (
            "unknown field",
            "/v1/orders",
            k,
            json,
            order(json!({"order_id": "o-bad", "customer_id": "c", "store_id": "s", "lines": [], "price": 1})),
            S::BAD_REQUEST,
            "invalid_fields",
            None,
        ),
        (
            "negative quantity",
            "/v1/orders",
            k,
            json,
            order(line("latte", json!(-1))),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("lines[0].quantity"),
        ),
        (
            "zero quantity",
            "/v1/orders",
            k,
            json,
            order(line("latte", json!(0))),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("lines[0].quantity"),
        ),
        (
            "huge quantity",
            "/v1/orders",
            k,
            json,
            order(line("latte", json!(1u64 << 40))),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("lines[0].quantity"),
        ),
        (
            "no lines",
            "/v1/orders",
            k,
            json,
            order(json!({"order_id": "o-bad", "customer_id": "c-1", "store_id": "s-1", "lines": []})),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("lines"),
        ),
        (
            "bad id",
            "/v1/orders",
            k,
            json,
            order(
                json!({"order_id": "o bad", "customer_id": "c-1", "store_id": "s-1", "lines": [{"item_id": "latte", "quantity": 1}]}),
            ),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("order_id"),
        ),
        (
            "unknown item",
            "/v1/orders",
            k,
            json,
            order(line("unicorn-frappe", json!(1))),
            S::UNPROCESSABLE_ENTITY,
            "not_on_menu",
            None,
        ),
        (
            "no idempotency key",
            "/v1/orders",
            None,
            json,
            order_body("o-bad").to_string(),
            S::BAD_REQUEST,
            "missing_idempotency_key",
            None,
        ),
        (
            "wrong content type",
            "/v1/orders",
            k,
            Some("text/plain"),
            order_body("o-bad").to_string(),
            S::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
        ),
        (
            "no content type",
            "/v1/orders",
            k,
            None,
            order_body("o-bad").to_string(),
            S::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            None,
        ),
        (
            "oversize body",
            "/v1/orders",
            k,
            json,
            format!("{{\"pad\": \"{}\"}}", "x".repeat(70 * 1024)),
            S::PAYLOAD_TOO_LARGE,
            "body_too_large",
            None,
        ),
        (
            "unknown order status",
            "/v1/orders/o-bad/status",
            k,
            json,
            json!({"status": "teleported"}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("status"),
        ),
        (
            "status of missing order",
            "/v1/orders/o-bad/status",
            k,
            json,
            json!({"status": "ready"}).to_string(),
            S::NOT_FOUND,
            "order_not_found",
            None,
        ),
        (
            "cancel missing order",
            "/v1/orders/o-bad/cancel",
            k,
            json,
            json!({"reason": "x"}).to_string(),
            S::NOT_FOUND,
            "order_not_found",
            None,
        ),
        (
            "cancel reason too long",
            "/v1/orders/o-bad/cancel",
            k,
            json,
            json!({"reason": "x".repeat(201)}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("reason"),
        ),
        (
            "restock zero",
            "/v1/stores/s-bad/inventory/beans/restock",
            k,
            json,
            json!({"quantity": 0}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("quantity"),
        ),
        (
            "restock negative",
            "/v1/stores/s-bad/inventory/beans/restock",
            k,
            json,
            json!({"quantity": -5}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("quantity"),
        ),
        (
            "restock huge",
            "/v1/stores/s-bad/inventory/beans/restock",
            k,
            json,
            json!({"quantity": 1_000_000_000_000i64}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("quantity"),
        ),
        (
            "restock bad store id",
            "/v1/stores/s%23x/inventory/beans/restock",
            k,
            json,
            json!({"quantity": 1}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("store_id"),
        ),
        (
            "adjust below zero",
            "/v1/stores/s-bad/inventory/beans/adjust",
            k,
            json,
            json!({"delta": -1, "reason": "count"}).to_string(),
            S::UNPROCESSABLE_ENTITY,
            "insufficient_stock",
            None,
        ),
        (
            "adjust zero",
            "/v1/stores/s-bad/inventory/beans/adjust",
            k,
            json,
            json!({"delta": 0, "reason": "count"}).to_string(),
            S::UNPROCESSABLE_ENTITY,
            "quantity",
            None,
        ),
        (
            "adjust no reason",
            "/v1/stores/s-bad/inventory/beans/adjust",
            k,
            json,
            json!({"delta": 1}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            None,
        ),
        (
            "earn zero",
            "/v1/loyalty/c-bad/earn",
            k,
            json,
            json!({"points": 0}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("points"),
        ),
        (
            "earn float",
            "/v1/loyalty/c-bad/earn",
            k,
            json,
            json!({"points": 1.5}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("points"),
        ),
        (
            "redeem over balance",
            "/v1/loyalty/c-bad/redeem",
            k,
            json,
            json!({"points": 10}).to_string(),
            S::UNPROCESSABLE_ENTITY,
            "insufficient_points",
            None,
        ),
        (
            "redeem negative",
            "/v1/loyalty/c-bad/redeem",
            k,
            json,
            json!({"points": -10}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("points"),
        ),
        (
            "menu free item",
            "/v1/menu/items",
            k,
            json,
            json!({"item_id": "m-bad", "name": "n", "category": "c", "price_cents": 0}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("price_cents"),
        ),
        (
            "menu blank name",
            "/v1/menu/items",
            k,
            json,
            json!({"item_id": "m-bad", "name": " ", "category": "c", "price_cents": 100}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("name"),
        ),
        (
            "menu price as string",
            "/v1/menu/items",
            k,
            json,
            json!({"item_id": "m-bad", "name": "n", "category": "c", "price_cents": "100"}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("price_cents"),
        ),
        (
            "an array for an object",
            "/v1/stores/s-bad/inventory/beans/restock",
            k,
            json,
            "[5]".into(),
            S::BAD_REQUEST,
            "invalid_fields",
            None,
        ),
        (
            "a line as an array",
            "/v1/orders",
            k,
            json,
            order(json!({"order_id": "o-bad", "customer_id": "c-1", "store_id": "s-1", "lines": [["latte", 1]]})),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("lines[0]"),
        ),
        (
            "NUL in free text",
            "/v1/orders/o-bad/cancel",
            k,
            json,
            json!({"reason": "a\u{0}b"}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("reason"),
        ),
        (
            "a terminal escape in a name",
            "/v1/menu/items",
            k,
            json,
            json!({"item_id": "m-bad", "name": "\u{1b}[2J", "category": "x", "price_cents": 100}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("name"),
        ),
        (
            "a category over 64 characters",
            "/v1/menu/items",
            k,
            json,
            json!({"item_id": "m-bad", "name": "n", "category": "\u{2615}".repeat(65), "price_cents": 100}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("category"),
        ),
        (
            "a fraction for a whole number",
            "/v1/stores/s-bad/inventory/beans/restock",
            k,
            json,
            json!({"quantity": 2.5}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("quantity"),
        ),
        (
            "a dot-segment as a new id",
            "/v1/orders",
            k,
            json,
            order(
                json!({"order_id": "..", "customer_id": "c-1", "store_id": "s-1", "lines": [{"item_id": "latte", "quantity": 1}]}),
            ),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("order_id"),
        ),
        (
            "a dot-segment as a path id",
            "/v1/loyalty/%2E%2E/earn",
            k,
            json,
            json!({"points": 5}).to_string(),
            S::BAD_REQUEST,
            "invalid_fields",
            Some("customer_id"),
        ),
        (
            "invalid UTF-8 in a path",
            "/v1/loyalty/%FF/earn",
            k,
            json,
            json!({"points": 5}).to_string(),
            S::BAD_REQUEST,
            "invalid_path",
            None,
        ),
    ]
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_writes_nothing() {
    let app = app().await;
    menu(&app).await;
    let (before, _) = read_stream(&app.kinesis, &app.stream).await;
    let touched = [
        AggregateId::Order(OrderId::parse("o-bad").unwrap()),
        AggregateId::StockItem(StoreId::parse("s-bad").unwrap(), Sku::parse("beans").unwrap()),
        AggregateId::LoyaltyAccount(CustomerId::parse("c-bad").unwrap()),
        AggregateId::MenuItem(ItemId::parse("m-bad").unwrap()),
    ];
    for (case, path, key, ct, body, status, code, field) in bad_inputs() {
        let (s, b, _) = call(&app, path, key, ct, body).await;
        assert_eq!(s, status, "{case}: {b}");
        assert_eq!(b["error"].as_str(), Some(code), "{case}: {b}");
        assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()), "{case}: {b}");
        if let Some(field) = field {
            assert_eq!(b["fields"][0]["path"].as_str(), Some(field), "{case}: {b}");
        }
        for id in &touched {
            assert!(
                app.service.store().load(id).await.unwrap().is_empty(),
                "{case} wrote to {id}"
            );
        }
        let caller = cafe_producers::auth::sender(true, path, Some("c-1"));
        assert_eq!(
            app.service
                .store()
                .idempotency(&api::scoped_key(&caller, "bad-key"))
                .await
                .unwrap(),
            None,
            "{case} claimed the key"
        );
    }
    let (after, _) = read_stream(&app.kinesis, &app.stream).await;
    assert_eq!(before, after, "nothing reached the stream");
}

#[tokio::test]
async fn openapi_documents_every_command_endpoint_and_every_documented_path_routes() {
    let app = app().await;
    let resp = app
        .router
        .clone()
        .oneshot(Request::get("/openapi.json").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let doc: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let paths: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let mut expected = vec![
        "/healthz",
        "/openapi.json",
        "/v1/menu/items",
        "/v1/orders",
        "/v1/orders/{id}/cancel",
        "/v1/orders/{id}/status",
        "/v1/loyalty/{customer}/earn",
        "/v1/loyalty/{customer}/redeem",
        "/v1/stores/{store}/inventory/{sku}/adjust",
        "/v1/stores/{store}/inventory/{sku}/restock",
    ];
    expected.sort();
    let mut got = paths.clone();
    got.sort();
    assert_eq!(got, expected);
    for path in paths
        .iter()
        .filter(|p| !["/healthz", "/openapi.json"].contains(&p.as_str()))
    {
        let op = &doc["paths"][path]["post"];
        assert!(
            op["requestBody"]["content"]["application/json"]["schema"].is_object(),
            "{path}: no request schema"
        );
        for status in ["400", "401", "403", "408", "413", "415", "422", "429", "503"] {
            assert!(op["responses"][status].is_object(), "{path}: {status} undocumented");
        }
        // Every documented path is routed: an empty body reaches the handler (400), not the fallback (404).
        let concrete = path
            .replace("{id}", "o-x")
            .replace("{customer}", "c-x")
            .replace("{store}", "s-x")
            .replace("{sku}", "k-x");
        let (status, body, _) = call(&app, &concrete, Some("k"), Some("application/json"), "{}").await;
        assert_ne!(
            body["error"].as_str(),
            Some("no_route"),
            "{path} is documented but not routed ({status})"
        );
    }
    for schema in ["PlaceOrderBody", "Accepted", "ApiError", "FieldError"] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema} missing");
    }
    // Fields carry the constraints the server enforces, so a generated client or a
    // fuzzer sees the same rules.
    let schemas = &doc["components"]["schemas"];
    assert_eq!(schemas["Tag"]["minLength"], 1, "{}", schemas["Tag"]);
    assert_eq!(schemas["MenuItemBody"]["properties"]["category"]["maxLength"], 64);
    assert_eq!(schemas["LineBody"]["properties"]["quantity"]["maximum"], 20);
    assert!(schemas["PlaceOrderBody"]["properties"]["order_id"]["pattern"].is_string());
    // Every command needs a bearer token; the health check does not.
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(doc["security"][0]["bearer"], json!([]));
    assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([{}]));
    assert_eq!(doc["paths"]["/openapi.json"]["get"]["security"], json!([{}]));
}

/// Real saturation: a publish that Kinesis keeps refusing holds the whole in-flight
/// budget, so the next command is refused with 503 + Retry-After before it writes.
#[tokio::test]
async fn a_saturated_publisher_answers_503_and_the_refused_command_writes_nothing() {
    let publisher = PublisherConfig {
        max_in_flight_bytes: 1024,
        max_attempts: 15,
        base_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_millis(200),
        ..PublisherConfig::default()
    };
    let app = Arc::new(app_with(1000, publisher, ServiceConfig::default()).await);
    let first = {
        let app = app.clone();
        tokio::spawn(async move { post(&app, "/v1/loyalty/c-1/earn", "e-1", json!({"points": 10})).await })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !app.service.publisher().is_saturated() {
        assert!(
            std::time::Instant::now() < deadline,
            "the first publish never took the budget"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    let (s, b, _) = post(&app, "/v1/loyalty/c-2/earn", "e-2", json!({"points": 10})).await;
    assert_eq!(
        (s, b["error"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("saturated")),
        "{b}"
    );
    let c2 = AggregateId::LoyaltyAccount(CustomerId::parse("c-2").unwrap());
    assert!(
        app.service.store().load(&c2).await.unwrap().is_empty(),
        "a 503 writes nothing"
    );

    // The first command was stored; Kinesis refusing it is the relay's problem, not the client's.
    let (s, b, _) = first.await.unwrap();
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert!(!app.service.publisher().is_saturated(), "the budget is given back");
    let (s, b, _) = post(&app, "/v1/loyalty/c-2/earn", "e-2", json!({"points": 10})).await;
    assert_eq!(s, StatusCode::CREATED, "the retry after Retry-After goes through: {b}");
}

/// Without internal retries, concurrent commands on one aggregate lose the race with a
/// 409 JSON error, and the winners' versions stay consecutive.
#[tokio::test]
async fn a_lost_race_answers_409_and_leaves_no_gap() {
    let cfg = ServiceConfig {
        conflict_retries: 0,
        ..ServiceConfig::default()
    };
    let app = Arc::new(app_with(0, PublisherConfig::default(), cfg).await);
    let c1 = AggregateId::LoyaltyAccount(CustomerId::parse("c-1").unwrap());
    let mut conflicts = 0;
    let mut created = 0;
    // Ten at once nearly always collide; a few rounds make a 409 certain in practice.
    for round in 0..5 {
        let calls: Vec<_> = (0..10)
            .map(|i| {
                let app = app.clone();
                tokio::spawn(async move {
                    post(
                        &app,
                        "/v1/loyalty/c-1/earn",
                        &format!("k-{round}-{i}"),
                        json!({"points": 1}),
                    )
                    .await
                })
            })
            .collect();
        for c in calls {
            let (s, b, _) = c.await.unwrap();
            match s {
                StatusCode::CREATED => created += 1,
                StatusCode::CONFLICT => {
                    assert_eq!(b["error"], "version_conflict", "{b}");
                    assert!(b["message"].is_string(), "{b}");
                    conflicts += 1;
                }
                other => panic!("{other}: {b}"),
            }
        }
        let versions: Vec<u64> = app
            .service
            .store()
            .load(&c1)
            .await
            .unwrap()
            .iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(versions, (1..=created).collect::<Vec<u64>>(), "no gap, no duplicate");
        if conflicts > 0 {
            break;
        }
    }
    assert!(conflicts > 0, "fifty concurrent commands never collided");
}

#[tokio::test]
async fn a_wrong_method_is_a_json_405_naming_the_allowed_ones() {
    let app = app().await;
    let resp = app
        .router
        .clone()
        .oneshot(Request::delete("/v1/orders").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "POST");
    let body: Value = serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"], "method_not_allowed");
}
