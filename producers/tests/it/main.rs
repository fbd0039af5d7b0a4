//! The command side against the local stack (`infra/local/dev.sh test` starts it).
// Tests fail by panicking; unwrap is the assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod auth;
mod helpers;
mod publish;
mod service;
mod store;
