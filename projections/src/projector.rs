//! The bridge from the consumer runtime to a read model.
//!
//! A [`Projection`] sees decoded events of one shard, in order, a batch at a time, and
//! writes them in as few round trips as its store allows. [`Projector`] turns that into
//! the runtime's per-record [`Processor`] contract:
//! - undecodable records are parked at once (they can never be projected);
//! - a transient failure retries the whole batch (every write is idempotent, so the
//!   part that did land is harmless to repeat);
//! - a poison failure is narrowed down by applying the batch's events one at a time, so
//!   only the event the store refuses is parked and its neighbours still land.

use std::future::Future;

use cafe_consumers::{BatchContext, Outcome, Processor, Record};
use cafe_events::EventEnvelope;
use tracing::{Instrument, info_span, warn};

use crate::error::ProjectionError;

/// An event with its place in the stream.
#[derive(Debug, Clone)]
pub struct Positioned {
    /// The decoded event.
    pub event: EventEnvelope,
    /// Kinesis sequence number of the record that carried it.
    pub sequence: String,
    /// Sub-sequence within a KPL aggregate (0 for a plain record).
    pub sub: u64,
}

/// One shard's events in stream order.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The shard they come from ("replay" or a test name when not from Kinesis).
    pub shard_id: &'a str,
    /// The events.
    pub events: &'a [Positioned],
}

/// A read model's writer.
///
/// Contract: applying any event twice, or any prefix of a shard again, changes nothing;
/// events of one aggregate arrive in version order (one aggregate lives on one shard),
/// events of different aggregates in any interleaving.
pub trait Projection: Send + Sync + 'static {
    /// Stable name: the consumer application and the metrics label.
    fn name(&self) -> &'static str;

    /// Writes the events this read model cares about and ignores the rest.
    fn apply(&self, batch: Batch<'_>) -> impl Future<Output = Result<(), ProjectionError>> + Send;

    /// The whole read model as canonical text lines (sorted, one per row or key),
    /// without bookkeeping such as checkpoints. Two read models built from the same
    /// history have equal snapshots: the conformance suite and the replay tool's
    /// verification compare their [`digest`]s.
    fn snapshot(&self) -> impl Future<Output = Result<Vec<String>, ProjectionError>> + Send;
}

/// A short fingerprint of a snapshot (MD5 of its lines, in hex).
pub fn digest(lines: &[String]) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    for line in lines {
        h.update(line.as_bytes());
        h.update(b"\n");
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// A [`Projection`] driven by the consumer runtime.
#[derive(Debug)]
pub struct Projector<P> {
    projection: P,
}

impl<P: Projection> Projector<P> {
    /// Wraps a projection.
    pub fn new(projection: P) -> Self {
        Projector { projection }
    }

    /// The projection inside.
    pub fn projection(&self) -> &P {
        &self.projection
    }
}

impl<P: Projection> Processor for Projector<P> {
    async fn process(&self, ctx: BatchContext<'_>, records: &[Record]) -> Vec<Outcome> {
        let span = info_span!(
            "project",
            projector = self.projection.name(),
            shard = ctx.shard_id,
            first_sequence = records.first().map(|r| r.sequence.as_str()).unwrap_or(""),
            records = records.len(),
        );
        async move {
            let mut outcomes = vec![Outcome::Done; records.len()];
            let mut events = Vec::with_capacity(records.len());
            let mut slots = Vec::with_capacity(records.len());
            for (i, record) in records.iter().enumerate() {
                match EventEnvelope::decode(&record.data) {
                    Ok(event) => {
                        events.push(Positioned {
                            event,
                            sequence: record.sequence.clone(),
                            sub: record.sub,
                        });
                        slots.push(i);
                    }
                    Err(e) => outcomes[i] = Outcome::Park(format!("undecodable envelope: {e}")),
                }
            }
            let decoded = apply_isolating(&self.projection, ctx.shard_id, &events).await;
            for (slot, outcome) in slots.into_iter().zip(decoded) {
                outcomes[slot] = outcome;
            }
            outcomes
        }
        .instrument(span)
        .await
    }
}

/// Applies `events` as one batch; on a poison failure, one by one to find the culprit.
/// Answers one outcome per event.
pub async fn apply_isolating<P: Projection>(projection: &P, shard_id: &str, events: &[Positioned]) -> Vec<Outcome> {
    if events.is_empty() {
        return Vec::new();
    }
    match projection.apply(Batch { shard_id, events }).await {
        Ok(()) => vec![Outcome::Done; events.len()],
        Err(e) if e.is_transient() => vec![Outcome::Retry(e.to_string()); events.len()],
        Err(batch_error) => {
            warn!(error = %batch_error, "batch refused; applying its events one by one");
            let mut outcomes = Vec::with_capacity(events.len());
            for (i, one) in events.iter().enumerate() {
                match projection
                    .apply(Batch {
                        shard_id,
                        events: std::slice::from_ref(one),
                    })
                    .await
                {
                    Ok(()) => outcomes.push(Outcome::Done),
                    Err(e) if e.is_transient() => {
                        outcomes.extend(std::iter::repeat_n(Outcome::Retry(e.to_string()), events.len() - i));
                        break;
                    }
                    Err(e) => {
                        warn!(
                            event_id = %one.event.event_id,
                            aggregate = %one.event.aggregate_id,
                            version = one.event.version,
                            sequence = %one.sequence,
                            error = %e,
                            "event parked",
                        );
                        outcomes.push(Outcome::Park(e.to_string()));
                    }
                }
            }
            outcomes
        }
    }
}
