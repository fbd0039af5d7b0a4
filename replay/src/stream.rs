//! Reading the Kinesis stream: a shard from a starting point to a bound or its tip (a
//! rebuild from the stream, and a swap's catch-up with what happened after the
//! watermark).
//!
//! Within a shard records come in order, so each aggregate's events (one aggregate, one
//! shard) are applied in version order. A resharding inside the range read lets a
//! child's records be applied before its parent's are finished: the version guards then
//! keep the newer state, and verification shows any gap.

use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::DateTime as AwsDateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use cafe_consumers::retrieval::{MAX_RECORD_BYTES, deaggregated, is_before, read_limit};
use cafe_events::EventEnvelope;
use cafe_projections::Positioned;
use chrono::{DateTime, Utc};

use crate::error::ReplayError;

/// Where to start reading one shard.
#[derive(Debug, Clone)]
pub enum Start {
    /// Its oldest record.
    TrimHorizon,
    /// Records that arrived at or after this time.
    At(DateTime<Utc>),
    /// This record on.
    AtSequence(String),
    /// After this record.
    AfterSequence(String),
}

/// Where one shard's read ends (besides the shard's tip).
#[derive(Debug, Clone, Default)]
pub struct Bound {
    /// The last record to read, by sequence number.
    pub to_sequence: Option<String>,
    /// Records that arrived after this are not read (arrival times only grow within a
    /// shard).
    pub arrived_by: Option<DateTime<Utc>>,
}

/// Records per GetRecords call at most (the service's maximum).
const LIMIT: i32 = 10_000;
/// Bytes each GetRecords call is aimed at, as the live workers do: a call of 10,000
/// aggregated records can return 10 MiB, and every shard holds one batch of decoded
/// events at a time, so memory stays flat whatever the history's length.
const READ_BUDGET: usize = 2 * 1024 * 1024;

fn kinesis_error(op: &str, e: impl std::fmt::Display) -> ReplayError {
    ReplayError::Stream(format!("{op}: {e}"))
}

/// The stream's shards, parents before children as ListShards lists them.
pub async fn shards(kinesis: &Client, stream: &str) -> Result<Vec<String>, ReplayError> {
    let mut shards = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut req = kinesis.list_shards();
        req = match &next {
            Some(token) => req.next_token(token),
            None => req.stream_name(stream),
        };
        let out = req
            .send()
            .await
            .map_err(|e| kinesis_error("ListShards", aws_sdk_kinesis::error::DisplayErrorContext(e)))?;
        shards.extend(out.shards().iter().map(|s| s.shard_id().to_owned()));
        next = out.next_token().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    Ok(shards)
}

/// Checks that `shard` of `stream` holds `sequence`: bad input if not (nothing read).
pub async fn check_sequence(kinesis: &Client, stream: &str, shard: &str, sequence: &str) -> Result<(), ReplayError> {
    let out = kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(shard)
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .starting_sequence_number(sequence)
        .send()
        .await;
    match out {
        Ok(_) => Ok(()),
        Err(e) => {
            let usage = e
                .as_service_error()
                .is_some_and(|s| s.is_invalid_argument_exception() || s.is_resource_not_found_exception());
            let message = aws_sdk_kinesis::error::DisplayErrorContext(e).to_string();
            if usage {
                Err(ReplayError::BadInput(format!(
                    "sequence number {sequence} is not in shard {shard} of {stream}: {message}"
                )))
            } else {
                Err(kinesis_error("GetShardIterator", message))
            }
        }
    }
}

/// Reads one shard from a start to a bound or its tip, a GetRecords batch at a time.
#[derive(Debug)]
pub struct ShardReader<'a> {
    kinesis: &'a Client,
    bound: Bound,
    iterator: Option<String>,
    ended: bool,
    limit: i32,
}

/// One GetRecords batch: the decoded events (records that do not decode are skipped:
/// the live projectors parked them) and the batch's last sequence number.
#[derive(Debug)]
pub struct Records {
    /// The events, in the shard's order.
    pub events: Vec<Positioned>,
    /// Where a later read continues after.
    pub last: String,
}

impl<'a> ShardReader<'a> {
    /// Opens `shard` of `stream` at `start`. A starting sequence number the shard does
    /// not hold is bad input.
    pub async fn open(
        kinesis: &'a Client,
        stream: &str,
        shard: &str,
        start: &Start,
        bound: Bound,
    ) -> Result<ShardReader<'a>, ReplayError> {
        let req = kinesis.get_shard_iterator().stream_name(stream).shard_id(shard);
        let req = match start {
            Start::TrimHorizon => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
            Start::At(t) => req
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(AwsDateTime::from_millis(t.timestamp_millis())),
            Start::AtSequence(s) => req
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(s),
            Start::AfterSequence(s) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(s),
        };
        let iterator = match req.send().await {
            Ok(out) => out.shard_iterator,
            Err(e) => {
                let invalid = e.as_service_error().is_some_and(|s| s.is_invalid_argument_exception());
                let message = aws_sdk_kinesis::error::DisplayErrorContext(e).to_string();
                return Err(match start {
                    Start::AtSequence(s) | Start::AfterSequence(s) if invalid => ReplayError::BadInput(format!(
                        "sequence number {s} is not in shard {shard} of {stream}: {message}"
                    )),
                    _ => kinesis_error("GetShardIterator", message),
                });
            }
        };
        Ok(ShardReader {
            kinesis,
            bound,
            iterator,
            ended: false,
            limit: read_limit(READ_BUDGET, MAX_RECORD_BYTES, LIMIT),
        })
    }

    /// The next batch holding records, or `None` at the bound or the shard's tip.
    pub async fn next(&mut self) -> Result<Option<Records>, ReplayError> {
        while !self.ended {
            let Some(it) = self.iterator.take() else { break };
            let out = self
                .kinesis
                .get_records()
                .shard_iterator(it)
                .limit(self.limit)
                .send()
                .await
                .map_err(|e| kinesis_error("GetRecords", aws_sdk_kinesis::error::DisplayErrorContext(e)))?;
            let bytes: usize = out.records().iter().map(|r| r.data().as_ref().len()).sum();
            if let Some(average) = bytes.checked_div(out.records().len()) {
                self.limit = read_limit(READ_BUDGET, average, LIMIT);
            }
            let mut events = Vec::new();
            let mut last = None;
            for r in out.records() {
                let past_sequence = self
                    .bound
                    .to_sequence
                    .as_deref()
                    .is_some_and(|to| is_before(to, r.sequence_number()));
                let past_time = self.bound.arrived_by.is_some_and(|by| {
                    r.approximate_arrival_timestamp()
                        .is_some_and(|t| t.to_millis().unwrap_or(i64::MAX) > by.timestamp_millis())
                });
                if past_sequence || past_time {
                    self.ended = true;
                    break;
                }
                let data = bytes::Bytes::copy_from_slice(r.data().as_ref());
                for user in deaggregated(r.sequence_number(), r.partition_key(), data) {
                    if let Ok(event) = EventEnvelope::decode(&user.data) {
                        events.push(Positioned {
                            event,
                            sequence: user.sequence,
                            sub: user.sub,
                        });
                    }
                }
                last = Some(r.sequence_number().to_owned());
            }
            let empty = out.records().is_empty();
            if empty && out.millis_behind_latest().unwrap_or(0) == 0 {
                self.ended = true;
            }
            self.iterator = out.next_shard_iterator().map(str::to_owned);
            if let Some(last) = last {
                return Ok(Some(Records { events, last }));
            }
            if empty && !self.ended {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(None)
    }
}
