//! The command side of CloudCafe: where commands are checked against the rules and
//! turned into events.
//!
//! Today this crate holds the aggregates as pure functions (no I/O), so every business
//! rule is tested without a database. The command API, the DynamoDB event store and the
//! Kinesis publisher build on them (issue 3, in progress).
//!
//! # Layout
//! - [`api`]: the HTTP command API (axum router, JSON errors, edge validation).
//! - [`domain`]: the [`domain::Aggregate`] trait and the four aggregates:
//!   [`domain::order`], [`domain::stock`], [`domain::loyalty`], [`domain::menu`].
//! - [`store`]: the [`store::EventStore`] port and [`store::DynamoEventStore`].
//! - [`publish`]: [`publish::Publisher`] to Kinesis (batching, KPL aggregation, retries).
//! - [`relay`]: the outbox relay that republishes events left pending.
//! - [`service`]: [`service::CommandService`], the path every command takes.

pub mod api;
pub mod domain;
pub mod outbox;
pub mod publish;
pub mod relay;
pub mod service;
pub mod store;
