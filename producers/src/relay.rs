//! The outbox relay: publishes events that were appended but never marked published.
//!
//! The command path publishes right after appending; if the process dies in between,
//! or Kinesis keeps refusing, the event keeps its pending marker. The relay scans the
//! pending index for events older than a threshold (younger ones are probably still being
//! published by their command) and publishes them, in version order per aggregate.
//! Publishing twice is possible (the command path and the relay racing), never losing:
//! delivery is at-least-once and every read model is idempotent by (aggregate, version).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::Instrument;

use crate::publish::{PublishError, Publisher, RecordSink};
use crate::store::{EventStore, StoreError};

/// Tuning of the relay.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Pause between scans when nothing was pending.
    pub interval: Duration,
    /// Only events appended longer ago than this are republished.
    pub older_than: Duration,
    /// Events per scan.
    pub batch: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            interval: Duration::from_secs(1),
            older_than: Duration::from_secs(5),
            batch: 500,
        }
    }
}

/// What the relay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// Events republished and marked.
    pub published: u64,
    /// Scans that failed (retried at the next interval).
    pub failed_scans: u64,
}

/// The relay's progress as it goes, for metrics read while it runs: what its last scan
/// found is the outbox's stranded backlog (events a command could not publish).
#[derive(Debug, Default)]
pub struct RelayProgress {
    /// Events pending longer than the threshold at the last scan (at most one batch:
    /// a value equal to the batch means at least that many).
    pub pending: AtomicU64,
    /// Events republished and marked since start.
    pub published: AtomicU64,
    /// Scans that failed since start.
    pub failed_scans: AtomicU64,
}

impl RelayProgress {
    /// The totals so far.
    pub fn stats(&self) -> RelayStats {
        RelayStats {
            published: self.published.load(Ordering::Relaxed),
            failed_scans: self.failed_scans.load(Ordering::Relaxed),
        }
    }
}

/// What one pass found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayPass {
    /// Events pending longer than the threshold (at most one batch).
    pub found: usize,
    /// Of those, published and marked.
    pub published: usize,
}

/// Why one relay pass failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Kinesis refused outright.
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// One pass: publish up to `batch` pending events and clear their markers. Returns how
/// many were published.
pub async fn relay_once<S: EventStore, K: RecordSink>(
    store: &S,
    publisher: &Publisher<K>,
    cfg: &RelayConfig,
) -> Result<usize, RelayError> {
    Ok(relay_pass(store, publisher, cfg).await?.published)
}

/// One pass, saying what it found as well as what it published.
pub async fn relay_pass<S: EventStore, K: RecordSink>(
    store: &S,
    publisher: &Publisher<K>,
    cfg: &RelayConfig,
) -> Result<RelayPass, RelayError> {
    let pending = store.pending(cfg.older_than, cfg.batch).await?;
    let found = pending.len();
    if pending.is_empty() {
        return Ok(RelayPass::default());
    }
    let published: Vec<_> = match publisher.publish(&pending).await {
        Ok(_) => pending,
        // Mark what did go out; the rest stays pending for the next pass.
        Err(PublishError::Exhausted { not_published, .. }) => pending
            .into_iter()
            .filter(|e| !not_published.contains(&(e.aggregate_id.clone(), e.version)))
            .collect(),
        Err(e) => return Err(e.into()),
    };
    store.mark_published(&published).await?;
    Ok(RelayPass {
        found,
        published: published.len(),
    })
}

/// Runs passes until `shutdown` resolves, keeping `progress` current; a pass in
/// progress finishes first, so no event is published without its marker being cleared
/// (or left for the next run).
pub async fn run<S: EventStore, K: RecordSink>(
    store: &S,
    publisher: &Publisher<K>,
    cfg: RelayConfig,
    progress: &RelayProgress,
    shutdown: impl Future<Output = ()>,
) -> RelayStats {
    tokio::pin!(shutdown);
    loop {
        let pass = relay_pass(store, publisher, &cfg).instrument(tracing::debug_span!("relay_pass"));
        let more = match pass.await {
            Ok(pass) => {
                progress.pending.store(pass.found as u64, Ordering::Relaxed);
                progress.published.fetch_add(pass.published as u64, Ordering::Relaxed);
                if pass.published > 0 {
                    tracing::info!(events = pass.published, "relay republished pending events");
                }
                pass.found == cfg.batch
            }
            Err(e) => {
                progress.failed_scans.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "relay pass failed; retrying next interval");
                false
            }
        };
        if more {
            continue;
        }
        tokio::select! {
            _ = &mut shutdown => return progress.stats(),
            _ = tokio::time::sleep(cfg.interval) => {}
        }
    }
}
