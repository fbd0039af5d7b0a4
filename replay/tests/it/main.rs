//! Replays against the real local servers: the event store on the DynamoDB stand-in,
//! every read model in its own store.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod helpers;
mod rebuild;
mod storm;
mod swap;
