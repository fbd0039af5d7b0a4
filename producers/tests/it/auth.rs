//! Who may call which command route, against the real event store and stream: every
//! route × caller × ownership, every kind of bad token, the per-caller rate limit and
//! the caller's scope of an idempotency key. A refusal writes nothing anywhere.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::Select;
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use cafe_producers::api::{self, Limits};
use cafe_producers::auth::{Caller, Role};
use cafe_producers::publish::{KinesisSink, Publisher, PublisherConfig};
use cafe_producers::service::{CommandService, ServiceConfig};
use cafe_producers::store::DynamoEventStore;
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::helpers::{auth, fresh_store, fresh_stream, read_stream};

struct World {
    router: Router,
    service: Arc<CommandService<DynamoEventStore, KinesisSink>>,
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
}

async fn world(limits: Option<Limits>) -> World {
    let (kinesis, stream, sink) = fresh_stream(1).await;
    let service = Arc::new(CommandService::new(
        fresh_store().await,
        Publisher::new(sink, PublisherConfig::default()),
        ServiceConfig::default(),
    ));
    World {
        router: auth().protect(api::router(service.clone()), limits),
        service,
        kinesis,
        stream,
    }
}

/// What a request could have written: items in the event store and the idempotency
/// table, records on the stream.
async fn written(w: &World) -> (i32, i32, usize) {
    w.service.settled().await;
    let (client, events, keys) = w.service.store().tables();
    let count = |table: &str| {
        let scan = client
            .scan()
            .table_name(table)
            .select(Select::Count)
            .consistent_read(true);
        async move { scan.send().await.unwrap().count() }
    };
    let (records, _) = read_stream(&w.kinesis, &w.stream).await;
    (count(events).await, count(keys).await, records)
}

/// One POST with `authorization` (None: no header); (status, body, WWW-Authenticate).
async fn send(
    w: &World,
    path: &str,
    key: &str,
    authorization: Option<&str>,
    body: &Value,
) -> (u16, Value, Option<String>) {
    let mut request = Request::post(path)
        .header("content-type", "application/json")
        .header("idempotency-key", key);
    if let Some(value) = authorization {
        request = request.header(header::AUTHORIZATION, value);
    }
    let response = w
        .router
        .clone()
        .oneshot(request.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get(header::WWW_AUTHENTICATE)
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("not JSON: {bytes:?}"));
    (status, body, challenge)
}

fn person(subject: &str, role: Role) -> Caller {
    Caller {
        subject: subject.into(),
        role,
    }
}

fn staff(store: &str) -> Caller {
    person("barista-1", Role::Staff { store: store.into() })
}

/// Every command route, on what customer `cust-1` at store `store-00001` owns (order
/// `o-1`), with a valid body; `n` makes created ids unique.
fn routes(n: usize) -> Vec<(&'static str, String, Value)> {
    vec![
        (
            "place",
            "/v1/orders".into(),
            json!({"order_id": format!("o-new-{n}"), "customer_id": "cust-1", "store_id": "store-00001",
                   "lines": [{"item_id": "latte", "quantity": 1}]}),
        ),
        ("status", "/v1/orders/o-1/status".into(), json!({"status": "preparing"})),
        (
            "cancel",
            "/v1/orders/o-1/cancel".into(),
            json!({"reason": "changed mind"}),
        ),
        (
            "restock",
            "/v1/stores/store-00001/inventory/sku-1/restock".into(),
            json!({"quantity": 5}),
        ),
        (
            "adjust",
            "/v1/stores/store-00001/inventory/sku-1/adjust".into(),
            json!({"delta": -1, "reason": "spilled"}),
        ),
        ("earn", "/v1/loyalty/cust-1/earn".into(), json!({"points": 5})),
        ("redeem", "/v1/loyalty/cust-1/redeem".into(), json!({"points": 5})),
        (
            "menu",
            "/v1/menu/items".into(),
            json!({"item_id": format!("item-{n}"), "name": "Mocha", "category": "espresso", "price_cents": 500}),
        ),
    ]
}

/// Who is allowed, in `routes`' order, for: the owning customer, another customer,
/// the store's staff, another store's staff, headquarters, an operator.
const ALLOWED: [[bool; 6]; 8] = [
    [true, false, false, false, false, false], // place
    [false, false, true, false, true, false],  // status
    [false, false, true, false, true, false],  // cancel
    [false, false, true, false, true, false],  // restock
    [false, false, true, false, true, false],  // adjust
    [true, false, false, false, true, false],  // earn
    [true, false, false, false, false, false], // redeem
    [false, false, false, false, true, false], // menu
];

/// What an allowed caller gets, per route: the domain decides from here (a status
/// change before payment is an illegal transition; the second cancel finds it
/// cancelled; a redemption or an adjustment may find too little).
const ANSWERS: [&[u16]; 8] = [
    &[201],
    &[422],
    &[200, 422],
    &[201],
    &[201, 422],
    &[201],
    &[201, 422],
    &[201],
];

#[tokio::test]
async fn every_route_for_every_caller_and_every_bad_token() {
    let w = world(None).await;
    let hq = person("hq-1", Role::Headquarters);
    let bearer = |c: &Caller| auth().bearer(c).unwrap();
    let menu = json!({"item_id": "latte", "name": "Latte", "category": "espresso", "price_cents": 450});
    assert_eq!(send(&w, "/v1/menu/items", "m", Some(&bearer(&hq)), &menu).await.0, 201);
    let order = json!({"order_id": "o-1", "customer_id": "cust-1", "store_id": "store-00001",
                       "lines": [{"item_id": "latte", "quantity": 1}]});
    let cust1 = person("cust-1", Role::Customer);
    assert_eq!(send(&w, "/v1/orders", "o", Some(&bearer(&cust1)), &order).await.0, 201);

    let callers = [
        cust1.clone(),
        person("cust-2", Role::Customer),
        staff("store-00001"),
        staff("store-00002"),
        hq.clone(),
        person("sre-1", Role::Operator),
    ];
    // Tokens that must not get in, each on every route.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let claims = |iss: &str, aud: &str, exp: u64| json!({"iss": iss, "aud": aud, "sub": "hq-1", "role": "hq", "nbf": now - 600, "exp": exp});
    let issuer = &auth().issuer;
    let (iss, aud) = (issuer.issuer.clone(), issuer.audience.clone());
    let valid = issuer.sign(&claims(&iss, &aud, now + 600)).unwrap();
    let parts: Vec<&str> = valid.split('.').collect();
    let mut payload: Value = serde_json::from_slice(&B64.decode(parts[1]).unwrap()).unwrap();
    payload["sub"] = "hq-2".into();
    let tampered = format!("{}.{}.{}", parts[0], B64.encode(payload.to_string()), parts[2]);
    let header: Value = serde_json::from_slice(&B64.decode(parts[0]).unwrap()).unwrap();
    let none = format!(
        "{}.{}.",
        B64.encode(json!({"alg": "none", "typ": "JWT", "kid": header["kid"]}).to_string()),
        parts[1]
    );
    let bad_tokens: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("expired", Some(issuer.sign(&claims(&iss, &aud, now - 120)).unwrap())),
        (
            "wrong audience",
            Some(issuer.sign(&claims(&iss, "another-api", now + 600)).unwrap()),
        ),
        (
            "wrong issuer",
            Some(issuer.sign(&claims("https://evil.example", &aud, now + 600)).unwrap()),
        ),
        ("tampered", Some(tampered)),
        ("alg none", Some(none)),
    ];

    let before = written(&w).await;
    let mut n = 0;
    for (route, (name, path, body)) in routes(0).into_iter().enumerate() {
        for (who, caller) in callers.iter().enumerate() {
            if ALLOWED[route][who] {
                continue;
            }
            n += 1;
            let (status, answer, _) = send(&w, &path, &format!("k-{n}"), Some(&bearer(caller)), &body).await;
            assert_eq!(status, 403, "{name} as {caller:?}: {answer}");
            assert_eq!(answer["error"], "forbidden");
        }
        for (kind, token) in &bad_tokens {
            n += 1;
            let authorization = token.as_ref().map(|t| format!("Bearer {t}"));
            let (status, answer, challenge) = send(&w, &path, &format!("k-{n}"), authorization.as_deref(), &body).await;
            assert_eq!(status, 401, "{name} with a {kind} token: {answer}");
            assert_eq!(answer["error"], "unauthenticated");
            let challenge = challenge.unwrap_or_else(|| panic!("{name}, {kind}: no WWW-Authenticate"));
            assert!(challenge.starts_with("Bearer realm="), "{challenge}");
            assert_eq!(
                challenge.contains("invalid_token"),
                token.is_some(),
                "{kind}: {challenge}"
            );
        }
    }
    assert_eq!(
        written(&w).await,
        before,
        "a refused request wrote to the store, the keys or the stream"
    );

    // The same routes for the callers allowed them: past the gate, the domain answers.
    for (route, (name, path, body)) in routes(1).into_iter().enumerate() {
        for (who, caller) in callers.iter().enumerate().filter(|(who, _)| ALLOWED[route][*who]) {
            n += 1;
            let (status, answer, _) = send(&w, &path, &format!("k-{n}-{who}"), Some(&bearer(caller)), &body).await;
            assert!(
                ANSWERS[route].contains(&status),
                "{name} as {caller:?}: {status} {answer}"
            );
        }
    }
}

#[tokio::test]
async fn an_idempotency_key_is_its_callers_own() {
    let w = world(None).await;
    let (hq, customer) = (person("hq-1", Role::Headquarters), person("cust-7", Role::Customer));
    let earn = json!({"points": 5});
    let path = "/v1/loyalty/cust-7/earn";
    let (status, first, _) = send(&w, path, "same-key", Some(&auth().bearer(&hq).unwrap()), &earn).await;
    assert_eq!((status, first["version"].as_u64()), (201, Some(1)), "{first}");
    // The same key and body from someone else is their own request, not a replay of
    // headquarters' answer.
    let (status, second, _) = send(&w, path, "same-key", Some(&auth().bearer(&customer).unwrap()), &earn).await;
    assert_eq!((status, second["version"].as_u64()), (201, Some(2)), "{second}");
    // Within one caller the key still replays.
    let (status, again, _) = send(&w, path, "same-key", Some(&auth().bearer(&customer).unwrap()), &earn).await;
    assert_eq!((status, again["version"].as_u64()), (201, Some(2)), "{again}");
}

#[tokio::test]
async fn a_burst_over_a_callers_limit_gets_429_and_others_are_unaffected() {
    let limits = Limits {
        customer: (1, 3),
        ..Limits::default()
    };
    let w = world(Some(limits)).await;
    let (greedy, other) = (person("cust-1", Role::Customer), person("cust-2", Role::Customer));
    // An invalid body: answered 400 once through the gate, so nothing is written.
    let bad = json!({"points": 0});
    let mut statuses = Vec::new();
    for n in 0..8 {
        let path = "/v1/loyalty/cust-1/earn";
        let token = auth().bearer(&greedy).unwrap();
        let (status, answer, _) = send(&w, path, &format!("b-{n}"), Some(&token), &bad).await;
        if status == 429 {
            assert_eq!(answer["error"], "rate_limited");
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses[..3],
        [400, 400, 400],
        "the burst of three passes: {statuses:?}"
    );
    assert!(
        statuses[3..].iter().all(|s| *s == 429),
        "then the bucket is empty: {statuses:?}"
    );
    let token = auth().bearer(&other).unwrap();
    let (status, _, _) = send(&w, "/v1/loyalty/cust-2/earn", "o-1", Some(&token), &bad).await;
    assert_eq!(status, 400, "another customer has a bucket of their own");
}

#[tokio::test]
async fn a_body_trickled_in_too_slowly_is_cut_off_with_408_and_writes_nothing() {
    let w = world(None).await;
    let customer = person("cust-1", Role::Customer);
    let before = written(&w).await;
    // Half a body, then nothing: a slowloris client.
    let half: Result<bytes::Bytes, std::io::Error> = Ok(bytes::Bytes::from_static(b"{\"points\":"));
    let stalled = futures::stream::iter([half]).chain(futures::stream::pending());
    let request = Request::post("/v1/loyalty/cust-1/earn")
        .header("content-type", "application/json")
        .header("idempotency-key", "slow")
        .header(header::AUTHORIZATION, auth().bearer(&customer).unwrap())
        .body(Body::from_stream(stalled))
        .unwrap();
    let started = std::time::Instant::now();
    let response = w.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(
        started.elapsed() >= api::BODY_TIMEOUT,
        "cut off early: {:?}",
        started.elapsed()
    );
    let body: Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
    assert_eq!(body["error"], "body_timeout");
    assert_eq!(written(&w).await, before);
}

#[tokio::test]
async fn the_observers_routes_answer_this_machine_or_an_operator() {
    use axum::extract::ConnectInfo;
    let observed = api::observers_only(Router::new().route("/metrics", axum::routing::get(|| async { "cafe_up 1" })));
    let router = auth().protect(observed, None);
    let get = |peer: Option<[u8; 4]>, caller: Option<cafe_producers::auth::Caller>| {
        let mut request = Request::get("/metrics");
        if let Some(caller) = &caller {
            request = request.header("authorization", auth().bearer(caller).unwrap());
        }
        let mut request = request.body(Body::empty()).unwrap();
        if let Some(ip) = peer {
            request
                .extensions_mut()
                .insert(ConnectInfo(std::net::SocketAddr::from((ip, 40_000))));
        }
        let router = router.clone();
        async move { router.oneshot(request).await.unwrap().status() }
    };
    let person = |role| cafe_producers::auth::Caller {
        subject: "someone".into(),
        role,
    };
    use cafe_producers::auth::Role;
    assert_eq!(
        get(Some([127, 0, 0, 1]), None).await,
        StatusCode::OK,
        "this machine, no token"
    );
    assert_eq!(
        get(Some([10, 0, 0, 7]), None).await,
        StatusCode::UNAUTHORIZED,
        "elsewhere, no token"
    );
    assert_eq!(get(None, None).await, StatusCode::UNAUTHORIZED, "no peer known");
    assert_eq!(
        get(Some([10, 0, 0, 7]), Some(person(Role::Headquarters))).await,
        StatusCode::FORBIDDEN,
        "elsewhere, not an operator"
    );
    assert_eq!(
        get(Some([10, 0, 0, 7]), Some(person(Role::Operator))).await,
        StatusCode::OK,
        "elsewhere, an operator"
    );
}
