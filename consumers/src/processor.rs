//! The processing contract between the runtime and a projector.
//!
//! A processor gets the records of one shard in order, a batch at a time, and answers
//! one [`Outcome`] per record. The runtime walks the answers in order:
//! - [`Outcome::Done`] and [`Outcome::Park`] move the shard on (a parked record is
//!   written to the parking lot with its reason first);
//! - the first [`Outcome::Retry`] stops the walk: that record and everything after it
//!   are offered again after a backoff, whatever was answered for them, so per-shard
//!   order holds even when a processor handled later records already (it must be
//!   idempotent anyway: delivery is at-least-once);
//! - the first [`Outcome::Defer`] stops the walk the same way, but it is back-pressure,
//!   not a failure: the rest is offered again after a short fixed pause, with no warning
//!   and no growing backoff.
//!
//! The checkpoint only ever moves past records whose outcome was `Done` or `Park`.

use std::future::Future;

use crate::retrieval::Record;

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Processed; the checkpoint may move past it.
    Done,
    /// Failed for a reason that may pass (a database restarting, throttling): offer it
    /// again later. The shard waits; it is never skipped.
    Retry(String),
    /// Can never succeed (undecodable, violates an invariant): park it with the reason
    /// and move on, so one bad record cannot stall a shard.
    Park(String),
    /// Not now, and not a failure: what the processor feeds is full (a queue at its bound
    /// of requests in flight). The shard waits a short fixed pause and offers the record
    /// again, so the backlog stays in the stream, where its lag is measured, instead of
    /// piling up downstream.
    Defer(String),
}

/// Which shard a batch comes from, for logs and metrics.
#[derive(Debug, Clone, Copy)]
pub struct BatchContext<'a> {
    /// The consumer application (one per read model).
    pub application: &'a str,
    /// The shard.
    pub shard_id: &'a str,
    /// How far behind the tip of the shard this batch was read.
    pub millis_behind_latest: i64,
}

/// A projector, as the runtime drives it.
pub trait Processor: Send + Sync + 'static {
    /// Processes `records` (one shard's, in order) and answers one outcome per record,
    /// in the same order. Missing answers count as `Retry`.
    fn process(&self, ctx: BatchContext<'_>, records: &[Record]) -> impl Future<Output = Vec<Outcome>> + Send;
}

/// How far a batch's outcomes let the shard move on.
#[derive(Debug, PartialEq, Eq)]
pub struct Walk {
    /// Records at the front that are finished (done or to be parked).
    pub finished: usize,
    /// Indexes (within `finished`) to park, with their reasons.
    pub park: Vec<(usize, String)>,
    /// The reason the walk stopped early, if it did.
    pub retry: Option<String>,
    /// Whether it stopped at a [`Outcome::Defer`] (back-pressure) rather than a failure.
    pub deferred: bool,
}

/// Applies the contract above to a batch of `len` records.
pub fn walk(outcomes: &[Outcome], len: usize) -> Walk {
    let mut park = Vec::new();
    for i in 0..len {
        match outcomes.get(i) {
            Some(Outcome::Done) => {}
            Some(Outcome::Park(reason)) => park.push((i, reason.clone())),
            Some(outcome @ (Outcome::Retry(reason) | Outcome::Defer(reason))) => {
                return Walk {
                    finished: i,
                    park,
                    retry: Some(reason.clone()),
                    deferred: matches!(outcome, Outcome::Defer(_)),
                };
            }
            None => {
                return Walk {
                    finished: i,
                    park,
                    retry: Some("the processor gave no outcome for this record".into()),
                    deferred: false,
                };
            }
        }
    }
    Walk {
        finished: len,
        park,
        retry: None,
        deferred: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_stops_at_the_first_retry_and_ignores_later_answers() {
        let outcomes = [
            Outcome::Done,
            Outcome::Park("bad bytes".into()),
            Outcome::Retry("db down".into()),
            Outcome::Done,
        ];
        assert_eq!(
            walk(&outcomes, 4),
            Walk {
                finished: 2,
                park: vec![(1, "bad bytes".into())],
                retry: Some("db down".into()),
                deferred: false,
            }
        );
    }

    #[test]
    fn a_deferral_stops_the_walk_like_a_retry_but_says_it_is_back_pressure() {
        let outcomes = [Outcome::Done, Outcome::Defer("queue full".into()), Outcome::Done];
        assert_eq!(
            walk(&outcomes, 3),
            Walk {
                finished: 1,
                park: vec![],
                retry: Some("queue full".into()),
                deferred: true,
            }
        );
    }

    #[test]
    fn missing_answers_are_retried_and_a_clean_batch_finishes() {
        assert_eq!(walk(&[Outcome::Done], 3).finished, 1);
        assert!(walk(&[Outcome::Done], 3).retry.is_some());
        let clean = walk(&[Outcome::Done, Outcome::Park("x".into())], 2);
        assert_eq!((clean.finished, clean.retry), (2, None));
    }
}
