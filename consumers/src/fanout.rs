//! Enhanced fan-out: records pushed to a registered stream consumer over SubscribeToShard.
//!
//! Polling shares a shard's 5 reads/s and 2 MB/s among every application; with six
//! projectors and the replay tool on one stream that allowance runs out. A registered
//! consumer gets its own 2 MB/s per shard, pushed as soon as records arrive.
//!
//! A subscription lives at most 5 minutes. We resubscribe before that (`resubscribe`,
//! default 4 min 30 s) from the last processed record, so the switch never skips or
//! repeats a record; if the service ends a subscription first, the same resume applies.
//! What a subscription delivers goes through the same deaggregation and "drop what the
//! checkpoint covers" as a polled batch, so the processor cannot tell the two apart.

use std::time::Instant;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::types::{ConsumerStatus, ShardIteratorType, StartingPosition, SubscribeToShardEventStream};

use crate::lease::Checkpoint;
use crate::retrieval::{Batch, RetrievalError, error};

type Receiver = aws_sdk_kinesis::primitives::event_stream::EventReceiver<
    SubscribeToShardEventStream,
    aws_sdk_kinesis::types::error::SubscribeToShardEventStreamError,
>;

/// Registers `name` as a consumer of `stream` (or finds it registered) and waits until
/// it is ACTIVE; returns its ARN.
pub async fn register(client: &Client, stream: &str, name: &str) -> Result<String, RetrievalError> {
    let summary = client
        .describe_stream_summary()
        .stream_name(stream)
        .send()
        .await
        .map_err(|e| error("DescribeStreamSummary", "*", e.into_service_error()))?;
    let stream_arn = summary
        .stream_description_summary()
        .map(|d| d.stream_arn().to_owned())
        .unwrap_or_default();
    match client
        .register_stream_consumer()
        .stream_arn(&stream_arn)
        .consumer_name(name)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e) if e.code() == Some("ResourceInUseException") => {}
        Err(e) => return Err(error("RegisterStreamConsumer", "*", e.into_service_error())),
    }
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let out = client
            .describe_stream_consumer()
            .stream_arn(&stream_arn)
            .consumer_name(name)
            .send()
            .await
            .map_err(|e| error("DescribeStreamConsumer", "*", e.into_service_error()))?;
        if let Some(d) = out.consumer_description()
            && d.consumer_status() == &ConsumerStatus::Active
        {
            return Ok(d.consumer_arn().to_owned());
        }
        if Instant::now() > deadline {
            return Err(RetrievalError {
                operation: "DescribeStreamConsumer",
                shard: "*".into(),
                code: "NotActive".into(),
                message: format!("consumer {name} not ACTIVE after 60 s"),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// One shard's subscription.
#[derive(Debug)]
pub struct Subscription {
    shard: String,
    receiver: Receiver,
    /// When it was made: it is renewed before the service's 5-minute end.
    pub started: Instant,
    /// The sequence number the last event said to continue after.
    pub continuation: Option<String>,
}

/// Subscribes to `shard` from `from` (the last processed record, or the lease's start),
/// or after `continuation` when nothing was processed yet.
pub async fn subscribe(
    client: &Client,
    consumer_arn: &str,
    shard: &str,
    from: &Checkpoint,
    continuation: Option<&str>,
    start_timestamp: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<Subscription, RetrievalError> {
    let position = match (from, continuation) {
        (Checkpoint::Sequence { sequence, .. }, _) => StartingPosition::builder()
            .r#type(ShardIteratorType::AtSequenceNumber)
            .sequence_number(sequence),
        (_, Some(after)) => StartingPosition::builder()
            .r#type(ShardIteratorType::AfterSequenceNumber)
            .sequence_number(after),
        (Checkpoint::Latest, None) => StartingPosition::builder().r#type(ShardIteratorType::Latest),
        (Checkpoint::AtTimestamp, None) => match start_timestamp {
            Some(at) => StartingPosition::builder()
                .r#type(ShardIteratorType::AtTimestamp)
                .timestamp(aws_sdk_kinesis::primitives::DateTime::from_millis(
                    at.timestamp_millis(),
                )),
            None => StartingPosition::builder().r#type(ShardIteratorType::TrimHorizon),
        },
        (Checkpoint::TrimHorizon | Checkpoint::ShardEnd, None) => {
            StartingPosition::builder().r#type(ShardIteratorType::TrimHorizon)
        }
    };
    let position = position.build().map_err(|e| RetrievalError {
        operation: "SubscribeToShard",
        shard: shard.to_owned(),
        code: "InvalidStartingPosition".into(),
        message: e.to_string(),
    })?;
    let out = client
        .subscribe_to_shard()
        .consumer_arn(consumer_arn)
        .shard_id(shard)
        .starting_position(position)
        .send()
        .await
        .map_err(|e| error("SubscribeToShard", shard, e.into_service_error()))?;
    Ok(Subscription {
        shard: shard.to_owned(),
        receiver: out.event_stream,
        started: Instant::now(),
        continuation: continuation.map(str::to_owned),
    })
}

impl Subscription {
    /// The next pushed event as a batch; `None` when the service ended the subscription
    /// (resubscribe). A batch without `next_iterator` means the shard ended.
    pub async fn next(&mut self, done: &Checkpoint) -> Result<Option<Batch>, RetrievalError> {
        let event = loop {
            match self.receiver.recv().await {
                Ok(Some(SubscribeToShardEventStream::SubscribeToShardEvent(event))) => break event,
                Ok(Some(_)) => {}
                Ok(None) => return Ok(None),
                Err(e) => {
                    return Err(RetrievalError {
                        operation: "SubscribeToShard",
                        shard: self.shard.clone(),
                        code: e.code().unwrap_or("StreamError").to_owned(),
                        message: e.message().map_or_else(|| format!("{e:?}"), str::to_owned),
                    });
                }
            }
        };
        let (records, kinesis_records, kinesis_bytes) = crate::retrieval::user_records(event.records, done);
        let ended =
            event.child_shards.as_ref().is_some_and(|c| !c.is_empty()) && event.continuation_sequence_number.is_empty();
        if !event.continuation_sequence_number.is_empty() {
            self.continuation = Some(event.continuation_sequence_number.clone());
        }
        Ok(Some(Batch {
            records,
            millis_behind_latest: event.millis_behind_latest,
            next_iterator: (!ended).then_some(event.continuation_sequence_number),
            kinesis_records,
            kinesis_bytes,
        }))
    }
}
