//! Whatever the write side accepts, every read model can hold: commands generated at
//! the edges of what the API allows (the longest ids, names and categories, text in
//! several scripts and widths, the largest quantities, points and prices) go through
//! the real command API into the event store, and their events into every read model,
//! none of which may refuse one as poison.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::http::Request;
use cafe_events::{AggregateId, CustomerId, ItemId, OrderId, Sku, StoreId};
use cafe_localstack::aws;
use cafe_producers::api::guard::LocalAuth;
use cafe_producers::api::{MAX_CATEGORY, MAX_TEXT};
use cafe_producers::auth::{Caller, Role};
use cafe_producers::publish::{KinesisSink, Publisher, PublisherConfig};
use cafe_producers::service::{CommandService, ServiceConfig};
use cafe_producers::store::{DynamoEventStore, EventStore};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::conformance::apply_as;
use crate::helpers::stack;

/// Characters of one, two, three and four UTF-8 bytes, and the ones SQL, JSON and
/// shells treat specially.
const ALPHABET: &[char] = &[
    'a', 'Z', '0', ' ', '\'', '"', '\\', '%', '_', ';', '-', 'é', 'ß', '☕', '中', '𝄞', '🙂',
];

/// Free text of 1 to `max_chars` characters, not blank; often the longest.
fn text(max_chars: usize) -> impl Strategy<Value = String> {
    let longest = prop::collection::vec(prop::sample::select(ALPHABET), max_chars - 1);
    let any = prop::collection::vec(prop::sample::select(ALPHABET), 0..max_chars);
    prop_oneof![longest, any].prop_map(|chars| std::iter::once('x').chain(chars).collect())
}

/// An id tail: with the run's prefix, up to the longest id the API accepts.
fn id_tail() -> impl Strategy<Value = String> {
    prop::string::string_regex("[A-Za-z0-9_.:-]{0,40}").unwrap()
}

#[derive(Debug, Clone)]
struct Case {
    name: String,
    category: String,
    tags: Vec<String>,
    price: i64,
    lines: Vec<u32>,
    reason: String,
    restock: i64,
    adjust_reason: String,
    points: i64,
    tail: String,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        (
            text(MAX_TEXT),
            text(MAX_CATEGORY),
            prop::collection::vec(text(MAX_TEXT), 0..=20),
        ),
        (
            prop_oneof![Just(1i64), Just(1_000_000), 1..1_000_000i64],
            prop::collection::vec(1u32..=20, 1..=50),
        ),
        (
            text(MAX_TEXT),
            prop_oneof![Just(1_000_000i64), 1..1_000_000i64],
            text(MAX_TEXT),
        ),
        (prop_oneof![Just(1_000_000i64), 1..1_000_000i64], id_tail()),
    )
        .prop_map(
            |((name, category, tags), (price, lines), (reason, restock, adjust_reason), (points, tail))| Case {
                name,
                category,
                tags,
                price,
                lines,
                reason,
                restock,
                adjust_reason,
                points,
                tail,
            },
        )
}

/// An id of exactly 64 characters (the longest) for even runs, shorter otherwise.
fn id(kind: &str, run: u64, tail: &str) -> String {
    let id = format!("{kind}{run}-{}-{tail}", std::process::id());
    let id: String = id.chars().take(64).collect();
    if run.is_multiple_of(2) {
        format!("{id:z<64}")
    } else {
        id
    }
}

struct World {
    router: axum::Router,
    store: DynamoEventStore,
    auth: LocalAuth,
}

async fn world() -> World {
    let cfg = stack();
    let sdk = aws::sdk_config(&cfg).await;
    let store = DynamoEventStore::new(
        aws::dynamodb(&sdk, &cfg),
        &cfg.names.events_table,
        &cfg.names.idempotency_table,
    );
    let sink = KinesisSink::new(aws::kinesis(&sdk, &cfg), &cfg.names.stream);
    let service = Arc::new(CommandService::new(
        store.clone(),
        Publisher::new(sink, PublisherConfig::default()),
        ServiceConfig::default(),
    ));
    let auth = LocalAuth::ephemeral().unwrap();
    World {
        router: auth.protect(cafe_producers::api::router(service), None),
        store,
        auth,
    }
}

async fn post(w: &World, who: &Caller, path: &str, body: Value) -> (u16, Value) {
    let request = Request::post(path)
        .header("content-type", "application/json")
        .header("idempotency-key", uuid::Uuid::now_v7().to_string())
        .header("authorization", w.auth.bearer(who).unwrap())
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = w.router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Sends one case's commands (each must be accepted: the generator makes only what
/// the API documents as valid) and answers the events they stored.
async fn run(w: &World, run: u64, c: &Case) -> Vec<cafe_events::EventEnvelope> {
    let (item, order) = (id("i", run, &c.tail), id("o", run, &c.tail));
    let (customer, store, sku) = (id("c", run, &c.tail), id("s", run, &c.tail), id("k", run, &c.tail));
    let person = |subject: &str, role: Role| Caller {
        subject: subject.into(),
        role,
    };
    let (hq, me) = (person("hq-1", Role::Headquarters), person(&customer, Role::Customer));
    let staff = person("barista-1", Role::Staff { store: store.clone() });
    let lines: Vec<Value> = c
        .lines
        .iter()
        .map(|q| json!({"item_id": item, "quantity": q}))
        .collect();
    let commands = [
        (
            &hq,
            "/v1/menu/items".to_owned(),
            json!({"item_id": item, "name": c.name, "category": c.category, "price_cents": c.price, "tags": c.tags}),
        ),
        (
            &me,
            "/v1/orders".to_owned(),
            json!({"order_id": order, "customer_id": customer, "store_id": store, "lines": lines}),
        ),
        (&hq, format!("/v1/orders/{order}/cancel"), json!({"reason": c.reason})),
        (
            &staff,
            format!("/v1/stores/{store}/inventory/{sku}/restock"),
            json!({"quantity": c.restock}),
        ),
        (
            &staff,
            format!("/v1/stores/{store}/inventory/{sku}/adjust"),
            json!({"delta": -c.restock, "reason": c.adjust_reason}),
        ),
        (
            &hq,
            format!("/v1/loyalty/{customer}/earn"),
            json!({"points": c.points, "order_id": order}),
        ),
        (
            &me,
            format!("/v1/loyalty/{customer}/redeem"),
            json!({"points": c.points}),
        ),
    ];
    for (who, path, body) in commands {
        let (status, answer) = post(w, who, &path, body.clone()).await;
        assert!((200..300).contains(&status), "{path} {body}: {status} {answer}");
    }
    let mut events = Vec::new();
    for aggregate in [
        AggregateId::MenuItem(ItemId::parse(&item).unwrap()),
        AggregateId::Order(OrderId::parse(&order).unwrap()),
        AggregateId::StockItem(StoreId::parse(&store).unwrap(), Sku::parse(&sku).unwrap()),
        AggregateId::LoyaltyAccount(CustomerId::parse(&customer).unwrap()),
    ] {
        events.extend(w.store.load(&aggregate).await.unwrap());
    }
    events
}

#[test]
fn every_read_model_holds_whatever_the_api_accepts() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let w = rt.block_on(world());
    let (orders, active, documents, cache, inventory, analytics) = rt.block_on(async {
        (
            crate::postgres::fresh().await,
            crate::active_orders::fresh().await,
            crate::documents::fresh().await,
            crate::cache::fresh().await,
            crate::inventory::fresh().await,
            crate::analytics::fresh().await,
        )
    });
    let runs = AtomicU64::new(0);
    let mut runner = TestRunner::new(Config {
        cases: 12,
        failure_persistence: None,
        max_shrink_iters: 16,
        ..Config::default()
    });
    runner
        .run(&cases(), |case| {
            let n = runs.fetch_add(1, Ordering::Relaxed);
            rt.block_on(async {
                let events = run(&w, n, &case).await;
                let shard = format!("edges-{n}");
                apply_as(&orders, &shard, &events, 7).await;
                apply_as(&active, &shard, &events, 7).await;
                apply_as(&documents, &shard, &events, 7).await;
                apply_as(&cache, &shard, &events, 7).await;
                apply_as(&inventory, &shard, &events, 7).await;
                apply_as(&analytics, &shard, &events, 7).await;
            });
            Ok(())
        })
        .unwrap();
}
