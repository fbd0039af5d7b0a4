//! The local event source mapping against the SQS stand-in, with the handler in-process.

use std::time::Duration;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use cafe_events::proto::orders::v1::OrderStatus;
use cafe_lambda_payment::gateway::SimulatedGateway;
use cafe_localstack::lambda::{EventSourceMapping, MappingConfig, MappingCounts};
use cafe_localstack::testing::eventually;
use tokio::sync::watch;

use crate::helpers::*;

/// Sends `bodies` to the queue, runs the mapping until `dlq` holds `dead` messages, and
/// answers the DLQ's messages and the mapping's counters.
async fn run_until_dead_lettered(
    world: &World,
    bodies: &[String],
    dead: usize,
) -> (Vec<aws_sdk_sqs::types::Message>, MappingCounts) {
    let (queue, dlq) = world.queue().await;
    for body in bodies {
        world.send(&queue, body).await;
    }
    let payments = world.handler(SimulatedGateway::default());
    // The visibility timeout is well above a batch's processing time even on a loaded
    // machine: a good message must not come back while it is being processed.
    let mapping = EventSourceMapping::new(
        world.sqs.clone(),
        &queue,
        InProcess(payments),
        MappingConfig {
            batch_size: 10,
            batching_window: Duration::from_millis(300),
            visibility_timeout: Duration::from_secs(3),
            pollers: 1,
        },
    )
    .await
    .unwrap();
    let stats = mapping.stats();
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(mapping.run(stopped));
    // The stand-in moves a message to the DLQ on the receive after its fifth.
    let mut dead_letters = Vec::new();
    eventually("the poison messages in the DLQ", Duration::from_secs(60), async || {
        dead_letters.extend(drain(&world.sqs, &dlq, Duration::from_secs(60)).await);
        dead_letters.len() >= dead
    })
    .await;
    stop.send(true).unwrap();
    running.await.unwrap();
    assert!(
        drain(&world.sqs, &queue, Duration::from_secs(60)).await.is_empty(),
        "nothing left on the queue"
    );
    (dead_letters, stats.counts())
}

#[tokio::test]
async fn a_batch_of_ten_with_one_poison_message() {
    let world = World::new().await;
    let mut bodies = Vec::new();
    for i in 0..9 {
        let id = format!("o-esm-{i}");
        world.place(&id, "c-1", 1).await;
        bodies.push(serde_json::to_string(&request(&id, "c-1", 1)).unwrap());
    }
    let poison = r#"{"order_id": "o-esm-9", "note": "not a payment request"}"#.to_owned();
    bodies.push(poison.clone());

    let (dead, counts) = run_until_dead_lettered(&world, &bodies, 1).await;
    assert_eq!(counts.deleted, 9, "the nine good messages were deleted");
    assert_eq!(counts.failed_invocations, 0);
    assert_eq!(
        counts.reported_failures, 5,
        "the poison message failed on each of its five receives"
    );
    assert_eq!(counts.received, 9 + 5);
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body(), Some(poison.as_str()), "the body arrives intact");
    let receives = dead[0]
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap();
    assert!(receives >= 5, "received {receives} times");
    for i in 0..9 {
        assert_eq!(world.status(&format!("o-esm-{i}")).await, Some(OrderStatus::Paid));
    }
}

#[tokio::test]
async fn bad_messages_end_in_the_dlq_and_never_stop_the_good_ones() {
    let world = World::new().await;
    world.place("o-good", "c-1", 1).await;
    let good = serde_json::to_string(&request("o-good", "c-1", 1)).unwrap();
    let mut negative = request("o-neg", "c-1", 1);
    negative.amount_cents = -5;
    let bad = vec![
        "charge o-2 please".to_owned(),
        r#"{"order_id":"o-3","customer_id":"c-1","currency":"USD","attempt":1,"idempotency_key":"k3"}"#.to_owned(),
        serde_json::to_string(&negative).unwrap(),
    ];
    let mut bodies = bad.clone();
    bodies.push(good);
    let (dead, counts) = run_until_dead_lettered(&world, &bodies, 3).await;
    assert_eq!(counts.deleted, 1);
    let mut dead_bodies: Vec<_> = dead.iter().map(|m| m.body().unwrap().to_owned()).collect();
    dead_bodies.sort();
    let mut expected = bad;
    expected.sort();
    assert_eq!(dead_bodies, expected);
    assert_eq!(world.status("o-good").await, Some(OrderStatus::Paid));
}

/// The mapping's queue age (what AWS/SQS calls ApproximateAgeOfOldestMessage) is how
/// long the oldest message of a batch waited, and drops to zero once a receive finds
/// the queue empty.
#[tokio::test]
async fn the_queue_age_is_the_oldest_wait_and_zero_once_the_queue_is_empty() {
    use std::sync::atomic::Ordering::Relaxed;
    let world = World::new().await;
    let (queue, _dlq) = world.queue().await;
    world.place("o-age", "c-1", 1).await;
    let body = serde_json::to_string(&request("o-age", "c-1", 1)).unwrap();
    world.send(&queue, &body).await;
    let waited = Duration::from_millis(1_500);
    tokio::time::sleep(waited).await;
    let mapping = EventSourceMapping::new(
        world.sqs.clone(),
        &queue,
        InProcess(world.handler(SimulatedGateway::default())),
        MappingConfig {
            pollers: 1,
            ..MappingConfig::default()
        },
    )
    .await
    .unwrap();
    let stats = mapping.stats();
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(mapping.run(stopped));
    let mut seen = 0;
    eventually("the batch's age", Duration::from_secs(30), async || {
        seen = seen.max(stats.oldest_age_ms.load(Relaxed));
        seen > 0
    })
    .await;
    assert!(
        (waited.as_millis() as u64..60_000).contains(&seen),
        "the message waited at least {waited:?}; the age said {seen} ms"
    );
    eventually(
        "the queue empty and the age zero",
        Duration::from_secs(30),
        async || stats.counts().deleted == 1 && stats.oldest_age_ms.load(Relaxed) == 0,
    )
    .await;
    stop.send(true).unwrap();
    running.await.unwrap();
}

/// A batch held past its visibility timeout before its invocation (an injected invoke
/// delay, as while AWS throttles the function) is delivered again by the other poller
/// while the first still holds it: both copies reach the handler, and the gateway's
/// books still show one decision per payment.
#[tokio::test]
async fn a_batch_held_past_its_visibility_timeout_is_delivered_again_and_charged_once() {
    use cafe_lambda_payment::gateway::{Ledger, SimulatedGateway};
    use cafe_localstack::faults::{FaultInjector, Faults};

    let world = World::new().await;
    let (queue, dlq) = world.queue().await;
    let ids: Vec<String> = (0..5).map(|i| unique(&format!("o-held-{i}"))).collect();
    for id in &ids {
        world.place(id, "c-1", 1).await;
        world
            .send(&queue, &serde_json::to_string(&request(id, "c-1", 1)).unwrap())
            .await;
    }
    let ledger_path = std::env::temp_dir().join(unique("it-pay-ledger")).join("ledger.jsonl");
    let gateway = SimulatedGateway::default().with_ledger(Ledger::open(&ledger_path).unwrap());
    let faults = FaultInjector::off();
    faults.set(Faults {
        invoke_delay_ms: 1_500,
        ..Faults::default()
    });
    let mapping = EventSourceMapping::new(
        world.sqs.clone(),
        &queue,
        InProcess(world.handler(gateway)),
        MappingConfig {
            batch_size: 10,
            batching_window: Duration::from_millis(300),
            visibility_timeout: Duration::from_secs(1),
            pollers: 2,
        },
    )
    .await
    .unwrap()
    .with_faults(faults.clone());
    let stats = mapping.stats();
    let (stop, stopped) = watch::channel(false);
    let running = tokio::spawn(mapping.run(stopped));
    eventually("a held message delivered again", Duration::from_secs(30), async || {
        stats.counts().redelivered > 0
    })
    .await;
    faults.set(Faults::default());
    for id in &ids {
        eventually("every order paid", Duration::from_secs(60), async || {
            world.status(id).await == Some(OrderStatus::Paid)
        })
        .await;
    }
    eventually("the queue empty", Duration::from_secs(60), async || {
        cafe_lambda_payment::requests::queue_counts(&world.sqs, &queue).await == Ok((0, 0))
    })
    .await;
    stop.send(true).unwrap();
    running.await.unwrap();

    let counts = stats.counts();
    assert!(counts.held >= 1 && counts.redelivered >= 1, "{counts:?}");
    assert!(
        counts.received > ids.len() as u64,
        "some payment reached the handler twice: {counts:?}"
    );
    let books = Ledger::read(&ledger_path).unwrap();
    let mut keys: Vec<&str> = books.iter().map(|e| e.idempotency_key.as_str()).collect();
    keys.sort_unstable();
    let mut expected: Vec<String> = ids.iter().map(|id| format!("{id}:payment")).collect();
    expected.sort();
    assert_eq!(keys, expected, "one decision per payment in the gateway's books");
    for id in &ids {
        assert_eq!(world.payment_events(id).await, 1, "{id}");
    }
    assert!(
        drain(&world.sqs, &dlq, Duration::from_secs(30)).await.is_empty(),
        "nothing dead-lettered"
    );
    std::fs::remove_dir_all(ledger_path.parent().unwrap()).unwrap();
}
