//! Reading the Kinesis stream from a point to its tip: how a swap catches a shadow up
//! with what happened after its watermark.
//!
//! Every shard the stream lists is read (closed parents too); within a shard, records
//! come in order, so each aggregate's events (one aggregate, one shard) are applied in
//! version order. A resharding between the watermark and the swap would let a child's
//! records be applied before its parent's are finished: the version guards then keep
//! the newer state, and the final verification shows any gap.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::primitives::DateTime as AwsDateTime;
use aws_sdk_kinesis::types::ShardIteratorType;
use cafe_consumers::retrieval::deaggregated;
use cafe_events::EventEnvelope;
use cafe_projections::Positioned;
use chrono::{DateTime, Utc};

use crate::error::ReplayError;

/// Where to start reading a shard.
#[derive(Debug, Clone)]
pub enum From {
    /// Records that arrived at or after this time.
    Time(DateTime<Utc>),
    /// Records after these sequence numbers (per shard; a shard not listed is read from
    /// its start).
    After(BTreeMap<String, String>),
}

/// Records per GetRecords call.
const LIMIT: i32 = 10_000;

fn kinesis_error(op: &str, e: impl std::fmt::Display) -> ReplayError {
    ReplayError::Stream(format!("{op}: {e}"))
}

/// Reads every shard of `stream` from `from` to its tip, handing each shard's decoded
/// events to `apply` a GetRecords batch at a time (records that do not decode are
/// skipped: the live projectors parked them). Answers the last sequence number read
/// per shard: where a later read continues.
pub async fn read_to_tip<F, Fut>(
    kinesis: &Client,
    stream: &str,
    from: &From,
    mut apply: F,
) -> Result<BTreeMap<String, String>, ReplayError>
where
    F: FnMut(String, Vec<Positioned>) -> Fut,
    Fut: std::future::Future<Output = Result<(), ReplayError>>,
{
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
    let mut reached = match from {
        From::After(positions) => positions.clone(),
        From::Time(_) => BTreeMap::new(),
    };
    for shard in shards {
        let mut req = kinesis.get_shard_iterator().stream_name(stream).shard_id(&shard);
        req = match (from, reached.get(&shard)) {
            (_, Some(after)) => req
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(after),
            (From::Time(t), None) => req
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(AwsDateTime::from_millis(t.timestamp_millis())),
            (From::After(_), None) => req.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let mut iterator = req
            .send()
            .await
            .map_err(|e| kinesis_error("GetShardIterator", aws_sdk_kinesis::error::DisplayErrorContext(e)))?
            .shard_iterator
            .map(|s| s.to_owned());
        while let Some(it) = iterator {
            let out = kinesis
                .get_records()
                .shard_iterator(it)
                .limit(LIMIT)
                .send()
                .await
                .map_err(|e| kinesis_error("GetRecords", aws_sdk_kinesis::error::DisplayErrorContext(e)))?;
            let mut events = Vec::new();
            for r in out.records() {
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
                reached.insert(shard.clone(), r.sequence_number().to_owned());
            }
            let caught_up = out.millis_behind_latest().unwrap_or(0) == 0;
            let empty = out.records().is_empty();
            if !events.is_empty() {
                apply(shard.clone(), events).await?;
            }
            iterator = out.next_shard_iterator().map(str::to_owned);
            if empty && caught_up {
                break;
            }
            if empty {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    Ok(reached)
}
