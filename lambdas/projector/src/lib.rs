//! A projector as a Lambda Kinesis consumer.
//!
//! In Lambda mode the event source mapping does what the worker does on ECS: it holds
//! the shard, reads it, and checkpoints. What stays ours is the processing contract:
//! [`handle`] turns a Kinesis event into the same [`Record`]s the worker hands out
//! (KPL aggregates deaggregated), runs the same [`Processor`], parks poison records in
//! the same parking lot, and answers with a partial batch response
//! (`ReportBatchItemFailures`): the sequence number of the first record that must be
//! retried. Lambda then checkpoints everything before it and retries from it, which is
//! exactly the worker's "the checkpoint only moves past finished records".
//!
//! A failure inside a KPL aggregate reports the aggregate's sequence number, so the
//! aggregate's earlier user records are offered again: harmless, every projection is
//! idempotent.

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use bytes::Bytes;
use cafe_consumers::parking::{Parked, ParkingLot};
use cafe_consumers::processor::walk;
use cafe_consumers::retrieval::deaggregated;
use cafe_consumers::{BatchContext, Outcome, Processor, Record};
use cafe_events::EventEnvelope;
use tracing::{Instrument, info_span, warn};

/// The shard a Lambda Kinesis record came from: its `eventID` is `<shardId>:<sequence>`.
fn shard_of(event_id: Option<&str>) -> &str {
    event_id
        .and_then(|id| id.split_once(':'))
        .map_or("unknown", |(shard, _)| shard)
}

/// One shard's user records, in order, in the worker's shape.
fn records_by_shard(event: &KinesisEvent) -> Vec<(String, Vec<Record>)> {
    let mut shards: Vec<(String, Vec<Record>)> = Vec::new();
    for r in &event.records {
        let shard = shard_of(r.event_id.as_deref());
        let i = match shards.iter().position(|(s, _)| s == shard) {
            Some(i) => i,
            None => {
                shards.push((shard.to_owned(), Vec::new()));
                shards.len() - 1
            }
        };
        let data = Bytes::from(r.kinesis.data.0.clone());
        shards[i]
            .1
            .extend(deaggregated(&r.kinesis.sequence_number, &r.kinesis.partition_key, data));
    }
    shards
}

/// Processes a Kinesis event; the response lists the record to retry from, if any.
pub async fn handle<P: Processor, K: ParkingLot>(
    processor: &P,
    parking: &K,
    application: &str,
    event: &KinesisEvent,
) -> KinesisEventResponse {
    let mut response = KinesisEventResponse::default();
    for (shard, records) in records_by_shard(event) {
        let span = info_span!("lambda_batch", application, shard = %shard, records = records.len());
        if let Some(sequence) = one_shard(processor, parking, application, &shard, &records)
            .instrument(span)
            .await
        {
            response.add_failure(sequence);
        }
    }
    response
}

/// One shard's records; the sequence number to retry from, if any.
async fn one_shard<P: Processor, K: ParkingLot>(
    processor: &P,
    parking: &K,
    application: &str,
    shard: &str,
    records: &[Record],
) -> Option<String> {
    let ctx = BatchContext {
        application,
        shard_id: shard,
        millis_behind_latest: 0,
    };
    let outcomes = processor.process(ctx, records).await;
    let w = walk(&outcomes, records.len());
    let mut first_unfinished = w.retry.as_ref().map(|_| w.finished);
    for (i, reason) in w.park {
        let record = records.get(i)?;
        let parked = Parked {
            shard_id: shard.to_owned(),
            record: record.clone(),
            reason,
        };
        if let Err(e) = parking.park(application, &parked).await {
            warn!(sequence = %record.sequence, error = %e, "parking failed; the record will be retried");
            first_unfinished = Some(first_unfinished.map_or(i, |f| f.min(i)));
            break;
        }
        warn!(sequence = %record.sequence, sub = record.sub, reason = %parked.reason, "record parked");
    }
    let record = records.get(first_unfinished?)?;
    warn!(sequence = %record.sequence, reason = ?w.retry, "reporting a batch item failure");
    Some(record.sequence.clone())
}

/// The processor the function hosts until the read-model projectors arrive (issue 5):
/// it checks every record decodes as an event envelope and parks those that do not,
/// which already keeps undecodable bytes out of every downstream consumer's way.
#[derive(Debug, Default)]
pub struct EnvelopeCheck;

impl Processor for EnvelopeCheck {
    async fn process(&self, _ctx: BatchContext<'_>, records: &[Record]) -> Vec<Outcome> {
        records
            .iter()
            .map(|r| match EventEnvelope::decode(&r.data) {
                Ok(_) => Outcome::Done,
                Err(e) => Outcome::Park(format!("not an event envelope: {e}")),
            })
            .collect()
    }
}
