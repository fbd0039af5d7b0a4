//! The CloudCafe application as a library: the composition root of the running system
//! (command API, queries, outbox relay, one projector worker per read model, the payment
//! saga, `/metrics`), so that `cafe run`, the tests (started in-process on port 0) and
//! the benchmarks all start the same thing. The `cafe` binary parses arguments, calls
//! this and prints.
//!
//! This crate is wiring: every rule lives in the domain crates. Its errors are `anyhow`
//! because its callers only report them (a failed start-up names what it was
//! connecting to; nothing matches on the kind).

pub mod app;
pub mod app_metrics;
pub mod chaos;
pub mod cost;
pub mod dashboard;
pub mod invariants;
pub mod load;
pub mod observability;
pub mod payments;
pub mod pipeline;
pub mod read_side;
pub mod scenario;
pub mod serve;
pub mod token;

pub use app::{Application, Running, Settings, Stopped};

/// A command-line duration (`humantime`: `30s`, `2m`) that must be longer than zero.
pub fn positive_duration(s: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than zero".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}
