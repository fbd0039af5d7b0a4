//! The payment function of the order saga (issue 6, in progress).
//!
//! What is here so far is the part every later piece leans on and that needs no server:
//! - [`message`]: the payment request the `payments` queue carries, and the checks that
//!   decide whether a message is a request at all (a bad one must become a batch item
//!   failure with a reason, never a crashed batch);
//! - [`gateway`]: the payment-gateway port and its deterministic simulation.
//!
//! Still to come (see the closing note): the handler with `batchItemFailures`,
//! idempotency in DynamoDB, appending the result through the event store, the projector
//! that enqueues requests, and the local SQS poller.

pub mod gateway;
pub mod message;
