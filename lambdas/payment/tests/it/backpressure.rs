//! Back-pressure of the saga's first step: with the payment function stopped, the
//! payment-requests consumer keeps the queue under its bound while orders keep arriving
//! (the backlog waits in the stream), and once the function runs again every order is
//! paid exactly once.

use std::time::Duration;

use cafe_events::proto::orders::v1::OrderStatus;
use cafe_lambda_payment::gateway::SimulatedGateway;
use cafe_lambda_payment::requests::PaymentRequests;
use cafe_localstack::lambda::{EventSourceMapping, MappingConfig};
use cafe_localstack::testing::eventually;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

const BOUND: u64 = 15;
const ORDERS: usize = 60;

/// Visible plus in-flight messages, read here rather than through the library's
/// `queue_counts`, which the gate under test uses itself.
async fn depth(world: &World, queue: &str) -> u64 {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let attrs = world
        .sqs
        .get_queue_attributes()
        .queue_url(queue)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap_or_default();
    let n = |a: A| attrs.get(&a).map_or(0, |v| v.parse::<u64>().unwrap());
    n(A::ApproximateNumberOfMessages) + n(A::ApproximateNumberOfMessagesNotVisible)
}

#[tokio::test]
async fn a_stopped_payment_function_leaves_the_backlog_in_the_stream_not_the_queue() {
    let world = World::new().await;
    let (queue, dlq) = world.queue().await;
    let leases = world.leases_table().await;
    let stop_worker = CancellationToken::new();
    let worker = world.spawn_worker(
        &leases,
        "payment-requests",
        PaymentRequests::with_bound(world.sqs.clone(), &queue, BOUND),
        &stop_worker,
    );

    // The function is stopped: orders keep arriving, and the queue is watched all along.
    let orders: Vec<String> = (0..ORDERS).map(|i| format!("o-bp-{i:03}")).collect();
    let mut deepest = 0;
    for chunk in orders.chunks(10) {
        for id in chunk {
            world.place(id, "c-1", 1).await;
        }
        deepest = deepest.max(depth(&world, &queue).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..15 {
        deepest = deepest.max(depth(&world, &queue).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // It filled up to its bound, and no further: the rest waits in the stream.
    assert!(deepest <= BOUND, "queue reached {deepest}, bound {BOUND}");
    assert_eq!(
        depth(&world, &queue).await,
        BOUND,
        "the queue should be full to its bound"
    );

    // The function runs again (in-process here, as the emulator would call it).
    let payments = world.handler(SimulatedGateway::default());
    let mapping = EventSourceMapping::new(
        world.sqs.clone(),
        &queue,
        InProcess(payments.clone()),
        MappingConfig {
            visibility_timeout: Duration::from_secs(10),
            pollers: 1,
            ..MappingConfig::default()
        },
    )
    .await
    .unwrap();
    let (stop_mapping, stopped) = watch::channel(false);
    let mapping = tokio::spawn(mapping.run(stopped));

    eventually("every order paid", Duration::from_secs(90), async || {
        for id in &orders {
            if world.status(id).await != Some(OrderStatus::Paid) {
                return false;
            }
        }
        true
    })
    .await;
    for id in &orders {
        assert_eq!(world.payment_events(id).await, 1, "{id} settled more than once");
    }
    // Each order was charged once: one decision per payment at the gateway.
    assert_eq!(payments.gateway().decisions(), ORDERS);
    assert_eq!(payments.gateway().authorizations(), ORDERS);

    stop_mapping.send(true).unwrap();
    mapping.await.unwrap();
    stop_worker.cancel();
    worker.await.unwrap();
    assert!(drain(&world.sqs, &dlq, Duration::from_secs(30)).await.is_empty());
    assert_eq!(depth(&world, &queue).await, 0);
}
