//! Any bytes as the body of any command endpoint, sent through the real router over an
//! in-memory event store: the API answers a 2xx or a 4xx with a JSON error, never a 5xx
//! or a panic; a refused request writes nothing; an accepted one writes events that
//! round-trip through the envelope codec (what the relay publishes and every consumer
//! decodes), and sent again with its key it is answered from the key and writes nothing.
//!
//! The first byte picks the endpoint and the headers (see [`Request::of`]); the rest is
//! the body. Each input starts from the same seeded state (a menu, an order, stock and
//! points to act on), so a crash reproduces from its input alone.
#![no_main]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, StatusCode};
use cafe_events::{AggregateId, EventEnvelope};
use cafe_producers::api::{IDEMPOTENCY_KEY, REPLAYED, protect, router};
use cafe_producers::auth::sender;
use cafe_producers::publish::{Entry, EntryOutcome, Publisher, PublisherConfig, RecordSink, ShardRange, SinkError};
use cafe_producers::service::{CommandService, ServiceConfig};
use cafe_producers::store::{Append, EventStore, IdempotencyClaim, IdempotencyRecord, StoreError};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// What the store holds: events by aggregate and version, and idempotency records.
#[derive(Debug, Default, Clone)]
struct Memory {
    events: BTreeMap<String, BTreeMap<u64, EventEnvelope>>,
    keys: HashMap<String, IdempotencyRecord>,
}

impl Memory {
    fn size(&self) -> (usize, usize) {
        (self.events.values().map(BTreeMap::len).sum(), self.keys.len())
    }

    /// DynamoDB's conditions: no event version and no idempotency key written twice.
    fn check(&self, a: &Append<'_>) -> Result<(), StoreError> {
        for e in a.events {
            let id = e.aggregate_id.to_string();
            if self.events.get(&id).is_some_and(|v| v.contains_key(&e.version)) {
                return Err(StoreError::Conflict {
                    aggregate_id: id,
                    version: e.version,
                });
            }
        }
        match a.claim {
            Some(c) if self.keys.contains_key(&c.key) => Err(StoreError::IdempotencyRace(c.key.clone())),
            _ => Ok(()),
        }
    }

    fn write(&mut self, a: &Append<'_>) {
        for e in a.events {
            self.events
                .entry(e.aggregate_id.to_string())
                .or_default()
                .insert(e.version, e.clone());
        }
        if let Some(c) = a.claim {
            self.keys.insert(
                c.key.clone(),
                IdempotencyRecord {
                    request_hash: c.request_hash.clone(),
                    response: c.response.clone(),
                },
            );
        }
    }
}

/// The event store port over [`Memory`]: a fake for logic, which is what a fuzz target
/// needs (the DynamoDB adapter has its own tests against the emulator).
#[derive(Debug, Default, Clone)]
struct MemoryStore(Arc<Mutex<Memory>>);

impl MemoryStore {
    fn lock(&self) -> MutexGuard<'_, Memory> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl EventStore for MemoryStore {
    async fn load(&self, id: &AggregateId) -> Result<Vec<EventEnvelope>, StoreError> {
        let memory = self.lock();
        Ok(memory
            .events
            .get(&id.to_string())
            .map(|v| v.values().cloned().collect())
            .unwrap_or_default())
    }
    async fn append(&self, events: &[EventEnvelope], claim: Option<&IdempotencyClaim>) -> Result<(), StoreError> {
        let a = Append { events, claim };
        let mut memory = self.lock();
        memory.check(&a)?;
        memory.write(&a);
        Ok(())
    }
    async fn append_group(&self, appends: &[Append<'_>]) -> Result<(), StoreError> {
        let mut memory = self.lock();
        if let Some(e) = appends.iter().find_map(|a| memory.check(a).err()) {
            return Err(StoreError::GroupRefused(e.to_string()));
        }
        appends.iter().for_each(|a| memory.write(a));
        Ok(())
    }
    async fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        Ok(self.lock().keys.get(key).cloned())
    }
    async fn pending(&self, _: Duration, _: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        Ok(Vec::new())
    }
    async fn mark_published(&self, _: &[EventEnvelope]) -> Result<(), StoreError> {
        Ok(())
    }
}

/// A stream of one shard that takes every record.
#[derive(Debug, Default)]
struct Stream;

impl RecordSink for Stream {
    async fn put_records(&self, entries: &[Entry]) -> Result<Vec<EntryOutcome>, SinkError> {
        Ok((0..entries.len())
            .map(|i| EntryOutcome::Accepted {
                shard_id: "shardId-000000000000".into(),
                sequence_number: i.to_string(),
            })
            .collect())
    }
    async fn shards(&self) -> Result<Vec<ShardRange>, SinkError> {
        Ok(vec![ShardRange {
            shard_id: "shardId-000000000000".into(),
            start: 0,
            end: u128::MAX,
        }])
    }
}

/// Ids that exist in the seeded state, and ones that do not.
const ORDER: [&str; 2] = ["o-seed-1", "o-none"];
const STORE: &str = "store-00001";
const SKU: [&str; 2] = ["latte-tall", "no-such-sku"];
const CUSTOMER: [&str; 2] = ["cust-1", "cust-none"];

/// One request of an input.
struct Request {
    path: String,
    json: bool,
    key: Option<String>,
    body: Vec<u8>,
}

impl Request {
    /// Bits 0–2 of the first byte pick the endpoint; bit 3 a non-JSON content type;
    /// bit 4 no idempotency key; bit 5 ids that do not exist.
    fn of(data: &[u8]) -> Option<Request> {
        let (&flags, body) = data.split_first()?;
        let other = usize::from(flags & 0x20 != 0);
        let path = match flags & 7 {
            0 => "/v1/orders".to_owned(),
            1 => format!("/v1/orders/{}/status", ORDER[other]),
            2 => format!("/v1/orders/{}/cancel", ORDER[other]),
            3 => format!("/v1/stores/{STORE}/inventory/{}/restock", SKU[other]),
            4 => format!("/v1/stores/{STORE}/inventory/{}/adjust", SKU[other]),
            5 => format!("/v1/loyalty/{}/earn", CUSTOMER[other]),
            6 => format!("/v1/loyalty/{}/redeem", CUSTOMER[other]),
            _ => "/v1/menu/items".to_owned(),
        };
        Some(Request {
            path,
            json: flags & 8 == 0,
            key: (flags & 0x10 == 0).then(|| "fuzz-key".to_owned()),
            body: body.to_vec(),
        })
    }
}

/// A response, read whole.
struct Answer {
    status: StatusCode,
    replayed: bool,
    body: serde_json::Value,
}

async fn send(app: &axum::Router, r: &Request) -> Answer {
    let mut builder = axum::http::Request::builder().method(Method::POST).uri(&r.path);
    if r.json {
        builder = builder.header("content-type", "application/json");
    } else {
        builder = builder.header("content-type", "text/plain");
    }
    if let Some(key) = &r.key {
        builder = builder.header(IDEMPOTENCY_KEY, key);
    }
    let request = builder.body(Body::from(r.body.clone())).expect("a well-formed request");
    let response = app.clone().oneshot(request).await.expect("the router is infallible");
    let status = response.status();
    let replayed = response.headers().contains_key(REPLAYED);
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("an in-memory body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "{status}: the body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(&bytes)
        )
    });
    Answer { status, replayed, body }
}

/// The router behind the gate, every request from the caller the tools would send it
/// as (placing orders as `cust-1`, whose orders the seeds place): the bodies get past
/// authentication to validation, the policy and the store, which is what is fuzzed
/// here; who may call is the table test's (producers/tests/it/auth.rs).
fn service(store: MemoryStore) -> axum::Router {
    let publisher = Publisher::new(Stream, PublisherConfig::default());
    let routes = router(Arc::new(CommandService::new(
        store,
        publisher,
        ServiceConfig::default(),
    )));
    protect(
        routes,
        |parts: &axum::http::request::Parts| Ok(sender(true, parts.uri.path(), Some(CUSTOMER[0]))),
        None,
    )
}

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
});

/// The state every input starts from, made through the API itself.
static SEEDED: LazyLock<Memory> = LazyLock::new(|| {
    let store = MemoryStore::default();
    let app = service(store.clone());
    let setup: [(&str, &str); 4] = [
        (
            "/v1/menu/items",
            r#"{"item_id":"latte-tall","name":"Latte","category":"coffee","price_cents":445}"#,
        ),
        (
            "/v1/orders",
            r#"{"order_id":"o-seed-1","customer_id":"cust-1","store_id":"store-00001","lines":[{"item_id":"latte-tall","quantity":2}]}"#,
        ),
        (
            "/v1/stores/store-00001/inventory/latte-tall/restock",
            r#"{"quantity":100}"#,
        ),
        ("/v1/loyalty/cust-1/earn", r#"{"points":500}"#),
    ];
    RUNTIME.block_on(async {
        for (i, (path, body)) in setup.into_iter().enumerate() {
            let r = Request {
                path: path.to_owned(),
                json: true,
                key: Some(format!("seed-{i}")),
                body: body.as_bytes().to_vec(),
            };
            let answer = send(&app, &r).await;
            assert!(
                answer.status.is_success(),
                "seeding {path}: {} {}",
                answer.status,
                answer.body
            );
        }
    });
    store.lock().clone()
});

fuzz_target!(|data: &[u8]| {
    let Some(request) = Request::of(data) else { return };
    let store = MemoryStore(Arc::new(Mutex::new(SEEDED.clone())));
    let app = service(store.clone());
    RUNTIME.block_on(async {
        let before = store.lock().size();
        let first = send(&app, &request).await;
        let after = store.lock().size();
        let status = first.status;
        assert!(
            status.is_success() || status.is_client_error(),
            "{status} for {}: {}",
            request.path,
            first.body
        );
        if status.is_client_error() {
            assert!(
                first.body["error"].is_string() && first.body["message"].is_string(),
                "{}",
                first.body
            );
            assert_eq!(before, after, "a refused request ({status}) wrote: {}", first.body);
            return;
        }
        let listed = first.body["events"].as_array().map_or(0, Vec::len);
        assert_eq!(
            after.0 - before.0,
            listed,
            "the events written are not the events answered: {}",
            first.body
        );
        for events in store.lock().events.values() {
            for e in events.values() {
                let again = EventEnvelope::decode(&e.encode());
                assert_eq!(again.as_ref().ok(), Some(e), "{again:?}");
            }
        }
        if request.key.is_some() {
            let second = send(&app, &request).await;
            assert_eq!(
                (second.status, &second.body),
                (status, &first.body),
                "a retry answered otherwise"
            );
            assert!(second.replayed, "a retry was not answered from its key");
            assert_eq!(store.lock().size(), after, "a retry wrote again");
        }
    });
});
