//! The query endpoints over real read models: answers with versions, read-your-writes
//! waits, and bad input refused with the API's JSON errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cafe_events::DomainEvent;
use cafe_projections::history::{self, HistoryConfig};
use cafe_projections::query::{ReadModels, router};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::conformance::apply_sharded;

async fn models() -> (Arc<ReadModels>, Vec<cafe_events::EventEnvelope>) {
    let history = history::generate(HistoryConfig {
        orders: 40,
        customers: 4,
        ..HistoryConfig::default()
    });
    let orders = crate::postgres::fresh().await;
    let active = crate::active_orders::fresh().await;
    apply_sharded(&orders, &history, 1).await;
    apply_sharded(&active, &history, 1).await;
    let models = ReadModels {
        orders,
        active,
        wait: Duration::from_millis(600),
    };
    (Arc::new(models), history)
}

async fn get(models: &Arc<ReadModels>, uri: &str) -> (StatusCode, serde_json::Value, Option<String>) {
    let resp = router(models.clone())
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap(), retry)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_carry_versions_and_min_version_waits_then_gives_up_with_503() {
    let (models, history) = models().await;
    let placed = history
        .iter()
        .find_map(|e| match &e.event {
            DomainEvent::OrderPlaced(p) => Some(p.clone()),
            _ => None,
        })
        .unwrap();
    let last = history
        .iter()
        .rfind(|e| e.aggregate_id.to_string() == placed.order_id)
        .unwrap()
        .version;
    let (status, body, _) = get(&models, &format!("/v1/orders/{}", placed.order_id)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["version"], last);
    assert_eq!(body["total_cents"], placed.total_cents);

    // Caught up already: answered at once.
    let (status, _, _) = get(&models, &format!("/v1/orders/{}?min_version={last}", placed.order_id)).await;
    assert_eq!(status, StatusCode::OK);

    // A version the model never reaches: waits the bound, then 503 + Retry-After.
    let started = Instant::now();
    let (status, body, retry) = get(
        &models,
        &format!("/v1/orders/{}?min_version={}", placed.order_id, last + 1),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["error"], "read_model_behind");
    assert_eq!(retry.as_deref(), Some("1"));
    assert!(started.elapsed() >= Duration::from_millis(600));

    // An order the model does not have: 404, or 503 when the caller says it exists.
    let (status, body, _) = get(&models, "/v1/orders/order-999999").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (status, _, _) = get(&models, "/v1/orders/order-999999?min_version=1").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // The customer's list, with read-your-writes on one of its orders.
    let (status, list, _) = get(
        &models,
        &format!("/v1/customers/{}/orders?limit=100", placed.customer_id),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let items = list["items"].as_array().unwrap();
    assert!(!items.is_empty());
    let first = &items[0];
    let uri = format!(
        "/v1/customers/{}/orders?wait_for={}&min_version={}",
        placed.customer_id,
        first["order_id"].as_str().unwrap(),
        first["version"]
    );
    let (status, list, _) = get(&models, &uri).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["version"], first["version"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_input_is_a_400_with_the_field_named() {
    let (models, _) = models().await;
    let cases = [
        ("/v1/orders/bad%20id", "order_id"),
        ("/v1/orders/order-000001?min_version=0", "min_version"),
        ("/v1/orders/order-000001?min_version=-3", "min_version"),
        ("/v1/orders/order-000001?min_version=abc", "min_version"),
        ("/v1/customers/customer-00001/orders?limit=0", "limit"),
        ("/v1/customers/customer-00001/orders?limit=101", "limit"),
        ("/v1/customers/customer-00001/orders?limit=x", "limit"),
        ("/v1/customers/customer-00001/orders?min_version=2", "wait_for"),
        ("/v1/customers/bad%23id/orders", "customer_id"),
    ];
    for (uri, field) in cases {
        let (status, body, _) = get(&models, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"], "invalid_fields", "{uri}");
        assert_eq!(body["fields"][0]["path"], field, "{uri}: {body}");
    }
}
