//! The consumer runtime against the local stack (`infra/local/dev.sh test` starts it).
// Tests fail by panicking; unwrap is the assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod cloudwatch;
mod fanout;
mod helpers;
mod lag;
mod lease;
mod monitor;
mod retrieval;
mod worker;
