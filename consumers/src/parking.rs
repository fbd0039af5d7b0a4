//! The parking lot: records a processor can never handle, kept with the reason.
//!
//! Parking is how a poison record stops blocking its shard without being lost: the
//! record goes to the DynamoDB `parked` table (pk the application, sk the shard and
//! position, so an operator lists one projector's parked records in order), and only
//! then does the checkpoint move past it. A failed park is retried like any transient
//! error; the shard never moves past a record that is neither processed nor parked.

use std::future::Future;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use crate::retrieval::Record;

/// A record set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    /// The shard it came from.
    pub shard_id: String,
    /// The record, bytes intact.
    pub record: Record,
    /// Why the processor refused it.
    pub reason: String,
}

/// Parking failed; the runtime retries it.
#[derive(Debug, thiserror::Error)]
#[error("parking a record failed: {0}")]
pub struct ParkError(pub String);

/// Where parked records go.
pub trait ParkingLot: Send + Sync + 'static {
    /// Stores `parked`; idempotent (parking the same record twice keeps one copy).
    fn park(&self, application: &str, parked: &Parked) -> impl Future<Output = Result<(), ParkError>> + Send;
}

/// The DynamoDB `parked` table.
#[derive(Debug, Clone)]
pub struct DynamoParkingLot {
    client: Client,
    table: String,
}

impl DynamoParkingLot {
    /// Parks into `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoParkingLot {
            client,
            table: table.into(),
        }
    }

    /// Every record parked by `application`, oldest position first per shard.
    pub async fn list(&self, application: &str) -> Result<Vec<Parked>, ParkError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("application = :app")
            .expression_attribute_values(":app", AttributeValue::S(application.to_owned()))
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| ParkError(format!("{}: {}", e.code().unwrap_or("Unknown"), e)))?;
            for item in page.items() {
                out.push(decode(item).ok_or_else(|| ParkError(format!("malformed parked item {item:?}")))?);
            }
        }
        Ok(out)
    }
}

/// Sort key: shard, then the sequence number zero-padded so positions sort as numbers
/// (Kinesis sequence numbers are decimal strings of up to 128 digits), then the
/// sub-sequence number.
fn position(parked: &Parked) -> String {
    format!(
        "{}#{:0>128}#{:020}",
        parked.shard_id, parked.record.sequence, parked.record.sub
    )
}

fn decode(item: &std::collections::HashMap<String, AttributeValue>) -> Option<Parked> {
    let s = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    Some(Parked {
        shard_id: s("shard_id")?,
        reason: s("reason")?,
        record: Record {
            sequence: s("sequence")?,
            sub: item
                .get("sub")
                .and_then(|v| v.as_n().ok())
                .and_then(|n| n.parse().ok())?,
            partition_key: s("partition_key")?,
            data: bytes::Bytes::copy_from_slice(item.get("data").and_then(|v| v.as_b().ok())?.as_ref()),
        },
    })
}

impl ParkingLot for DynamoParkingLot {
    async fn park(&self, application: &str, parked: &Parked) -> Result<(), ParkError> {
        let s = |v: &str| AttributeValue::S(v.to_owned());
        self.client
            .put_item()
            .table_name(&self.table)
            .item("application", s(application))
            .item("position", s(&position(parked)))
            .item("shard_id", s(&parked.shard_id))
            .item("sequence", s(&parked.record.sequence))
            .item("sub", AttributeValue::N(parked.record.sub.to_string()))
            .item("partition_key", s(&parked.record.partition_key))
            .item("data", AttributeValue::B(Blob::new(parked.record.data.to_vec())))
            .item("reason", s(&parked.reason))
            .item("parked_at", s(&chrono::Utc::now().to_rfc3339()))
            .send()
            .await
            .map_err(|e| ParkError(format!("{}: {}", e.code().unwrap_or("Unknown"), e)))?;
        Ok(())
    }
}
