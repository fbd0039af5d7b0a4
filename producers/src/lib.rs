//! The command side of CloudCafe: where commands are checked against the rules, turned
//! into events, stored and published.
//!
//! The aggregates are pure functions (no I/O), so every business rule is tested without
//! a database; the command API, the DynamoDB event store, the outbox and the Kinesis
//! publisher build on them.
//!
//! # Layout
//! - [`api`]: the HTTP command API (axum router, JSON errors, edge validation).
//! - [`auth`]: who may send which command and read what (a pure policy).
//! - [`domain`]: the [`domain::Aggregate`] trait and the four aggregates:
//!   [`domain::order`], [`domain::stock`], [`domain::loyalty`], [`domain::menu`].
//! - [`store`]: the [`store::EventStore`] port, [`store::DynamoEventStore`], and
//!   [`store::GroupCommit`], which lets concurrent commands share a transaction.
//! - [`outbox`]: publishes appended events together and clears their pending markers.
//! - [`publish`]: [`publish::Publisher`] to Kinesis (batching, KPL aggregation, retries).
//! - [`relay`]: the outbox relay that republishes events left pending.
//! - [`service`]: [`service::CommandService`], the path every command takes.

pub mod api;
pub mod auth;
pub mod domain;
pub mod outbox;
pub mod publish;
pub mod relay;
pub mod service;
pub mod store;

/// Runs its closure if dropped while the thread panics: how a queue's single drain task
/// (the outbox's, the group commit's) leaves its queue usable if it dies mid-round.
struct OnPanic<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnPanic<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            (self.0)();
        }
    }
}
