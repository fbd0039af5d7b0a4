//! The command service: what every command goes through, whatever its aggregate.
//!
//! 1. A saturated publisher refuses new work (503) rather than queue without bound.
//! 2. Load the aggregate (or, for a creating command, assume it is new), decide, append
//!    the new events with the idempotency record in one transaction. A version conflict
//!    (another writer got there first) reloads and decides again, a bounded number of
//!    times.
//! 3. The idempotency record is read only when needed: the claim in the transaction is
//!    conditional, so a retry can never write twice; when the claim fails, or a retry is
//!    refused by the state its first attempt created, the stored answer is returned (or
//!    a different request under the same key is refused). This keeps a read off the hot
//!    path of every command. The appends of concurrent commands share transactions
//!    ([`crate::store::GroupCommit`]).
//! 4. Publish, then clear the pending markers, together with the events of concurrent
//!    commands ([`crate::outbox`]). A publish failure is not the client's problem: the
//!    events are stored, and the outbox relay will publish them.

use std::sync::Arc;
use std::time::Duration;

use cafe_events::{AggregateId, DomainEvent, EventEnvelope, EventId};

use crate::domain::{Aggregate, Rule};
use crate::outbox::Outbox;
use crate::publish::{Publisher, RecordSink};
use crate::store::{EventStore, GroupCommit, GroupStats, IdempotencyClaim, StoreError, StoredResponse};

/// Who asked, and the keys that make a retry safe.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandMeta {
    /// The client's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<String>,
    /// Hash of method, path and body: what the key promised to mean.
    pub request_hash: String,
    /// Groups everything caused by this request.
    pub correlation_id: String,
}

/// A command's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Executed {
    /// What to answer (stored with the idempotency key).
    pub response: StoredResponse,
    /// True when answered from an earlier identical request; nothing was written.
    pub replayed: bool,
    /// Events written by this call (empty when replayed).
    pub events: Vec<EventEnvelope>,
}

/// Why a command did not go through.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A business rule refused it (422, or 404 for a missing aggregate).
    #[error("{0}")]
    Rejected(Box<dyn Rule>),
    /// The idempotency key was used before with a different request (422).
    #[error("idempotency key was already used for a different request")]
    IdempotencyMismatch,
    /// Other writers kept winning the race for this aggregate (409).
    #[error("the aggregate kept changing; retry")]
    Conflict,
    /// The publisher is saturated (503 with Retry-After).
    #[error("too much in flight; retry shortly")]
    Saturated,
    /// The event store failed or is throttling beyond our retries (503).
    #[error("event store unavailable: {0}")]
    Unavailable(String),
}

/// Tuning of the command service.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Reload-and-decide attempts after a version conflict.
    pub conflict_retries: u32,
    /// Attempts for a throttled or failing event store call.
    pub transient_retries: u32,
    /// How long an idempotency record lives.
    pub idempotency_ttl: Duration,
    /// Fault injection for crash tests: sleep between append and publish, widening the
    /// window in which a killed process leaves events pending. `None` in normal runs.
    pub pause_after_append: Option<Duration>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            conflict_retries: 5,
            transient_retries: 5,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            pause_after_append: None,
        }
    }
}

/// Runs commands against an event store and a publisher.
#[derive(Debug)]
pub struct CommandService<S, K> {
    outbox: Arc<Outbox<GroupCommit<S>, K>>,
    relay: crate::relay::RelayProgress,
    cfg: ServiceConfig,
}

impl<S: EventStore, K: RecordSink> CommandService<S, K> {
    /// A service over its two ports.
    pub fn new(store: S, publisher: Publisher<K>, cfg: ServiceConfig) -> Self {
        CommandService {
            outbox: Outbox::new(GroupCommit::new(store), publisher),
            relay: crate::relay::RelayProgress::default(),
            cfg,
        }
    }

    /// The event store.
    pub fn store(&self) -> &S {
        self.outbox.store().inner()
    }

    /// Waits until every published event's marker is cleared (see [`Outbox::settled`]).
    pub async fn settled(&self) {
        self.outbox.settled().await;
    }

    /// How the appends of concurrent commands were grouped into transactions.
    pub fn group_stats(&self) -> &GroupStats {
        self.outbox.store().stats()
    }

    /// The publisher.
    pub fn publisher(&self) -> &Publisher<K> {
        self.outbox.publisher()
    }

    /// The progress of the relay that publishes what this service's commands could not
    /// (kept here so the process's metrics read it wherever the relay runs).
    pub fn relay_progress(&self) -> &crate::relay::RelayProgress {
        &self.relay
    }

    /// An aggregate's current state and version.
    pub async fn state<A: Aggregate>(&self, id: &AggregateId) -> Result<(A, u64), CommandError> {
        let events = self.retry_store(|| self.store().load(id)).await.map_err(unavailable)?;
        let version = events.last().map_or(0, |e| e.version);
        Ok((A::replay(events.iter().map(|e| &e.event)), version))
    }

    /// Runs one command. `respond` builds the answer from the new events and the
    /// aggregate's new version; it is stored with the idempotency key.
    pub async fn execute<A: Aggregate>(
        &self,
        id: &AggregateId,
        command: &A::Command,
        context: &A::Context,
        meta: &CommandMeta,
        respond: impl Fn(&[EventEnvelope], u64) -> StoredResponse,
    ) -> Result<Executed, CommandError> {
        self.execute_from::<A>(id, None, command, context, meta, respond).await
    }

    /// [`Self::execute`] on a state the caller has just loaded with [`Self::state`],
    /// saving the event store one read. The append is conditional on that version, so a
    /// state that went stale meanwhile costs a conflict, after which the aggregate is
    /// loaded again and the command decided again: the same answer as `execute`.
    pub async fn execute_from<A: Aggregate>(
        &self,
        id: &AggregateId,
        mut known: Option<(A, u64)>,
        command: &A::Command,
        context: &A::Context,
        meta: &CommandMeta,
        respond: impl Fn(&[EventEnvelope], u64) -> StoredResponse,
    ) -> Result<Executed, CommandError> {
        if self.publisher().is_saturated() {
            return Err(CommandError::Saturated);
        }
        let mut conflicts = 0;
        let mut assume_new = A::is_creation(command);
        loop {
            let (state, version) = if let Some(known) = known.take() {
                known
            } else if assume_new {
                (A::default(), 0)
            } else {
                self.state::<A>(id).await?
            };
            assume_new = false;
            let decided = match state.decide(command, context) {
                Ok(events) => events,
                Err(rule) => {
                    // A retry of a command that already succeeded is refused by the state it
                    // created (the order exists): answer it from its idempotency record.
                    if let Some(done) = self.replay_if_seen(meta).await? {
                        return Ok(done);
                    }
                    return Err(CommandError::Rejected(Box::new(rule)));
                }
            };
            let events = envelopes(id, version, decided, meta);
            let response = respond(&events, events.last().map_or(version, |e| e.version));
            if events.is_empty() {
                return Ok(Executed {
                    response,
                    replayed: false,
                    events,
                });
            }
            let claim = meta.idempotency_key.as_ref().map(|key| IdempotencyClaim {
                key: key.clone(),
                request_hash: meta.request_hash.clone(),
                response: response.clone(),
                ttl: self.cfg.idempotency_ttl,
            });
            match self
                .retry_store(|| self.outbox.store().append(&events, claim.as_ref()))
                .await
            {
                Ok(()) => {
                    if let Some(pause) = self.cfg.pause_after_append {
                        tokio::time::sleep(pause).await;
                    }
                    self.publish(&events).await;
                    return Ok(Executed {
                        response,
                        replayed: false,
                        events,
                    });
                }
                Err(StoreError::Conflict { version, .. }) => {
                    conflicts += 1;
                    tracing::debug!(aggregate_id = %id, version, conflicts, "version conflict; deciding again");
                    if conflicts > self.cfg.conflict_retries {
                        return Err(CommandError::Conflict);
                    }
                }
                // The key was claimed before (a retry) or concurrently: answer as that request
                // did, or refuse a different request under the same key.
                Err(StoreError::IdempotencyRace(_)) => {
                    return self
                        .replay_if_seen(meta)
                        .await?
                        .ok_or_else(|| CommandError::Unavailable("idempotency record not readable".into()));
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    /// The stored answer of an earlier request with this command's key, if any; a
    /// different earlier request under the same key is an error.
    async fn replay_if_seen(&self, meta: &CommandMeta) -> Result<Option<Executed>, CommandError> {
        let Some(key) = &meta.idempotency_key else {
            return Ok(None);
        };
        let request_hash = &meta.request_hash;
        match self
            .retry_store(|| self.store().idempotency(key))
            .await
            .map_err(unavailable)?
        {
            None => Ok(None),
            Some(record) if record.request_hash == *request_hash => Ok(Some(Executed {
                response: record.response,
                replayed: true,
                events: Vec::new(),
            })),
            Some(_) => Err(CommandError::IdempotencyMismatch),
        }
    }

    /// Publishes (with other commands' events) and clears pending markers. Failures are
    /// logged by the outbox, not returned: the events are safely stored and the relay
    /// publishes whatever is left pending.
    async fn publish(&self, events: &[EventEnvelope]) {
        let flushed = self.outbox.flush(events.to_vec()).await;
        tracing::debug!(?flushed, events = events.len(), "outbox flushed");
    }

    /// Retries transient store failures (throttling, 5xx) with exponential backoff.
    async fn retry_store<T, F, Fut>(&self, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let mut attempt = 0;
        loop {
            match call().await {
                Err(e) if e.is_transient() && attempt + 1 < self.cfg.transient_retries => {
                    tracing::debug!(error = %e, attempt, "transient event store failure; retrying");
                    tokio::time::sleep(Duration::from_millis(20) * 2u32.pow(attempt.min(6))).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

fn unavailable(e: StoreError) -> CommandError {
    CommandError::Unavailable(e.to_string())
}

/// Wraps decided events in envelopes with consecutive versions after `version`.
fn envelopes(id: &AggregateId, version: u64, events: Vec<DomainEvent>, meta: &CommandMeta) -> Vec<EventEnvelope> {
    let now = chrono::Utc::now();
    let command_id = meta
        .idempotency_key
        .clone()
        .unwrap_or_else(|| EventId::new().to_string());
    events
        .into_iter()
        .zip(version + 1..)
        .map(|(event, version)| EventEnvelope {
            event_id: EventId::new(),
            aggregate_id: id.clone(),
            version,
            occurred_at: now,
            correlation_id: meta.correlation_id.clone(),
            causation_id: command_id.clone(),
            command_id: command_id.clone(),
            event,
        })
        .collect()
}
