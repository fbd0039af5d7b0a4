//! The payment function of the order saga, and the consumer that feeds it.
//!
//! ```text
//! events stream ──OrderPlaced──► requests (consumer) ──► SQS payments ──► handler (Lambda)
//!                                                             │ 5 receives     │ charge once
//!                                                             ▼                ▼
//!                                                        payments-dlq   PaymentAuthorized /
//!                                                                       PaymentDeclined → order
//! ```
//!
//! - the payment request on the queue, and the checks that decide whether a message is
//!   a request at all (a bad one becomes a batch item failure, never a crash), are
//!   [`cafe_events::payment`]: a contract the saga's consumer and the function share;
//! - [`gateway`]: the payment-gateway port and its deterministic simulation;
//! - [`idempotency`]: one charge per payment over at-least-once delivery;
//! - [`handler`]: a batch in, `batchItemFailures` out;
//! - [`requests`]: `OrderPlaced` → payment request;
//! - [`config`]: the function's settings from its environment.

pub mod config;
pub mod gateway;
pub mod handler;
pub mod idempotency;
pub mod requests;

use std::sync::Arc;

use cafe_producers::publish::{KinesisSink, Publisher, PublisherConfig};
use cafe_producers::service::{CommandService, ServiceConfig};
use cafe_producers::store::DynamoEventStore;

/// The function as deployed, over the given clients: what its `main` runs once per cold
/// start, and what tests run with clients that record their calls.
pub type Function = handler::Payments<gateway::SimulatedGateway, DynamoEventStore, KinesisSink>;

/// Assembles [`Function`] from its settings: the order's event store and stream (the
/// outcome is appended through the same command service the API runs) and the
/// idempotency records.
pub fn function(
    cfg: config::PaymentConfig,
    dynamodb: aws_sdk_dynamodb::Client,
    kinesis: aws_sdk_kinesis::Client,
) -> Function {
    let store = DynamoEventStore::new(dynamodb.clone(), &cfg.events_table, &cfg.idempotency_table);
    let publisher = Publisher::new(KinesisSink::new(kinesis, &cfg.stream), PublisherConfig::default());
    let orders = Arc::new(CommandService::new(store, publisher, ServiceConfig::default()));
    let mut idempotency = idempotency::Idempotency::new(dynamodb, &cfg.idempotency_table);
    idempotency.lease = cfg.lease;
    handler::Payments::new(cfg.gateway, idempotency, orders)
}
