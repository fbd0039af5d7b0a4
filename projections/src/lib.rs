//! The read models: one idempotent projector per store, the queries the API serves from
//! them, and the generated histories their conformance suite replays.
//!
//! # Layout
//! - [`projector`]: the [`Projection`] trait every read model implements and the
//!   [`Projector`] that runs one on the consumer runtime (parking poison events).
//! - [`postgres`]: the Aurora PostgreSQL read model (orders, order items, loyalty
//!   accounts and ledger) with its migrations; pools confined to a schema.
//! - [`analytics`]: the warehouse read model (Redshift facts and dimensions, loaded
//!   through a staging table and `MERGE` by event id) behind the [`analytics::Warehouse`]
//!   port, with a Redshift Data API and a PostgreSQL adapter, and the analytics reports.
//! - [`history`]: deterministic generated histories (tests, benchmarks, replay).
//! - [`error`]: the one error type, transient or poison.
//!
//! Every projection is idempotent twice over: by `(aggregate_id, version)` guards on
//! each row or key, and, where the store has transactions, by a checkpoint written with
//! the rows.

pub mod analytics;
pub mod error;
pub mod history;
pub mod postgres;
pub mod projector;

pub use error::ProjectionError;
pub use projector::{Batch, Positioned, Projection, Projector, digest};
