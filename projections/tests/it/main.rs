//! Integration tests of every read model against the real local servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod analytics;
mod conformance;
mod helpers;
mod postgres;
