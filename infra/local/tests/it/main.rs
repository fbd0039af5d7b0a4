//! Each stand-in, spoken to with the client the project uses in production: create,
//! write, read back. Needs the local stack up (`infra/local/dev.sh test` starts it).
//! Every test makes uniquely named resources, so tests run in parallel and reruns on a
//! long-lived stack never collide.

// Tests fail by panicking; unwrap is the assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;

mod cloudwatch;
mod dynamodb;
mod faults;
mod kinesis;
mod memorydb;
mod mongo;
mod postgres;
mod provisioned;
mod redis;
mod sqs;
