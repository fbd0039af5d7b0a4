//! The query endpoints over real read models: answers with versions, read-your-writes
//! waits, and bad input refused with the API's JSON errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use cafe_events::DomainEvent;
use cafe_producers::api::guard::LocalAuth;
use cafe_producers::auth::{Caller, Role};
use cafe_projections::cache::CachedReads;
use cafe_projections::history::{self, HistoryConfig};
use cafe_projections::query::{ReadModels, Reads, router};
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
    let documents = crate::documents::fresh().await;
    let inventory = crate::inventory::fresh().await;
    let cache = crate::cache::fresh().await;
    apply_sharded(&orders, &history, 1).await;
    apply_sharded(&active, &history, 1).await;
    apply_sharded(&documents, &history, 1).await;
    apply_sharded(&inventory, &history, 1).await;
    let models = ReadModels {
        menu: CachedReads::new(cache.clone(), documents),
        loyalty: CachedReads::new(cache, orders.clone()),
        orders,
        active,
        inventory,
        wait: Duration::from_millis(600),
    };
    (Arc::new(models), history)
}

async fn get(models: &Arc<ReadModels>, uri: &str) -> (StatusCode, serde_json::Value, Option<String>) {
    let (status, body, headers) = get_with_headers(models, uri).await;
    (
        status,
        body,
        headers.get("retry-after").map(|v| v.to_str().unwrap().to_owned()),
    )
}

async fn get_with_headers(
    models: &Arc<ReadModels>,
    uri: &str,
) -> (StatusCode, serde_json::Value, axum::http::HeaderMap) {
    get_as(models, uri, Some(&cafe_producers::auth::sender(false, uri, None))).await
}

/// The tests' identity provider.
fn auth() -> &'static LocalAuth {
    static AUTH: std::sync::OnceLock<LocalAuth> = std::sync::OnceLock::new();
    AUTH.get_or_init(|| LocalAuth::ephemeral().unwrap())
}

/// A GET as `caller` (None: without a token).
async fn get_as(
    models: &Arc<ReadModels>,
    uri: &str,
    caller: Option<&Caller>,
) -> (StatusCode, serde_json::Value, axum::http::HeaderMap) {
    get_with(models, uri, caller.map(|c| auth().bearer(c).unwrap())).await
}

/// A GET with this `Authorization` value (None: without).
async fn get_with(
    models: &Arc<ReadModels>,
    uri: &str,
    authorization: Option<String>,
) -> (StatusCode, serde_json::Value, axum::http::HeaderMap) {
    let mut request = Request::get(uri);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let request = request.body(Body::empty()).unwrap();
    let resp = auth()
        .protect(router(Reads::Fixed(models.clone())), None)
        .oneshot(request)
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap(), headers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_carry_versions_and_min_version_waits_then_gives_up_with_503() {
    let (models, history) = models().await;
    let (placed, last) = crate::helpers::first_order(&history);
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
        ("/v1/menu/items?min_version=1", "wait_for"),
        ("/v1/menu/items?min_version=x&wait_for=item-001", "min_version"),
        ("/v1/loyalty/bad%20id", "customer_id"),
        ("/v1/loyalty/customer-00001?min_version=0", "min_version"),
        ("/v1/stores/bad%23store/inventory", "store_id"),
        ("/v1/stores/store-000/inventory?min_version=3", "wait_for"),
    ];
    for (uri, field) in cases {
        let (status, body, _) = get(&models, uri).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        assert_eq!(body["error"], "invalid_fields", "{uri}");
        assert_eq!(body["fields"][0]["path"], field, "{uri}: {body}");
    }
}

/// Menu (cache → DocumentDB), loyalty (cache → Aurora) and inventory (MemoryDB) read
/// back what the history left, the cache missing first and hitting after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn menu_loyalty_and_inventory_read_through_their_models() {
    let (models, history) = models().await;
    let (status, menu, headers) = get_with_headers(&models, "/v1/menu/items?category=coffee").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-cache"], "miss");
    let items = menu["items"].as_array().unwrap();
    assert!(!items.is_empty() && items.iter().all(|i| i["category"] == "coffee" && i["retired"] == false));
    let (_, again, headers) = get_with_headers(&models, "/v1/menu/items?category=coffee").await;
    assert_eq!((headers["x-cache"].to_str().unwrap(), &again), ("hit", &menu));
    let first = items[0]["item_id"].as_str().unwrap();
    let uri = format!(
        "/v1/menu/items?category=coffee&wait_for={first}&min_version={}",
        items[0]["version"]
    );
    assert_eq!(get(&models, &uri).await.0, StatusCode::OK);

    let (customer, balance, version) = history
        .iter()
        .filter_map(|e| match &e.event {
            DomainEvent::PointsEarned(p) => Some((p.customer_id.clone(), p.balance_after, e.version)),
            DomainEvent::PointsRedeemed(p) => Some((p.customer_id.clone(), p.balance_after, e.version)),
            _ => None,
        })
        .next_back()
        .unwrap();
    let (status, account, headers) =
        get_with_headers(&models, &format!("/v1/loyalty/{customer}?min_version={version}")).await;
    assert_eq!(status, StatusCode::OK, "{account}");
    assert_eq!(account["balance"], balance);
    assert_eq!(headers["x-cache"], "miss");
    let (_, _, headers) = get_with_headers(&models, &format!("/v1/loyalty/{customer}")).await;
    assert_eq!(headers["x-cache"], "hit");

    let (store, sku, on_hand, version) = history
        .iter()
        .filter_map(|e| match &e.event {
            DomainEvent::StockReserved(s) => Some((s.store_id.clone(), s.sku.clone(), s.on_hand_after, e.version)),
            _ => None,
        })
        .next_back()
        .unwrap();
    let (status, stock, _) = get(
        &models,
        &format!("/v1/stores/{store}/inventory?wait_for={sku}&min_version={version}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let row = stock["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["sku"] == sku.as_str())
        .unwrap();
    assert!(row["version"].as_u64().unwrap() >= version);
    if row["version"] == version {
        assert_eq!(row["on_hand"], on_hand);
    }
    assert_eq!(stock["version"], row["version"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_route_for_every_caller() {
    let (models, history) = models().await;
    let (placed, _) = crate::helpers::first_order(&history);
    let (me, store) = (placed.customer_id.clone(), placed.store_id.clone());
    let other_store = if store == "store-99999" {
        "store-99998"
    } else {
        "store-99999"
    };
    let person = |subject: &str, role: Role| Caller {
        subject: subject.into(),
        role,
    };
    let staff = |store: &str| person("barista-1", Role::Staff { store: store.into() });
    let callers = [
        person(&me, Role::Customer),
        person("cust-somebody-else", Role::Customer),
        staff(&store),
        staff(other_store),
        person("hq-1", Role::Headquarters),
        person("sre-1", Role::Operator),
    ];
    // Tokens that must not get in, on every route: HQ's claims, broken one way each.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let issuer = &auth().issuer;
    let claims = |iss: &str, aud: &str, exp: u64| serde_json::json!({"iss": iss, "aud": aud, "sub": "hq-1", "role": "hq", "exp": exp});
    let (iss, aud) = (issuer.issuer.clone(), issuer.audience.clone());
    let valid = issuer.sign(&claims(&iss, &aud, now + 600)).unwrap();
    let bad_tokens = [
        ("expired", issuer.sign(&claims(&iss, &aud, now - 120)).unwrap()),
        (
            "wrong audience",
            issuer.sign(&claims(&iss, "another-api", now + 600)).unwrap(),
        ),
        (
            "wrong issuer",
            issuer.sign(&claims("https://evil.example", &aud, now + 600)).unwrap(),
        ),
        ("tampered", {
            // One character of the signature changed (not its last, whose low bits
            // base64 may drop).
            let at = valid.len() - 10;
            let other = if &valid[at..=at] == "A" { "B" } else { "A" };
            format!("{}{other}{}", &valid[..at], &valid[at + 1..])
        }),
    ];
    // Who may, in `callers`' order: the order's customer, another customer, the
    // order's store's staff, another store's, headquarters, an operator.
    let routes: [(String, [bool; 6]); 5] = [
        (
            format!("/v1/orders/{}", placed.order_id),
            [true, false, true, false, true, false],
        ),
        (
            format!("/v1/customers/{me}/orders"),
            [true, false, false, false, true, false],
        ),
        (format!("/v1/loyalty/{me}"), [true, false, false, false, true, false]),
        (
            format!("/v1/stores/{store}/inventory"),
            [false, false, true, false, true, false],
        ),
        ("/v1/menu/items".to_owned(), [true, true, true, true, true, true]),
    ];
    for (uri, allowed) in &routes {
        for (caller, may) in callers.iter().zip(allowed) {
            let (status, body, _) = get_as(&models, uri, Some(caller)).await;
            if *may {
                // The customer's loyalty account may not exist in this history.
                assert!(
                    matches!(status.as_u16(), 200 | 404),
                    "{uri} as {caller:?}: {status} {body}"
                );
            } else {
                assert_eq!(status, StatusCode::FORBIDDEN, "{uri} as {caller:?}: {body}");
            }
        }
        let (status, body, headers) = get_as(&models, uri, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} without a token: {body}");
        assert!(headers.contains_key("www-authenticate"));
        for (kind, token) in &bad_tokens {
            let (status, body, _) = get_with(&models, uri, Some(format!("Bearer {token}"))).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} with a {kind} token: {body}");
        }
    }
}
