//! The publisher: events in, Kinesis records out, nothing dropped silently.
//!
//! Records queue in *lanes*: one per predicted shard when aggregating (KPL format), one
//! per partition key otherwise. A PutRecords round sends only the head of each lane
//! (≤ 500 entries, ≤ 5 MiB), so a throttled entry is retried before anything behind it
//! in its lane: a retry never reorders one aggregate's events. Failed entries alone are
//! retried, after a full-jitter exponential backoff. The bytes of all publishes in flight
//! are bounded by a semaphore: when it is exhausted callers wait (back-pressure) and
//! [`Publisher::is_saturated`] lets the API answer 503 instead of queueing without bound.
//! Events that still fail are returned in [`PublishError::Exhausted`]; they keep their
//! pending marker in the event store, and the outbox relay publishes them later.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use cafe_events::kpl::{self, UserRecord};
use cafe_events::{AggregateId, EventEnvelope};
use tokio::sync::{OwnedSemaphorePermit, RwLock, Semaphore};
use tracing::Instrument;

use super::sink::{Entry, EntryOutcome, RecordSink, ShardRange, SinkError};

/// Kinesis limits of one PutRecords request.
const MAX_ENTRIES_PER_CALL: usize = 500;
const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;

/// Tuning of a [`Publisher`].
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// Pack user records per shard in the KPL aggregated format.
    pub aggregate: bool,
    /// Tries per entry before it is given back to the caller.
    pub max_attempts: u32,
    /// First backoff step.
    pub base_backoff: Duration,
    /// Backoff ceiling.
    pub max_backoff: Duration,
    /// Bytes of all publishes in flight at once.
    pub max_in_flight_bytes: usize,
    /// Largest aggregated record (Kinesis allows 1 MiB including the partition key).
    pub max_aggregate_bytes: usize,
}

impl Default for PublisherConfig {
    fn default() -> Self {
        PublisherConfig {
            aggregate: true,
            max_attempts: 10,
            base_backoff: Duration::from_millis(25),
            max_backoff: Duration::from_secs(2),
            max_in_flight_bytes: 64 * 1024 * 1024,
            max_aggregate_bytes: 1_000_000,
        }
    }
}

/// What one publish did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Events published.
    pub events: usize,
    /// Kinesis records they went out as (fewer when aggregated).
    pub kinesis_records: usize,
    /// PutRecords calls made.
    pub calls: usize,
    /// Entries that failed at least once and were retried.
    pub retries: usize,
}

/// Why some events were not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Some entries kept failing; these events were not published (they stay pending).
    #[error("{} events not accepted after retries (last error {last_code})", not_published.len())]
    Exhausted {
        /// `(aggregate, version)` of every event not published.
        not_published: Vec<(AggregateId, u64)>,
        /// The last failure seen.
        last_code: String,
        /// What did get through.
        report: PublishReport,
    },
    /// The stream refused the call outright (missing stream, invalid request).
    #[error("kinesis refused the request: {0}")]
    Sink(SinkError),
}

struct Pending {
    entry: Entry,
    events: Vec<(AggregateId, u64)>,
    predicted_shard: Option<String>,
    attempts: u32,
}

/// Running totals of a publisher (read by benchmarks and the producer's metrics).
#[derive(Debug, Default)]
pub struct PublisherTotals {
    /// Events (user records) published.
    pub events: AtomicU64,
    /// Kinesis records they went out as.
    pub kinesis_records: AtomicU64,
    /// Entries retried after a failure.
    pub retries: AtomicU64,
    /// Entry refusals that were throttles (the shard's write limit): the sign to add
    /// shards, where other failures are Kinesis's own.
    pub throttled: AtomicU64,
    /// Events given up on after every attempt: left pending for the relay.
    pub not_published: AtomicU64,
    /// Aggregated records that landed on another shard than predicted (the stream was
    /// resharded since the shard map was read).
    pub mispredicted: AtomicU64,
    /// Times the shard map was (re)read.
    pub shard_map_reads: AtomicU64,
}

/// Publishes events to one stream through a [`RecordSink`].
#[derive(Debug)]
pub struct Publisher<S> {
    totals: PublisherTotals,
    sink: S,
    cfg: PublisherConfig,
    in_flight: Arc<Semaphore>,
    capacity_kib: u32,
    shards: RwLock<Option<Vec<ShardRange>>>,
    shards_stale: AtomicBool,
    jitter_seed: AtomicU64,
}

impl<S: RecordSink> Publisher<S> {
    /// A publisher over a sink.
    pub fn new(sink: S, cfg: PublisherConfig) -> Self {
        let capacity_kib = u32::try_from(cfg.max_in_flight_bytes / 1024).unwrap_or(u32::MAX).max(1);
        Publisher {
            totals: PublisherTotals::default(),
            sink,
            in_flight: Arc::new(Semaphore::new(capacity_kib as usize)),
            capacity_kib,
            cfg,
            shards: RwLock::new(None),
            shards_stale: AtomicBool::new(true),
            jitter_seed: AtomicU64::new(0),
        }
    }

    /// True when the in-flight budget is used up: new work would wait.
    pub fn is_saturated(&self) -> bool {
        self.in_flight.available_permits() == 0
    }

    /// Bytes reserved by publishes queued or in flight now (to the KiB the budget
    /// counts in).
    pub fn in_flight_bytes(&self) -> u64 {
        let used = self.capacity_kib as usize - self.in_flight.available_permits().min(self.capacity_kib as usize);
        used as u64 * 1024
    }

    /// Totals since start.
    pub fn totals(&self) -> &PublisherTotals {
        &self.totals
    }

    /// The sink, e.g. to read the stream back in tests.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Publishes events; per aggregate, in the order given. Waits while the in-flight
    /// budget is used up.
    pub async fn publish(&self, events: &[EventEnvelope]) -> Result<PublishReport, PublishError> {
        let users = user_records(events);
        let bytes: usize = users.iter().map(|(u, _)| u.data.len()).sum();
        let _room = self.reserve(bytes).await;
        self.publish_users(users).await
    }

    /// Room for `bytes` more in flight; held until the returned permit drops. Callers
    /// that queue events before publishing them reserve first, so the queue is inside the
    /// budget too.
    pub async fn reserve(&self, bytes: usize) -> Option<OwnedSemaphorePermit> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .clamp(1, self.capacity_kib);
        // The semaphore is never closed, so acquiring cannot fail; if it ever did,
        // publishing unthrottled is still correct.
        self.in_flight.clone().acquire_many_owned(kib).await.ok()
    }

    /// Publishes events whose room was reserved with [`Publisher::reserve`].
    pub async fn publish_reserved(&self, events: &[EventEnvelope]) -> Result<PublishReport, PublishError> {
        self.publish_users(user_records(events)).await
    }

    async fn publish_users(&self, users: Vec<(UserRecord, (AggregateId, u64))>) -> Result<PublishReport, PublishError> {
        let events = users.len();
        if events == 0 {
            return Ok(PublishReport::default());
        }
        let mut lanes = if self.cfg.aggregate {
            match self.shard_map().await {
                Some(map) => self.aggregated_lanes(users, &map),
                None => raw_lanes(users),
            }
        } else {
            raw_lanes(users)
        };
        let span = tracing::debug_span!("publish", events, lanes = lanes.len());
        self.drain(&mut lanes, events).instrument(span).await
    }

    async fn shard_map(&self) -> Option<Vec<ShardRange>> {
        if !self.shards_stale.load(Ordering::Acquire)
            && let Some(map) = self.shards.read().await.as_ref()
        {
            return Some(map.clone());
        }
        match self.sink.shards().await {
            Ok(map) if !map.is_empty() => {
                self.totals.shard_map_reads.fetch_add(1, Ordering::Relaxed);
                *self.shards.write().await = Some(map.clone());
                self.shards_stale.store(false, Ordering::Release);
                Some(map)
            }
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list shards; publishing without aggregation");
                None
            }
        }
    }

    fn aggregated_lanes(
        &self,
        users: Vec<(UserRecord, (AggregateId, u64))>,
        map: &[ShardRange],
    ) -> Vec<VecDeque<Pending>> {
        // Group by predicted shard, keeping the given order within each shard.
        let mut per_shard: Vec<Vec<(UserRecord, (AggregateId, u64))>> = map.iter().map(|_| Vec::new()).collect();
        for (u, key) in users {
            let h = kpl::partition_hash(&u.partition_key);
            let i = map.partition_point(|s| s.end < h).min(map.len() - 1);
            per_shard[i].push((u, key));
        }
        let mut lanes = Vec::new();
        for (shard, records) in map.iter().zip(per_shard) {
            let mut lane = VecDeque::new();
            let mut chunk: Vec<(UserRecord, (AggregateId, u64))> = Vec::new();
            let mut size = 0;
            for r in records {
                let len = kpl::encoded_len_upper_bound(&r.0);
                if !chunk.is_empty() && size + len > self.cfg.max_aggregate_bytes {
                    lane.push_back(pack(std::mem::take(&mut chunk), &shard.shard_id));
                    size = 0;
                }
                size += len;
                chunk.push(r);
            }
            if !chunk.is_empty() {
                lane.push_back(pack(chunk, &shard.shard_id));
            }
            if !lane.is_empty() {
                lanes.push(lane);
            }
        }
        lanes
    }

    async fn drain(&self, lanes: &mut [VecDeque<Pending>], events: usize) -> Result<PublishReport, PublishError> {
        let mut report = PublishReport {
            events,
            ..PublishReport::default()
        };
        let mut not_published = Vec::new();
        let mut last_code = String::new();
        let mut failed_rounds = 0u32;
        loop {
            let mut heads = Vec::new();
            let mut bytes = 0;
            for (i, lane) in lanes.iter().enumerate() {
                let Some(head) = lane.front() else { continue };
                let len = head.entry.data.len() + head.entry.partition_key.len();
                if heads.len() == MAX_ENTRIES_PER_CALL || (!heads.is_empty() && bytes + len > MAX_BYTES_PER_CALL) {
                    break;
                }
                bytes += len;
                heads.push(i);
            }
            if heads.is_empty() {
                break;
            }
            let entries: Vec<Entry> = heads
                .iter()
                .filter_map(|&i| lanes[i].front().map(|p| p.entry.clone()))
                .collect();
            report.calls += 1;
            let outcomes: Vec<Option<String>> = match self.sink.put_records(&entries).await {
                Ok(outcomes) => outcomes
                    .into_iter()
                    .zip(&heads)
                    .map(|(o, &i)| match o {
                        EntryOutcome::Accepted { shard_id, .. } => {
                            if lanes[i]
                                .front()
                                .and_then(|p| p.predicted_shard.as_deref())
                                .is_some_and(|p| p != shard_id)
                            {
                                // The stream was resharded: predict from a fresh map next time.
                                self.shards_stale.store(true, Ordering::Release);
                                self.totals.mispredicted.fetch_add(1, Ordering::Relaxed);
                            }
                            None
                        }
                        EntryOutcome::Failed { code } => Some(code),
                    })
                    .collect(),
                Err(e) if e.is_transient() => heads.iter().map(|_| Some(e.code.clone())).collect(),
                Err(e) => return Err(PublishError::Sink(e)),
            };
            let mut any_failed = false;
            for (code, &i) in outcomes.into_iter().zip(&heads) {
                match code {
                    None => {
                        lanes[i].pop_front();
                        report.kinesis_records += 1;
                    }
                    Some(code) => {
                        any_failed = true;
                        let Some(head) = lanes[i].front_mut() else { continue };
                        if head.attempts == 0 {
                            report.retries += 1;
                        }
                        head.attempts += 1;
                        if is_throttle(&code) {
                            self.totals.throttled.fetch_add(1, Ordering::Relaxed);
                        }
                        tracing::debug!(code = %code, attempts = head.attempts, "put failed; will retry");
                        if head.attempts >= self.cfg.max_attempts {
                            // Give up on the lane: what is behind the head must not overtake it.
                            not_published.extend(lanes[i].drain(..).flat_map(|p| p.events));
                        }
                        last_code = code;
                    }
                }
            }
            if any_failed {
                tokio::time::sleep(self.backoff(failed_rounds)).await;
                failed_rounds += 1;
            } else {
                failed_rounds = 0;
            }
        }
        let published = report.events - not_published.len();
        self.totals.events.fetch_add(published as u64, Ordering::Relaxed);
        self.totals
            .kinesis_records
            .fetch_add(report.kinesis_records as u64, Ordering::Relaxed);
        self.totals.retries.fetch_add(report.retries as u64, Ordering::Relaxed);
        self.totals
            .not_published
            .fetch_add(not_published.len() as u64, Ordering::Relaxed);
        if not_published.is_empty() {
            Ok(report)
        } else {
            Err(PublishError::Exhausted {
                not_published,
                last_code,
                report,
            })
        }
    }

    /// Full jitter: uniform in `[0, min(cap, base · 2^n)]`.
    fn backoff(&self, n: u32) -> Duration {
        let ceiling = self
            .cfg
            .base_backoff
            .saturating_mul(1u32 << n.min(16))
            .min(self.cfg.max_backoff);
        let seed = self.jitter_seed.fetch_add(1, Ordering::Relaxed);
        let r = std::collections::hash_map::RandomState::new().hash_one(seed);
        ceiling.mul_f64((r % 10_000) as f64 / 10_000.0)
    }
}

fn user_records(events: &[EventEnvelope]) -> Vec<(UserRecord, (AggregateId, u64))> {
    events
        .iter()
        .map(|e| {
            let user = UserRecord {
                partition_key: e.partition_key(),
                explicit_hash_key: None,
                data: e.encode(),
            };
            (user, (e.aggregate_id.clone(), e.version))
        })
        .collect()
}

fn pack(chunk: Vec<(UserRecord, (AggregateId, u64))>, shard_id: &str) -> Pending {
    let (users, events): (Vec<UserRecord>, Vec<(AggregateId, u64)>) = chunk.into_iter().unzip();
    let partition_key = users.first().map(|u| u.partition_key.clone()).unwrap_or_default();
    Pending {
        entry: Entry {
            partition_key,
            data: kpl::aggregate(&users),
        },
        events,
        predicted_shard: Some(shard_id.to_owned()),
        attempts: 0,
    }
}

fn raw_lanes(users: Vec<(UserRecord, (AggregateId, u64))>) -> Vec<VecDeque<Pending>> {
    let mut lanes: Vec<VecDeque<Pending>> = Vec::new();
    let mut lane_of: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (u, key) in users {
        let i = *lane_of.entry(u.partition_key.clone()).or_insert_with(|| {
            lanes.push(VecDeque::new());
            lanes.len() - 1
        });
        lanes[i].push_back(Pending {
            entry: Entry {
                partition_key: u.partition_key,
                data: u.data,
            },
            events: vec![key],
            predicted_shard: None,
            attempts: 0,
        });
    }
    lanes
}

/// Whether a PutRecords error code is the shard's write limit.
fn is_throttle(code: &str) -> bool {
    matches!(code, "ProvisionedThroughputExceededException" | "ThrottlingException")
}
