//! The event store port and its DynamoDB adapter.
//!
//! One item per event, keyed `(aggregate_id, version)`. An append is one
//! TransactWriteItems: a conditional put per event (`attribute_not_exists`, so a
//! concurrent writer gets a typed [`StoreError::Conflict`], never a gap or a duplicate
//! version) plus, for commands that carry an `Idempotency-Key`, a conditional put of the
//! idempotency record holding the response, so a retry returns the same answer without a
//! second write.
//!
//! Every new event also carries a *pending* marker (`pending_bucket`, `appended_at`),
//! the key of a sparse index: it is removed once Kinesis accepted the event, so the
//! outbox relay finds anything appended but never published, e.g. after a crash between
//! append and publish.

#[cfg(feature = "aws")]
mod dynamo;
mod faulty;
mod group;

#[cfg(feature = "aws")]
pub use dynamo::{DynamoEventStore, PENDING_INDEX};
pub use faulty::FaultyStore;
pub use group::{GroupCommit, GroupStats};

use std::time::Duration;

use cafe_events::{AggregateId, EventEnvelope};
use serde::{Deserialize, Serialize};

/// Buckets of the pending index. Spreading the sparse index over several partition keys
/// keeps one hot key from throttling appends at the morning rush.
pub const PENDING_BUCKETS: u32 = 16;

/// The response stored with an idempotency key, returned verbatim on a retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: serde_json::Value,
}

/// An idempotency record to write atomically with the events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyClaim {
    /// The client's `Idempotency-Key`.
    pub key: String,
    /// Hash of the request (method, path, body): the same key with another request is an error.
    pub request_hash: String,
    /// What to answer on a retry.
    pub response: StoredResponse,
    /// How long the record lives (DynamoDB TTL).
    pub ttl: Duration,
}

/// One command's part of a grouped append: its events and its idempotency claim.
#[derive(Debug, Clone, Copy)]
pub struct Append<'a> {
    /// Consecutive versions of one aggregate.
    pub events: &'a [EventEnvelope],
    /// The idempotency record to write with them, if the command has a key.
    pub claim: Option<&'a IdempotencyClaim>,
}

impl Append<'_> {
    /// The writes this append costs in one transaction: an item per event, and the claim.
    pub fn actions(&self) -> usize {
        self.events.len() + usize::from(self.claim.is_some())
    }
}

/// Most writes one TransactWriteItems may carry (a DynamoDB limit).
pub const MAX_TRANSACTION_ACTIONS: usize = 100;

/// What an idempotency key already stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRecord {
    /// Hash of the request it was first used with.
    pub request_hash: String,
    /// The response given then.
    pub response: StoredResponse,
}

/// Why the event store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another writer appended to the aggregate first; reload and decide again.
    #[error("version conflict on {aggregate_id} at version {version}")]
    Conflict {
        /// The aggregate.
        aggregate_id: String,
        /// The version that was already taken.
        version: u64,
    },
    /// The idempotency key was claimed concurrently; read it and answer from it.
    #[error("idempotency key {0} was claimed concurrently")]
    IdempotencyRace(String),
    /// A stored event does not decode: a poison record, not a transient failure.
    #[error("stored event {aggregate_id}/{version} is corrupt: {reason}")]
    Corrupt {
        /// The aggregate.
        aggregate_id: String,
        /// The version.
        version: u64,
        /// Why.
        reason: String,
    },
    /// A grouped append was refused as a whole because a condition of one of its members
    /// failed (a version conflict or a used idempotency key). Nothing was written; each
    /// member must be appended on its own to learn its own answer.
    #[error("grouped append refused: {0}")]
    GroupRefused(String),
    /// The request was refused for capacity; retry with backoff.
    #[error("throttled: {0}")]
    Throttled(String),
    /// Anything else from the service or the network; retry with backoff.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// Whether retrying the same call may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Throttled(_) | StoreError::Unavailable(_))
    }
}

/// The event store port. Handlers are generic over it, never over an SDK client.
pub trait EventStore: Send + Sync + 'static {
    /// Every event of one aggregate, in version order.
    fn load(&self, id: &AggregateId) -> impl Future<Output = Result<Vec<EventEnvelope>, StoreError>> + Send;

    /// Appends events (consecutive versions of one aggregate) atomically, together with
    /// an optional idempotency claim.
    fn append(
        &self,
        events: &[EventEnvelope],
        claim: Option<&IdempotencyClaim>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Appends several commands' events in one atomic call: all of them or none.
    /// Members must name distinct aggregates and distinct idempotency keys, and carry at
    /// most [`MAX_TRANSACTION_ACTIONS`] writes in all. A failed condition of any member is
    /// [`StoreError::GroupRefused`].
    fn append_group(&self, appends: &[Append<'_>]) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The record behind an idempotency key, if any.
    fn idempotency(&self, key: &str) -> impl Future<Output = Result<Option<IdempotencyRecord>, StoreError>> + Send;

    /// Events still marked pending that were appended more than `older_than` ago.
    fn pending(
        &self,
        older_than: Duration,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<EventEnvelope>, StoreError>> + Send;

    /// Clears the pending marker of events Kinesis accepted.
    fn mark_published(&self, events: &[EventEnvelope]) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Reads the whole history: every event the store holds, in no particular order. The
/// event store is the only complete copy (a stream keeps a retention window), so
/// rebuilding a read model from scratch starts here. Separate from [`EventStore`]: the
/// command side never needs it, and a replay needs nothing else.
pub trait HistoryReader: Send + Sync + 'static {
    /// Pages of events read by `segments` parallel readers (at least 1), each page at
    /// most `page_size` items. Each aggregate's versions may arrive in any order and
    /// interleaved with other aggregates'; a reader that applies them sorts per
    /// aggregate. An event appended after the call started may or may not be included.
    fn read_all(
        &self,
        segments: u32,
        page_size: u32,
    ) -> impl futures::Stream<Item = Result<Vec<EventEnvelope>, StoreError>> + Send + '_;

    /// One page of segment `segment` of `segments`, starting after `after` (an event's
    /// key; `None` for the segment's start): what a reader that checkpoints its place
    /// and resumes from it reads with. Within a segment, one aggregate's events come
    /// together and in version order.
    fn read_page(
        &self,
        segment: u32,
        segments: u32,
        after: Option<&EventKey>,
        page_size: u32,
    ) -> impl Future<Output = Result<HistoryPage, StoreError>> + Send;

    /// Every event of the aggregate whose id reads `aggregate_id` (the read models know
    /// ids as text, not their type), in version order.
    fn history_of(&self, aggregate_id: &str) -> impl Future<Output = Result<Vec<EventEnvelope>, StoreError>> + Send;
}

/// Where an event sits in the store: its aggregate's id as text and its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventKey {
    /// The aggregate id, as stored.
    pub aggregate_id: String,
    /// The version.
    pub version: u64,
}

/// One page of a segment.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    /// The events with their keys, in the segment's order.
    pub events: Vec<(EventKey, EventEnvelope)>,
    /// Where the segment goes on after this page (the store's last evaluated key),
    /// or `None` when it ends here.
    pub next: Option<EventKey>,
}
