//! The consumer runtime every projector and the replay tool run on: the Kinesis Client
//! Library's job, in Rust.
//!
//! # Layout
//! - [`lease`]: who processes which shard. Leases live in DynamoDB with the KCL's
//!   attribute names; every write is fenced by the lease counter, so a worker that lost
//!   a lease (it paused past the failover time and another took it) cannot checkpoint
//!   over the new owner.
//!
//! Still to come (issue 4): the worker loop (renewal, taking, shutdown handoff), adaptive polling and enhanced fan-out
//! retrieval, the processor contract with poison parking, metrics, the Lambda mode.

pub mod discovery;
pub mod lease;
pub mod retrieval;
