//! The consumer runtime every projector and the replay tool run on: the Kinesis Client
//! Library's job, in Rust.
//!
//! # Layout
//! - [`lease`]: who processes which shard. Leases live in DynamoDB with the KCL's
//!   attribute names; every write is fenced by the lease counter, so a worker that lost
//!   a lease (it paused past the failover time and another took it) cannot checkpoint
//!   over the new owner.
//!
//! - [`discovery`]: which shards exist and where a new lease starts.
//! - [`retrieval`]: GetRecords with KPL deaggregation and sub-sequence resume.
//! - [`fanout`]: enhanced fan-out (RegisterStreamConsumer + SubscribeToShard).
//! - [`processor`]: the contract a projector implements (per-record outcomes).
//! - [`parking`]: where poison records go, with their reason.
//! - [`worker`]: the loop that holds leases and runs one task per shard (`shard`).
//! - [`metrics`]: every metric name, and the Prometheus endpoint.
//! - [`backlog`]: records an application has not yet passed, from its checkpoints.
//! - [`lag`]: how far behind an application is, in time, per shard (from the lease
//!   table and the stream, outside the workers).
//! - [`status`]: Burrow-style health (OK, IDLE, WARN, REWIND, STALL, STOP, DEAD) by
//!   rules over a window of samples, rolled up per application.
//!
//! The Lambda mode (the same [`Processor`] under a Kinesis event source mapping) is
//! `lambdas/projector`.

pub mod backlog;
pub mod cloudwatch;
pub mod discovery;
pub mod emf;
pub mod fanout;
pub mod lag;
pub mod lease;
pub mod metrics;
pub mod monitor;
pub mod parking;
pub mod processor;
pub mod retrieval;
mod shard;
pub mod status;
mod telemetry;
pub mod worker;

pub use processor::{BatchContext, Outcome, Processor};
pub use retrieval::Record;
pub use worker::{Worker, WorkerConfig, WorkerReport};
