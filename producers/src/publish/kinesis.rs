//! The Kinesis adapter of the [`RecordSink`] port (the `aws` feature).

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::ProvideErrorMetadata;
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;

use super::sink::{Entry, EntryOutcome, RecordSink, ShardRange, SinkError};

/// The real thing: a Kinesis stream.
#[derive(Debug, Clone)]
pub struct KinesisSink {
    client: Client,
    stream: String,
}

impl KinesisSink {
    /// A sink for one stream.
    pub fn new(client: Client, stream: impl Into<String>) -> Self {
        KinesisSink {
            client,
            stream: stream.into(),
        }
    }
}

fn sink_error<E: ProvideErrorMetadata + std::fmt::Debug>(e: E) -> SinkError {
    SinkError {
        code: e.code().unwrap_or("Unknown").to_owned(),
        message: e.message().map_or_else(|| format!("{e:?}"), str::to_owned),
    }
}

impl RecordSink for KinesisSink {
    async fn put_records(&self, entries: &[Entry]) -> Result<Vec<EntryOutcome>, SinkError> {
        let records = entries
            .iter()
            .map(|e| {
                PutRecordsRequestEntry::builder()
                    .partition_key(&e.partition_key)
                    .data(Blob::new(e.data.to_vec()))
                    .build()
                    .map_err(|err| SinkError {
                        code: "ValidationException".into(),
                        message: err.to_string(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .client
            .put_records()
            .stream_name(&self.stream)
            .set_records(Some(records))
            .send()
            .await
            .map_err(sink_error)?;
        Ok(out
            .records()
            .iter()
            .map(|r| match (r.error_code(), r.shard_id(), r.sequence_number()) {
                (None, Some(shard), Some(seq)) => EntryOutcome::Accepted {
                    shard_id: shard.to_owned(),
                    sequence_number: seq.to_owned(),
                },
                (code, ..) => EntryOutcome::Failed {
                    code: code.unwrap_or("Unknown").to_owned(),
                },
            })
            .collect())
    }

    async fn shards(&self) -> Result<Vec<ShardRange>, SinkError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = match &token {
                Some(t) => self.client.list_shards().next_token(t),
                None => self.client.list_shards().stream_name(&self.stream),
            };
            let out = req.send().await.map_err(sink_error)?;
            for s in out.shards() {
                // A closed shard (parent of a reshard) no longer takes writes.
                let open = s
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_none();
                let range = s.hash_key_range();
                let parse = |v: Option<&str>| v.and_then(|v| v.parse::<u128>().ok());
                if let (true, Some(start), Some(end)) = (
                    open,
                    parse(range.map(|r| r.starting_hash_key())),
                    parse(range.map(|r| r.ending_hash_key())),
                ) {
                    shards.push(ShardRange {
                        shard_id: s.shard_id().to_owned(),
                        start,
                        end,
                    });
                }
            }
            token = out.next_token().map(str::to_owned);
            if token.is_none() {
                break;
            }
        }
        shards.sort_by_key(|s| s.start);
        Ok(shards)
    }
}
