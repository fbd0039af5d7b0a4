//! Fault injection for the event store: no local emulator throttles, so this wrapper
//! fails a chosen fraction of calls with [`StoreError::Throttled`] *before* they reach
//! the store (as DynamoDB does: a throttled request changes nothing).

use std::sync::Mutex;
use std::time::Duration;

use cafe_events::{AggregateId, EventEnvelope};

use super::{Append, EventStore, IdempotencyClaim, IdempotencyRecord, StoreError};

/// Wraps a store; `fail_per_mille` / 1000 of calls are throttled. Deterministic per seed.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    fail_per_mille: u64,
    state: Mutex<u64>,
}

impl<S> FaultyStore<S> {
    /// A wrapper throttling `fail_per_mille` / 1000 of calls.
    pub fn new(inner: S, fail_per_mille: u64, seed: u64) -> Self {
        FaultyStore {
            inner,
            fail_per_mille,
            state: Mutex::new(seed | 1),
        }
    }

    fn gate(&self, op: &str) -> Result<(), StoreError> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        if *s % 1000 < self.fail_per_mille {
            Err(StoreError::Throttled(format!(
                "ProvisionedThroughputExceededException (injected on {op})"
            )))
        } else {
            Ok(())
        }
    }
}

impl<S: EventStore> EventStore for FaultyStore<S> {
    async fn load(&self, id: &AggregateId) -> Result<Vec<EventEnvelope>, StoreError> {
        self.gate("Query")?;
        self.inner.load(id).await
    }
    async fn append(&self, events: &[EventEnvelope], claim: Option<&IdempotencyClaim>) -> Result<(), StoreError> {
        self.gate("TransactWriteItems")?;
        self.inner.append(events, claim).await
    }
    async fn append_group(&self, appends: &[Append<'_>]) -> Result<(), StoreError> {
        self.gate("TransactWriteItems")?;
        self.inner.append_group(appends).await
    }
    async fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.gate("GetItem")?;
        self.inner.idempotency(key).await
    }
    async fn pending(&self, older_than: Duration, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        self.gate("Query pending")?;
        self.inner.pending(older_than, limit).await
    }
    async fn mark_published(&self, events: &[EventEnvelope]) -> Result<(), StoreError> {
        self.gate("BatchWriteItem")?;
        self.inner.mark_published(events).await
    }
}
