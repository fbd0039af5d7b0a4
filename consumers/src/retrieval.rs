//! Polling retrieval of one shard: GetRecords, deaggregation, resuming mid-aggregate.
//!
//! A KPL-aggregated Kinesis record carries many user records under one sequence
//! number; each gets a sub-sequence number (its index). A checkpoint names both, so a
//! worker that stopped halfway through an aggregate resumes at the next user record:
//! reading starts AT_SEQUENCE_NUMBER of the checkpoint and drops what it covers.

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use cafe_events::kpl;

use crate::lease::Checkpoint;

/// One user record as a processor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The Kinesis record's sequence number.
    pub sequence: String,
    /// Its index inside a KPL aggregate (0 for a plain record).
    pub sub: u64,
    /// The user record's partition key.
    pub partition_key: String,
    /// The user record's bytes.
    pub data: Bytes,
}

impl Record {
    /// The checkpoint that says "processed up to and including this record".
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint::Sequence {
            sequence: self.sequence.clone(),
            sub: self.sub,
        }
    }
}

/// What one GetRecords call brought.
#[derive(Debug, Default)]
pub struct Batch {
    /// User records, in shard order.
    pub records: Vec<Record>,
    /// How far behind the tip of the shard this batch is.
    pub millis_behind_latest: i64,
    /// The iterator for the next call; `None` when the shard is closed and fully read.
    pub next_iterator: Option<String>,
    /// Kinesis records the call returned (before deaggregation).
    pub kinesis_records: usize,
    /// Their bytes.
    pub kinesis_bytes: usize,
}

/// A Kinesis call failed.
#[derive(Debug, thiserror::Error)]
#[error("{operation} on {shard}: {code}: {message}")]
pub struct RetrievalError {
    /// The call.
    pub operation: &'static str,
    /// The shard.
    pub shard: String,
    /// The service's error code (`ProvisionedThroughputExceededException`,
    /// `ExpiredIteratorException`, ...), for the caller to choose backoff or refresh.
    pub code: String,
    /// Its message.
    pub message: String,
}

pub(crate) fn error<E: ProvideErrorMetadata + std::fmt::Debug>(
    operation: &'static str,
    shard: &str,
    e: E,
) -> RetrievalError {
    RetrievalError {
        operation,
        shard: shard.to_owned(),
        code: e.code().unwrap_or("Unknown").to_owned(),
        message: e.message().map_or_else(|| format!("{e:?}"), str::to_owned),
    }
}

/// The iterator to resume a shard from its checkpoint; `None` for a finished shard.
/// `start_timestamp` is the application's start time, for a lease still at
/// AT_TIMESTAMP (without one, such a lease reads from TRIM_HORIZON: more, never less).
pub async fn start_iterator(
    client: &Client,
    stream: &str,
    shard: &str,
    from: &Checkpoint,
    start_timestamp: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Option<String>, RetrievalError> {
    let req = client.get_shard_iterator().stream_name(stream).shard_id(shard);
    let req = match from {
        Checkpoint::ShardEnd => return Ok(None),
        Checkpoint::TrimHorizon => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
        Checkpoint::Latest => req.shard_iterator_type(ShardIteratorType::Latest),
        Checkpoint::AtTimestamp => match start_timestamp {
            Some(at) => req.shard_iterator_type(ShardIteratorType::AtTimestamp).timestamp(
                aws_sdk_kinesis::primitives::DateTime::from_millis(at.timestamp_millis()),
            ),
            None => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
        },
        Checkpoint::Sequence { sequence, .. } => req
            .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
            .starting_sequence_number(sequence),
    };
    let out = req
        .send()
        .await
        .map_err(|e| error("GetShardIterator", shard, e.into_service_error()))?;
    Ok(out.shard_iterator)
}

/// The user records one Kinesis record carries: itself, or a KPL aggregate's members
/// numbered by sub-sequence. Shared by polling, fan-out and the Lambda mode.
pub fn deaggregated(sequence: &str, partition_key: &str, data: Bytes) -> impl Iterator<Item = Record> {
    (0u64..)
        .zip(kpl::deaggregate(partition_key, data))
        .map(move |(sub, user)| Record {
            sequence: sequence.to_owned(),
            sub,
            partition_key: user.partition_key,
            data: user.data,
        })
}

/// Whether sequence number `a` comes before `b` in their shard. They are decimal strings
/// longer than any integer type, without leading zeros: compare length, then text.
pub fn is_before(a: &str, b: &str) -> bool {
    (a.len(), a) < (b.len(), b)
}

/// The user records in Kinesis records (polled or pushed), deaggregated, minus what
/// `done` covers (anything before it, not just the sub-records of its own record: a
/// resubscription or a service that starts a little early must not replay); with the
/// count and bytes of the Kinesis records.
pub(crate) fn user_records(
    kinesis: Vec<aws_sdk_kinesis::types::Record>,
    done: &Checkpoint,
) -> (Vec<Record>, usize, usize) {
    let (mut count, mut bytes) = (0, 0);
    let mut records = Vec::new();
    for r in kinesis {
        count += 1;
        // Owned, not copied: user records of an aggregate are slices of this buffer.
        let data = Bytes::from(r.data.into_inner());
        bytes += data.len();
        records.extend(deaggregated(&r.sequence_number, &r.partition_key, data).filter(|u| {
            !matches!(done, Checkpoint::Sequence { sequence, sub: upto }
                if is_before(&u.sequence, sequence) || (*sequence == u.sequence && u.sub <= *upto))
        }));
    }
    (records, count, bytes)
}

/// One GetRecords call: deaggregated, minus what `done` already covers.
pub async fn get_batch(
    client: &Client,
    shard: &str,
    iterator: &str,
    limit: i32,
    done: &Checkpoint,
) -> Result<Batch, RetrievalError> {
    let out = client
        .get_records()
        .shard_iterator(iterator)
        .limit(limit)
        .send()
        .await
        .map_err(|e| error("GetRecords", shard, e.into_service_error()))?;
    let millis_behind_latest = out.millis_behind_latest().unwrap_or(0);
    let next_iterator = out.next_shard_iterator;
    let (records, kinesis_records, kinesis_bytes) = user_records(out.records, done);
    Ok(Batch {
        records,
        millis_behind_latest,
        next_iterator,
        kinesis_records,
        kinesis_bytes,
    })
}

/// The largest Kinesis record (a full KPL aggregate).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// GetRecords' `Limit` counts records, not bytes, and a call may return 10 MiB: with
/// aggregates of up to 1 MiB, a fixed limit would let memory per shard swing from
/// kilobytes to tens of megabytes (the body, its base64, the decoded records). Aiming
/// each call at `budget` bytes from the shard's recent record size keeps it flat. The
/// first call assumes the worst (1 MiB records).
pub fn read_limit(budget: usize, average_record: usize, max_records: i32) -> i32 {
    let n = budget / average_record.max(1);
    i32::try_from(n).unwrap_or(i32::MAX).clamp(1, max_records.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_numbers() {
        assert!(is_before("9", "10"));
        assert!(is_before(
            "49590338271490256608559692538361571095921575989136588801",
            "49590338271490256608559692538361571095921575989136588802"
        ));
        assert!(!is_before("10", "10"));
        assert!(!is_before("11", "9"));
    }

    #[test]
    fn the_read_limit_aims_at_the_byte_budget() {
        let mib = 1024 * 1024;
        assert_eq!(
            read_limit(2 * mib, MAX_RECORD_BYTES, 10_000),
            2,
            "first call: worst case"
        );
        assert_eq!(read_limit(2 * mib, 100 * 1024, 10_000), 20, "100 KiB aggregates");
        assert_eq!(read_limit(2 * mib, 300, 10_000), 6_990, "small raw records");
        assert_eq!(
            read_limit(2 * mib, 10, 10_000),
            10_000,
            "never above the service's limit"
        );
        assert_eq!(read_limit(10, 5 * mib, 10_000), 1, "always at least one");
    }
}
