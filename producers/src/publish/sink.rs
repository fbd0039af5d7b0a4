//! The PutRecords port.

use std::sync::Mutex;

use bytes::Bytes;

/// One Kinesis record to put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Routes the record to a shard.
    pub partition_key: String,
    /// The record (an envelope, or a KPL aggregate of envelopes).
    pub data: Bytes,
}

/// What happened to one entry of a PutRecords call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryOutcome {
    /// Written.
    Accepted {
        /// The shard it went to.
        shard_id: String,
        /// Its sequence number.
        sequence_number: String,
    },
    /// Not written; may be retried.
    Failed {
        /// e.g. `ProvisionedThroughputExceededException`, `InternalFailure`.
        code: String,
    },
}

/// An open shard's hash-key range (inclusive).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRange {
    /// The shard.
    pub shard_id: String,
    /// Lowest hash key.
    pub start: u128,
    /// Highest hash key.
    pub end: u128,
}

/// A whole call failed (network, service error, throttling of the call itself).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SinkError {
    /// Service error code, or `Network` / `Unknown`.
    pub code: String,
    /// Detail.
    pub message: String,
}

impl SinkError {
    /// Whether the same call may succeed later. Only a missing stream or invalid input is
    /// final; everything else (throttling, 5xx, network) is worth another try.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self.code.as_str(),
            "ResourceNotFoundException" | "ValidationException" | "InvalidArgumentException"
        )
    }
}

/// Where records go. Publishers are generic over it, never over an SDK client.
pub trait RecordSink: Send + Sync + 'static {
    /// One PutRecords call; the outcomes are in entry order.
    fn put_records(&self, entries: &[Entry]) -> impl Future<Output = Result<Vec<EntryOutcome>, SinkError>> + Send;
    /// The open shards and their hash-key ranges.
    fn shards(&self) -> impl Future<Output = Result<Vec<ShardRange>, SinkError>> + Send;
}

/// Fault injection: fails a fraction of entries with ProvisionedThroughputExceeded
/// *without sending them*, exactly as a throttled shard does, and passes the rest to the
/// inner sink. Deterministic for a seed, so a failing test can be replayed.
#[derive(Debug)]
pub struct FaultySink<S> {
    inner: S,
    fail_per_mille: u64,
    state: Mutex<u64>,
}

impl<S> FaultySink<S> {
    /// Fails `fail_per_mille` / 1000 of all entries.
    pub fn new(inner: S, fail_per_mille: u64, seed: u64) -> Self {
        FaultySink {
            inner,
            fail_per_mille,
            state: Mutex::new(seed | 1),
        }
    }

    fn roll(&self) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // xorshift64
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        *s % 1000 < self.fail_per_mille
    }
}

impl<S: RecordSink> RecordSink for FaultySink<S> {
    async fn put_records(&self, entries: &[Entry]) -> Result<Vec<EntryOutcome>, SinkError> {
        let throttled: Vec<bool> = entries.iter().map(|_| self.roll()).collect();
        let passed: Vec<Entry> = entries
            .iter()
            .zip(&throttled)
            .filter(|(_, t)| !**t)
            .map(|(e, _)| e.clone())
            .collect();
        let mut inner = if passed.is_empty() {
            Vec::new()
        } else {
            self.inner.put_records(&passed).await?
        }
        .into_iter();
        Ok(throttled
            .into_iter()
            .map(|t| {
                if t {
                    EntryOutcome::Failed {
                        code: "ProvisionedThroughputExceededException".into(),
                    }
                } else {
                    inner.next().unwrap_or(EntryOutcome::Failed {
                        code: "InternalFailure".into(),
                    })
                }
            })
            .collect())
    }

    async fn shards(&self) -> Result<Vec<ShardRange>, SinkError> {
        self.inner.shards().await
    }
}
