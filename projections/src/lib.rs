//! The read models: one idempotent projector per store, the queries the API serves from
//! them, and the generated histories their conformance suite replays.
//!
//! # Layout
//! - [`projector`]: the [`Projection`] trait every read model implements and the
//!   [`Projector`] that runs one on the consumer runtime (parking poison events).
//! - [`active_orders`]: the DynamoDB `active-orders` read model (orders in flight, by
//!   id and by customer), finished orders kept as expiring tombstones.
//! - [`postgres`]: the Aurora PostgreSQL read model (orders, order items, loyalty
//!   accounts and ledger) with its migrations; pools confined to a schema.
//! - [`query`]: the GET endpoints over the read models, with `min_version` waits for
//!   read-your-writes.
//! - [`documents`]: the DocumentDB read model (menu items, order documents) through the
//!   MongoDB driver: unordered, version-guarded `update` commands.
//! - [`inventory`]: the MemoryDB read model: on-hand counters per store and SKU, set by
//!   a Lua compare-and-set on the version, one script call per store, pipelined.
//! - [`cache`]: the ElastiCache layer: menu items and loyalty balances written through
//!   on change (version compare-and-set), tombstoned on retire, and [`cache::CachedReads`]
//!   for cache-aside reads that fall back to the source read model and refill.
//! - [`analytics`]: the warehouse read model (Redshift facts and dimensions, loaded
//!   through a staging table and `MERGE` by event id) behind the [`analytics::Warehouse`]
//!   port, with a Redshift Data API and a PostgreSQL adapter, and the analytics reports.
//! - [`catalog`]: the one list of read models ([`catalog::ReadModel`]), where each copy
//!   of one lives ([`catalog::Namespace`]: live, or a replay's or benchmark's own), and
//!   how to connect to it or drop it.
//! - [`names`]: status and tier names, and the status each order event leaves.
//! - [`serving`]: which copy of each model serves (a pointer a swap moves), and the
//!   projection and query side that follow it without a restart.
//! - [`verify`]: comparing two copies of a model at any size (per-bucket digests,
//!   computed in the store where it can), telling rows that are wrong or missing from
//!   rows that are only newer.
//! - [`history`]: deterministic generated histories (tests, benchmarks, replay).
//! - [`error`]: the one error type, transient or poison.
//!
//! Every projection is idempotent twice over: by `(aggregate_id, version)` guards on
//! each row or key, and, where the store has transactions, by a checkpoint written with
//! the rows.

pub mod active_orders;
pub mod analytics;
pub mod cache;
pub mod catalog;
pub mod documents;
pub mod error;
pub mod history;
pub mod inventory;
pub mod names;
pub mod postgres;
pub mod projector;
pub mod query;
mod redis_scripts;
pub mod serving;
pub mod verify;

pub use error::ProjectionError;
pub use projector::{Batch, Positioned, Projection, Projector, digest};
