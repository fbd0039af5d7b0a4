//! The invariant checker every scenario and chaos experiment ends with: it passes a
//! clean run, and names each invariant a deliberate breakage violates (a row dropped
//! from a read model, a row corrupted, a payment decided twice, the gateway's books
//! showing a payment charged twice, an unexplained parked
//! record, a dead letter nobody injected, a process left running, an accepted order
//! missing from the store).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use cafe_app::invariants::{self, Expected};
use cafe_app::{Application, Settings, load};
use cafe_consumers::Record;
use cafe_consumers::parking::{DynamoParkingLot, Parked, ParkingLot};
use cafe_events::{AggregateId, AggregateType, DomainEvent, EventId};
use cafe_producers::store::{DynamoEventStore, EventStore};
use common::Sandbox;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checker_passes_a_clean_run_and_names_each_broken_invariant() {
    let sandbox = Sandbox::new();
    sandbox.cafe(&["stack", "up"]);
    let settings = Settings::local(sandbox.config());
    let cfg = settings.stack.clone();
    let running = Application::build(settings).await.unwrap().start().await.unwrap();
    let base = format!("http://{}", running.addr());
    let http = load::client(running.config()).unwrap();
    load::seed_menu(&http, &base).await.unwrap();
    let report = load::orders(&http, &base, 20, 16, tokio::time::sleep(Duration::from_secs(2))).await;
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    running.quiet(Duration::from_secs(60)).await.unwrap();
    let clients = running.clients().clone();
    let stopped = running.stop(Duration::from_secs(20)).await.unwrap();
    assert!(stopped.undone.is_empty(), "{:?}", stopped.undone);

    let accepted: Vec<String> = report.accepted.iter().cloned().collect();
    assert!(!accepted.is_empty());
    let clean = invariants::check(
        &cfg,
        &clients,
        &Expected {
            accepted,
            ..Expected::default()
        },
    )
    .await
    .unwrap();
    assert!(clean.hold(), "a clean run breaks nothing:\n{clean}");
    assert_eq!(clean.checks.len(), 6 + 1 + 1 + 1 + 7 + 1 + 1 + 1, "{clean}");
    assert!(
        clean
            .checks
            .iter()
            .any(|c| c.name == invariants::GATEWAY && !c.detail.starts_with("0 decisions")),
        "the saga's gateway kept books:\n{clean}"
    );

    // Break one thing per invariant.
    // A row dropped from the orders model (PostgreSQL) and one corrupted in the cache.
    let (pg, conn) = tokio_postgres::connect(&cfg.postgres_url(&cfg.names.orders_database), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let dropped: String = pg
        .query_one(
            "DELETE FROM public.orders WHERE order_id = (SELECT min(order_id) FROM public.orders) RETURNING order_id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let redis = redis::Client::open(cfg.redis_url()).unwrap();
    let mut con = redis.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS").arg("cache:*").query_async(&mut con).await.unwrap();
    let key = keys.iter().min().expect("the cache holds keys").clone();
    let _: () = redis::cmd("DEL").arg(&key).query_async(&mut con).await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg("corrupted")
        .query_async(&mut con)
        .await
        .unwrap();

    // A payment decided a second time, straight into the event store (and so also an
    // event that never reached the stream).
    let store = DynamoEventStore::new(
        clients.dynamodb.clone(),
        &cfg.names.events_table,
        &cfg.names.idempotency_table,
    );
    let mut doubled = None;
    for order in report.accepted.iter().filter(|o| **o != dropped) {
        let id = AggregateId::parse(AggregateType::Order, order).unwrap();
        let history = store.load(&id).await.unwrap();
        if let Some(paid) = history
            .iter()
            .find(|e| matches!(e.event, DomainEvent::PaymentAuthorized(_)))
        {
            let mut again = paid.clone();
            again.event_id = EventId::new();
            again.version = history.last().unwrap().version + 1;
            store.append(&[again], None).await.unwrap();
            doubled = Some(order.clone());
            break;
        }
    }
    let doubled = doubled.expect("some order was paid");

    // The gateway's books showing one payment decided a second time.
    let ledger = cfg.gateway_ledger();
    let first = std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .next()
        .expect("the gateway decided something")
        .to_owned();
    let charged_twice = serde_json::from_str::<serde_json::Value>(&first).unwrap()["idempotency_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut books = std::fs::OpenOptions::new().append(true).open(&ledger).unwrap();
    std::io::Write::write_all(&mut books, format!("{first}\n").as_bytes()).unwrap();

    // A parked record nobody injected, a dead letter nobody injected, and a process
    // the experiment "started" that is still running.
    let lot = DynamoParkingLot::new(clients.dynamodb.clone(), &cfg.names.parked_table);
    lot.park(
        "inventory",
        &Parked {
            shard_id: "shardId-000000000000".into(),
            record: Record {
                sequence: "1".into(),
                sub: 0,
                partition_key: "k".into(),
                data: bytes::Bytes::from_static(b"junk"),
            },
            reason: "undecodable".into(),
        },
    )
    .await
    .unwrap();
    let dlq = cafe_app::payments::queue_url(&clients.sqs, &cfg.names.payments_dlq)
        .await
        .unwrap();
    clients
        .sqs
        .send_message()
        .queue_url(&dlq)
        .message_body("{}")
        .send()
        .await
        .unwrap();
    let mut sleeper = std::process::Command::new("sleep").arg("120").spawn().unwrap();

    let expected = Expected {
        processes: vec![sleeper.id()],
        // An order an API said it accepted, which the store does not have.
        accepted: vec!["o-accepted-then-lost-1".to_owned()],
        ..Expected::default()
    };
    let broken = invariants::check(&cfg, &clients, &expected).await.unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(!broken.hold());
    let detail = |name: &str, needle: &str| broken.broken().any(|c| c.name == name && c.detail.contains(needle));
    let model = |m: &str, needle: &str| {
        broken.broken().any(|c| {
            c.name == invariants::READ_MODELS && c.detail.starts_with(&format!("{m}:")) && c.detail.contains(needle)
        })
    };
    assert!(model("orders", &dropped), "the dropped row is named:\n{broken}");
    assert!(model("cache", ""), "{broken}");
    assert!(detail(invariants::PAYMENTS, &doubled), "{broken}");
    assert!(detail(invariants::OUTBOX, &doubled), "{broken}");
    assert!(detail(invariants::GATEWAY, &format!("{charged_twice} ×2")), "{broken}");
    assert!(
        detail(invariants::PARKED, "inventory: 1 parked, 0 injected, 0 from before"),
        "{broken}"
    );
    assert!(
        detail(invariants::DEAD_LETTERS, "1 in the payment DLQ, 0 expected"),
        "{broken}"
    );
    assert!(detail(invariants::PROCESSES, "still running"), "{broken}");
    assert!(
        detail(
            invariants::ACCEPTED,
            "1 of 1 accepted orders are not in the event store: o-accepted-then-lost-1"
        ),
        "{broken}"
    );
}
