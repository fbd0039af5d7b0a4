//! [`EventStore`] on DynamoDB.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::{AttributeValue, Put, PutRequest, TransactWriteItem, WriteRequest};
use cafe_events::{AggregateId, EventEnvelope};
use chrono::{SecondsFormat, Utc};
use futures::StreamExt;

use super::{
    Append, EventKey, EventStore, HistoryPage, IdempotencyClaim, IdempotencyRecord, PENDING_BUCKETS, StoreError,
    StoredResponse,
};

/// Name of the sparse index of events not yet accepted by Kinesis.
pub const PENDING_INDEX: &str = "pending";

/// The DynamoDB adapter: the `events` and `idempotency` tables.
#[derive(Debug, Clone)]
pub struct DynamoEventStore {
    client: Client,
    events_table: String,
    idempotency_table: String,
}

impl DynamoEventStore {
    /// An adapter over two existing tables.
    pub fn new(client: Client, events_table: impl Into<String>, idempotency_table: impl Into<String>) -> Self {
        DynamoEventStore {
            client,
            events_table: events_table.into(),
            idempotency_table: idempotency_table.into(),
        }
    }

    /// The DynamoDB client and the two tables, (events, idempotency): what a test
    /// counts to show a refused request wrote nothing.
    pub fn tables(&self) -> (&Client, &str, &str) {
        (&self.client, &self.events_table, &self.idempotency_table)
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// Which pending bucket an aggregate's events go to: stable, spread evenly.
fn bucket(aggregate_id: &str) -> String {
    let h = aggregate_id
        .bytes()
        .fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    format!("b{:02}", h % PENDING_BUCKETS)
}

/// An event's item. With `appended_at`, it carries the pending marker (the key of the
/// sparse pending index); without, it is the same immutable event, published.
fn event_item(e: &EventEnvelope, appended_at: Option<&str>) -> HashMap<String, AttributeValue> {
    let aggregate_id = e.aggregate_id.to_string();
    let mut item = HashMap::from([
        ("version".to_owned(), n(e.version)),
        ("event_id".to_owned(), s(e.event_id.to_string())),
        ("event_type".to_owned(), s(e.event.event_type())),
        (
            "occurred_at".to_owned(),
            s(e.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true)),
        ),
        ("data".to_owned(), AttributeValue::B(Blob::new(e.encode().to_vec()))),
    ]);
    if let Some(at) = appended_at {
        item.insert("pending_bucket".to_owned(), s(bucket(&aggregate_id)));
        item.insert("appended_at".to_owned(), s(at));
    }
    item.insert("aggregate_id".to_owned(), s(aggregate_id));
    item
}

/// A cancelled transaction that no condition refused: throttled, or in conflict with
/// another transaction on the same item. Both are worth retrying.
fn cancelled(reasons: &[String]) -> StoreError {
    let text = format!("transaction cancelled: {reasons:?}");
    if reasons
        .iter()
        .any(|r| matches!(r.as_str(), "ThrottlingError" | "ProvisionedThroughputExceeded"))
    {
        StoreError::Throttled(text)
    } else {
        StoreError::Unavailable(text)
    }
}

fn classify<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(e: SdkError<E, R>) -> StoreError {
    let code = e.code().unwrap_or_default().to_owned();
    let text = format!("{}: {}", code, e.message().unwrap_or_default());
    match code.as_str() {
        "ProvisionedThroughputExceededException" | "ThrottlingException" | "RequestLimitExceeded" => {
            StoreError::Throttled(text)
        }
        _ => StoreError::Unavailable(if code.is_empty() { format!("{e:?}") } else { text }),
    }
}

fn decode_item(item: &HashMap<String, AttributeValue>) -> Result<EventEnvelope, StoreError> {
    let aggregate_id = item
        .get("aggregate_id")
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default();
    let version = item
        .get("version")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let corrupt = |reason: String| StoreError::Corrupt {
        aggregate_id: aggregate_id.clone(),
        version,
        reason,
    };
    let data = item
        .get("data")
        .and_then(|v| v.as_b().ok())
        .ok_or_else(|| corrupt("no data attribute".into()))?;
    EventEnvelope::decode(data.as_ref()).map_err(|e| corrupt(e.to_string()))
}

impl DynamoEventStore {
    /// One aggregate's events, by its id as stored, in version order (a consistent Query).
    async fn events_of(&self, aggregate_id: &str) -> Result<Vec<EventEnvelope>, StoreError> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.events_table)
            .key_condition_expression("aggregate_id = :id")
            .expression_attribute_values(":id", s(aggregate_id))
            .consistent_read(true)
            .into_paginator()
            .send();
        let mut events = Vec::new();
        while let Some(page) = pages.next().await {
            for item in page.map_err(classify)?.items() {
                events.push(decode_item(item)?);
            }
        }
        Ok(events)
    }

    /// How many events the table holds, as DynamoDB reports it (on AWS an estimate,
    /// refreshed about every six hours): for progress bars, never for correctness.
    pub async fn approximate_count(&self) -> Option<u64> {
        let out = self
            .client
            .describe_table()
            .table_name(&self.events_table)
            .send()
            .await
            .ok()?;
        out.table?.item_count.and_then(|n| u64::try_from(n).ok())
    }
}

impl EventStore for DynamoEventStore {
    async fn load(&self, id: &AggregateId) -> Result<Vec<EventEnvelope>, StoreError> {
        self.events_of(&id.to_string()).await
    }

    async fn append(&self, events: &[EventEnvelope], claim: Option<&IdempotencyClaim>) -> Result<(), StoreError> {
        let items = self.append_items(events, claim)?;
        let Err(reasons) = self.transact(items).await? else {
            return Ok(());
        };
        let failed = |i: usize| reasons.get(i).map(String::as_str) == Some("ConditionalCheckFailed");
        if let Some(c) = claim
            && failed(events.len())
        {
            return Err(StoreError::IdempotencyRace(c.key.clone()));
        }
        if let Some((_, e)) = events.iter().enumerate().find(|(i, _)| failed(*i)) {
            return Err(StoreError::Conflict {
                aggregate_id: e.aggregate_id.to_string(),
                version: e.version,
            });
        }
        Err(cancelled(&reasons))
    }

    async fn append_group(&self, appends: &[Append<'_>]) -> Result<(), StoreError> {
        let mut items = Vec::new();
        for a in appends {
            items.extend(self.append_items(a.events, a.claim)?);
        }
        let Err(reasons) = self.transact(items).await? else {
            return Ok(());
        };
        // Which member failed does not matter here: the caller re-runs the members one
        // by one to give each its own answer.
        if reasons.iter().any(|r| r == "ConditionalCheckFailed") {
            return Err(StoreError::GroupRefused(format!("transaction cancelled: {reasons:?}")));
        }
        Err(cancelled(&reasons))
    }

    async fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.idempotency_table)
            .key("idempotency_key", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        let Some(item) = out.item else { return Ok(None) };
        let get_s = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
        let corrupt = |what: &str| StoreError::Corrupt {
            aggregate_id: format!("idempotency:{key}"),
            version: 0,
            reason: what.into(),
        };
        let status = item
            .get("status")
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| corrupt("status"))?;
        let body = get_s("body")
            .and_then(|b| serde_json::from_str(&b).ok())
            .ok_or_else(|| corrupt("body"))?;
        let request_hash = get_s("request_hash").ok_or_else(|| corrupt("request_hash"))?;
        Ok(Some(IdempotencyRecord {
            request_hash,
            response: StoredResponse { status, body },
        }))
    }

    async fn pending(&self, older_than: Duration, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        let cutoff = Utc::now() - chrono::Duration::from_std(older_than).unwrap_or(chrono::Duration::zero());
        let cutoff = cutoff.to_rfc3339_opts(SecondsFormat::Micros, true);
        let mut found = Vec::new();
        for b in 0..PENDING_BUCKETS {
            if found.len() >= limit {
                break;
            }
            let page_limit = i32::try_from(limit - found.len()).unwrap_or(i32::MAX);
            let out = self
                .client
                .query()
                .table_name(&self.events_table)
                .index_name(PENDING_INDEX)
                .key_condition_expression("pending_bucket = :b AND appended_at < :cutoff")
                .expression_attribute_values(":b", s(format!("b{b:02}")))
                .expression_attribute_values(":cutoff", s(cutoff.clone()))
                .limit(page_limit)
                .send()
                .await
                .map_err(classify)?;
            for item in out.items() {
                found.push(decode_item(item)?);
            }
        }
        // Oldest first, and per aggregate in version order, so a republish keeps order.
        found.sort_by_key(|e| (e.aggregate_id.to_string(), e.version));
        Ok(found)
    }

    async fn mark_published(&self, events: &[EventEnvelope]) -> Result<(), StoreError> {
        // DynamoDB has no batch update, but events are immutable: putting the same item
        // back without its marker is the update, 25 to a call instead of one.
        // A request that cannot be built is an error, not a silently kept marker.
        let requests: Vec<Vec<WriteRequest>> = events
            .chunks(BATCH_WRITE_MAX)
            .map(|chunk| {
                chunk
                    .iter()
                    .map(|e| {
                        let put = PutRequest::builder()
                            .set_item(Some(event_item(e, None)))
                            .build()
                            .map_err(|err| StoreError::Unavailable(err.to_string()))?;
                        Ok(WriteRequest::builder().put_request(put).build())
                    })
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .collect::<Result<_, _>>()?;
        let calls = requests.into_iter().map(|batch| self.batch_write(batch));
        use futures::StreamExt;
        let results: Vec<_> = futures::stream::iter(calls).buffer_unordered(8).collect().await;
        results.into_iter().collect()
    }
}

/// Items per BatchWriteItem call (a DynamoDB limit).
const BATCH_WRITE_MAX: usize = 25;

impl DynamoEventStore {
    /// The actions of one command's append: a conditional put per event (with its
    /// pending marker) and of the idempotency record.
    fn append_items(
        &self,
        events: &[EventEnvelope],
        claim: Option<&IdempotencyClaim>,
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        let appended_at = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        let mut items = Vec::with_capacity(events.len() + 1);
        for e in events {
            let put = Put::builder()
                .table_name(&self.events_table)
                .set_item(Some(event_item(e, Some(&appended_at))))
                .condition_expression("attribute_not_exists(aggregate_id)")
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        if let Some(c) = claim {
            let expires = Utc::now().timestamp() + i64::try_from(c.ttl.as_secs()).unwrap_or(i64::MAX / 2);
            let body = serde_json::to_string(&c.response.body).map_err(|e| StoreError::Unavailable(e.to_string()))?;
            let put = Put::builder()
                .table_name(&self.idempotency_table)
                .item("idempotency_key", s(c.key.clone()))
                .item("request_hash", s(c.request_hash.clone()))
                .item("status", n(c.response.status))
                .item("body", s(body))
                .item("expires_at", n(expires))
                .condition_expression("attribute_not_exists(idempotency_key)")
                .build()
                .map_err(|e| StoreError::Unavailable(e.to_string()))?;
            items.push(TransactWriteItem::builder().put(put).build());
        }
        Ok(items)
    }

    /// One TransactWriteItems. A cancelled transaction is `Ok(Err(reasons))`: per action,
    /// in order, the code of why it was refused (`"None"` when it was not the cause).
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<Result<(), Vec<String>>, StoreError> {
        let result = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        let Err(err) = result else { return Ok(Ok(())) };
        match err.as_service_error() {
            Some(TransactWriteItemsError::TransactionCanceledException(t)) => Ok(Err(t
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None").to_owned())
                .collect())),
            _ => Err(classify(err)),
        }
    }

    /// One BatchWriteItem, resending what DynamoDB left unprocessed (it does so under
    /// throttling) with a growing pause.
    async fn batch_write(&self, mut batch: Vec<WriteRequest>) -> Result<(), StoreError> {
        for attempt in 0u32..8 {
            if batch.is_empty() {
                return Ok(());
            }
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(10) * 2u32.pow(attempt)).await;
            }
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.events_table, batch)
                .send()
                .await
                .map_err(classify)?;
            batch = out
                .unprocessed_items
                .and_then(|mut left| left.remove(&self.events_table))
                .unwrap_or_default();
        }
        if batch.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Throttled(format!(
                "{} items left unprocessed by BatchWriteItem",
                batch.len()
            )))
        }
    }
}

impl super::HistoryReader for DynamoEventStore {
    /// DynamoDB's parallel Scan: one paginated Scan per segment, merged as pages arrive.
    /// Consistent reads, so everything appended before the call started is seen.
    fn read_all(
        &self,
        segments: u32,
        page_size: u32,
    ) -> impl futures::Stream<Item = Result<Vec<EventEnvelope>, StoreError>> + Send + '_ {
        let total = i32::try_from(segments.max(1)).unwrap_or(i32::MAX);
        let limit = i32::try_from(page_size.max(1)).unwrap_or(i32::MAX);
        let readers = (0..total).map(move |segment| {
            let pages = self
                .client
                .scan()
                .table_name(&self.events_table)
                .segment(segment)
                .total_segments(total)
                .limit(limit)
                .consistent_read(true)
                .into_paginator()
                .send();
            futures::stream::unfold(pages, |mut pages| async move {
                let page = pages.next().await?;
                let events = page
                    .map_err(classify)
                    .and_then(|page| page.items().iter().map(decode_item).collect::<Result<Vec<_>, _>>());
                Some((events, pages))
            })
            .boxed()
        });
        futures::stream::select_all(readers)
    }

    async fn read_page(
        &self,
        segment: u32,
        segments: u32,
        after: Option<&EventKey>,
        page_size: u32,
    ) -> Result<HistoryPage, StoreError> {
        let total = i32::try_from(segments.max(1)).unwrap_or(i32::MAX);
        let start = after.map(|k| {
            HashMap::from([
                ("aggregate_id".to_owned(), s(&k.aggregate_id)),
                ("version".to_owned(), AttributeValue::N(k.version.to_string())),
            ])
        });
        let page = self
            .client
            .scan()
            .table_name(&self.events_table)
            .segment(i32::try_from(segment).unwrap_or(i32::MAX))
            .total_segments(total)
            .limit(i32::try_from(page_size.max(1)).unwrap_or(i32::MAX))
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(classify)?;
        let events = page
            .items()
            .iter()
            .map(|item| {
                let event = decode_item(item)?;
                let key = EventKey {
                    aggregate_id: item
                        .get("aggregate_id")
                        .and_then(|v| v.as_s().ok())
                        .cloned()
                        .unwrap_or_default(),
                    version: event.version,
                };
                Ok((key, event))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let next = page.last_evaluated_key.as_ref().map(|k| EventKey {
            aggregate_id: k
                .get("aggregate_id")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default(),
            version: k
                .get("version")
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
        });
        Ok(HistoryPage { events, next })
    }

    async fn history_of(&self, aggregate_id: &str) -> Result<Vec<EventEnvelope>, StoreError> {
        self.events_of(aggregate_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_stable_and_in_range() {
        assert_eq!(bucket("order-1"), bucket("order-1"));
        let used: std::collections::HashSet<_> = (0..1000).map(|i| bucket(&format!("o-{i}"))).collect();
        assert_eq!(used.len(), PENDING_BUCKETS as usize, "every bucket gets used");
    }
}
