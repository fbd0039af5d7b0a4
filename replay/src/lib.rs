//! Replays: rebuilding read models into shadow copies, and proving them right before
//! they are used.
//!
//! A replay reads the event store (the only complete history), applies it through the
//! same projections the live pipeline runs to a *shadow* copy of each named read model
//! (its own namespace from [`cafe_projections::catalog`]), and never touches the live
//! copy, the stream, or the live consumers' leases and checkpoints.
//!
//! - **Bounded**: the end watermark is fixed when the replay is created: events that
//!   occurred after it are left out, so a replay finishes on its own under live
//!   traffic. It lies [`SETTLE`] before the creation time (or at `--until`, if
//!   earlier), so every event at or before it was committed before the replay began
//!   reading.
//! - **Resumable**: each Scan segment checkpoints the key of the last event it applied
//!   in the replays table, under the replay's id. A killed replay resumes from there;
//!   what it redoes is harmless (every projection is idempotent).
//! - **In order**: an aggregate's events live in one Scan segment (segments split the
//!   table by partition key), together and in version order, and a segment's pages are
//!   applied one after the other, so each aggregate's events reach the projections in
//!   version order, as the version guards need.
//! - **Proved**: [`Replayer::verify`] compares each shadow with the live copy by
//!   [`cafe_projections::verify`], judging rows that are newer in the live copy against
//!   the event store ([`watermark::StoreWatermark`]).
//!
//! # Layout
//! - [`record`]: a replay's parameters, watermark and checkpoints, and the table they
//!   live in.
//! - [`rebuild`]: [`Replayer`]: plan, create, run, verify, drop.
//! - [`governor`]: the pace: as fast as live projection lag and store latency allow.
//! - [`progress`]: a progress bar with rate and ETA on a terminal, log lines otherwise.
//! - [`storm`]: the query storm: analysts' reports on the warehouse while a replay
//!   writes.
//! - [`stream`]: reading the stream from a point to its tip (a swap's catch-up).
//! - [`watermark`]: which aggregates moved after a replay's watermark.
//! - [`error`]: the one error type; [`ReplayError::is_usage`] marks bad input.

pub mod error;
pub mod governor;
pub mod progress;
pub mod rebuild;
pub mod record;
pub mod storm;
pub mod stream;
pub mod watermark;

pub use cafe_consumers::lag::LagProbe;
pub use error::ReplayError;
pub use rebuild::{Counts, Plan, Replayer, RunOutcome, SwapOutcome};
pub use record::{Filter, Params, ReplayId, Replays};

/// How long before its creation a replay's watermark lies: longer than any command
/// takes from building its events to committing them, so no event at or before the
/// watermark can still appear while the replay reads.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(5);
