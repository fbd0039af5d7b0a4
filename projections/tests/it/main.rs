//! Integration tests of every read model against the real local servers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod active_orders;
mod analytics;
mod cache;
mod catalog;
mod conformance;
mod documents;
mod edges;
mod helpers;
mod inventory;
mod postgres;
mod query;
mod verify;
