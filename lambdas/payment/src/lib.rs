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
