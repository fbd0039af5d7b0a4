//! The DynamoDB `active-orders` read model: orders in flight, by id and by customer
//! (GSI `by-customer`: customer_id + created_at).
//!
//! A finished order (completed or cancelled) leaves the model by losing its GSI keys and
//! becoming a tombstone that expires through TTL a week later. Deleting it instead
//! would let a redelivered `OrderPlaced` (version 1) bring it back: the tombstone keeps
//! the version, and every write is conditional on moving the version forward.
//!
//! DynamoDB has no conditional batch write (BatchWriteItem takes no conditions, and a
//! TransactWriteItems fails as a whole when one condition does), so a batch becomes one
//! conditional UpdateItem per order it touches, folded per order and sent concurrently.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use aws_sdk_dynamodb::types::AttributeValue;
use cafe_events::proto::orders::v1::OrderPlaced;
use cafe_events::{AggregateId, DomainEvent};
use chrono::{DateTime, SecondsFormat, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::ProjectionError;
use crate::names::order_status;
use crate::projector::{Batch, Projection};
use crate::verify::{BucketDigest, Buckets, Digests, Row, Verifiable};

/// The customer index.
pub const BY_CUSTOMER: &str = "by-customer";
/// How long a finished order's tombstone is kept.
const TOMBSTONE_DAYS: i64 = 7;
/// UpdateItems in flight per batch.
const CONCURRENCY: usize = 16;

/// The active-orders projector and its queries.
#[derive(Debug, Clone)]
pub struct DynamoActiveOrders {
    client: Client,
    table: String,
}

/// An order in flight, as `GET /v1/customers/{id}/orders` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ActiveOrderView {
    /// The order.
    pub order_id: String,
    /// Who placed it.
    pub customer_id: String,
    /// Where.
    pub store_id: String,
    /// Where it is in its life.
    pub status: String,
    /// Sum of the lines.
    pub total_cents: i64,
    /// Lines ordered.
    pub lines: u32,
    /// When it was placed (RFC 3339, UTC).
    pub created_at: String,
    /// The order aggregate's version this reflects.
    pub version: u64,
}

fn dynamo_error<E: ProvideErrorMetadata + std::fmt::Debug>(
    op: &str,
    e: &aws_sdk_dynamodb::error::SdkError<E>,
) -> ProjectionError {
    let code = e.code().unwrap_or("");
    let message = format!("{op}: {code} {}", e.message().unwrap_or(&format!("{e:?}")));
    match code {
        "ValidationException" | "ResourceNotFoundException" => ProjectionError::poison("dynamodb", message),
        _ => ProjectionError::transient("dynamodb", message),
    }
}

struct Folded<'a> {
    placed: Option<(&'a OrderPlaced, DateTime<Utc>)>,
    status: &'static str,
    version: u64,
    at: DateTime<Utc>,
}

fn finished(status: &str) -> bool {
    matches!(status, "completed" | "cancelled")
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl DynamoActiveOrders {
    /// Over an existing table (provisioned with `cafe_localstack::provision`'s spec).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoActiveOrders {
            client,
            table: table.into(),
        }
    }

    /// Creates `name` with the key schema, attributes, indexes and TTL attribute of
    /// `template` (on-demand billing), unless it exists, and waits until it is active:
    /// a shadow copy of the live table, made from what the live table is rather than
    /// from a second description of it.
    pub async fn create_table_like(client: &Client, template: &str, name: &str) -> Result<(), ProjectionError> {
        use aws_sdk_dynamodb::types::{BillingMode, GlobalSecondaryIndex, TimeToLiveSpecification};
        let described = client.describe_table().table_name(template).send().await;
        let table = described
            .map_err(|e| dynamo_error("DescribeTable", &e))?
            .table
            .ok_or_else(|| ProjectionError::poison("dynamodb", format!("{template}: no description")))?;
        let gsis: Vec<GlobalSecondaryIndex> = table
            .global_secondary_indexes()
            .iter()
            .map(|g| {
                GlobalSecondaryIndex::builder()
                    .set_index_name(g.index_name.clone())
                    .set_key_schema(g.key_schema.clone())
                    .set_projection(g.projection.clone())
                    .build()
                    .map_err(|e| ProjectionError::poison("dynamodb", format!("index of {template}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let created = client
            .create_table()
            .table_name(name)
            .set_key_schema(table.key_schema.clone())
            .set_attribute_definitions(table.attribute_definitions.clone())
            .set_global_secondary_indexes((!gsis.is_empty()).then_some(gsis))
            .billing_mode(BillingMode::PayPerRequest)
            .send()
            .await;
        match created {
            Ok(_) => {}
            Err(e) if e.as_service_error().is_some_and(|s| s.is_resource_in_use_exception()) => return Ok(()),
            Err(e) => return Err(dynamo_error("CreateTable", &e)),
        }
        for _ in 0..600 {
            let status = client
                .describe_table()
                .table_name(name)
                .send()
                .await
                .map_err(|e| dynamo_error("DescribeTable", &e))?
                .table
                .and_then(|t| t.table_status);
            if status == Some(aws_sdk_dynamodb::types::TableStatus::Active) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let ttl = client
            .describe_time_to_live()
            .table_name(template)
            .send()
            .await
            .map_err(|e| dynamo_error("DescribeTimeToLive", &e))?;
        if let Some(attribute) = ttl.time_to_live_description.and_then(|d| d.attribute_name) {
            let spec = TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(attribute)
                .build()
                .map_err(|e| ProjectionError::poison("dynamodb", e))?;
            client
                .update_time_to_live()
                .table_name(name)
                .time_to_live_specification(spec)
                .send()
                .await
                .map_err(|e| dynamo_error("UpdateTimeToLive", &e))?;
        }
        Ok(())
    }

    /// Deletes `table` (a shadow or scratch copy being dropped); a missing one is gone
    /// already.
    pub async fn delete_table(client: &Client, table: &str) -> Result<(), ProjectionError> {
        match client.delete_table().table_name(table).send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(dynamo_error("DeleteTable", &e)),
        }
    }

    /// One order, if it is still active (tombstones read as absent).
    pub async fn order(&self, order_id: &str) -> Result<Option<ActiveOrderView>, ProjectionError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("order_id", s(order_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| dynamo_error("GetItem", &e))?;
        Ok(out.item.as_ref().and_then(view))
    }

    /// A customer's active orders, newest first.
    pub async fn customer_orders(
        &self,
        customer_id: &str,
        limit: i32,
    ) -> Result<Vec<ActiveOrderView>, ProjectionError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_CUSTOMER)
            .key_condition_expression("customer_id = :c")
            .expression_attribute_values(":c", s(customer_id))
            .scan_index_forward(false)
            .limit(limit.max(1))
            .send()
            .await
            .map_err(|e| dynamo_error("Query", &e))?;
        Ok(out.items().iter().filter_map(view).collect())
    }

    async fn write(&self, order_id: &str, f: Folded<'_>) -> Result<(), ProjectionError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("order_id", s(order_id))
            .expression_attribute_values(":v", n(f.version))
            .expression_attribute_values(":status", s(f.status))
            .expression_attribute_values(":at", s(f.at.to_rfc3339_opts(SecondsFormat::Millis, true)));
        let mut set = vec!["#v = :v", "#status = :status", "updated_at = :at"];
        let mut remove = Vec::new();
        if let Some((placed, created)) = f.placed {
            // The whole order is known: create or overwrite it.
            update = update
                .expression_attribute_values(":store", s(&placed.store_id))
                .expression_attribute_values(":total", n(placed.total_cents))
                .expression_attribute_values(":lines", n(placed.lines.len()));
            set.extend(["store_id = :store", "total_cents = :total", "line_count = :lines"]);
            if !finished(f.status) {
                update = update
                    .expression_attribute_values(":customer", s(&placed.customer_id))
                    .expression_attribute_values(":created", s(created.to_rfc3339_opts(SecondsFormat::Millis, true)));
                set.extend(["customer_id = :customer", "created_at = :created"]);
            }
            update = update.condition_expression("attribute_not_exists(#v) OR #v < :v");
        } else {
            // Only a status move: never create a half order from it.
            update = update.condition_expression("attribute_exists(#v) AND #v < :v");
        }
        if finished(f.status) {
            let expires = f.at.timestamp() + TOMBSTONE_DAYS * 86_400;
            update = update.expression_attribute_values(":expires", n(expires));
            set.push("expires_at = :expires");
            remove.extend(["customer_id", "created_at"]);
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        let result = update
            .update_expression(expression)
            .expression_attribute_names("#v", "version")
            .expression_attribute_names("#status", "status")
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            // Already at or past this version (or a status move for an order this model
            // never saw placed): nothing to do.
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(dynamo_error("UpdateItem", &e)),
        }
    }
}

fn view(item: &std::collections::HashMap<String, AttributeValue>) -> Option<ActiveOrderView> {
    let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).cloned();
    let num = |k: &str| {
        item.get(k)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    Some(ActiveOrderView {
        order_id: text("order_id")?,
        // Tombstones have no customer: they read as absent.
        customer_id: text("customer_id")?,
        store_id: text("store_id").unwrap_or_default(),
        status: text("status").unwrap_or_default(),
        total_cents: num("total_cents").unwrap_or_default(),
        lines: num("line_count")
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or_default(),
        created_at: text("created_at").unwrap_or_default(),
        version: num("version").and_then(|v| u64::try_from(v).ok()).unwrap_or_default(),
    })
}

impl Projection for DynamoActiveOrders {
    fn name(&self) -> &'static str {
        "active_orders"
    }

    async fn apply(&self, batch: Batch<'_>) -> Result<(), ProjectionError> {
        let mut orders: BTreeMap<&str, Folded<'_>> = BTreeMap::new();
        for p in batch.events {
            let AggregateId::Order(id) = &p.event.aggregate_id else {
                continue;
            };
            let Some(status) = order_status(&p.event.event) else {
                continue;
            };
            let f = orders.entry(id.as_str()).or_insert(Folded {
                placed: None,
                status,
                version: p.event.version,
                at: p.event.occurred_at,
            });
            if let DomainEvent::OrderPlaced(placed) = &p.event.event {
                f.placed = Some((placed, p.event.occurred_at));
            }
            f.status = status;
            f.version = p.event.version;
            f.at = p.event.occurred_at;
        }
        // Built first, so the stream's type holds no closure (whose higher-ranked
        // lifetimes defeat the `Send` proof the trait's future needs).
        let writes: Vec<_> = orders.into_iter().map(|(id, f)| self.write(id, f)).collect();
        futures::stream::iter(writes)
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    async fn snapshot(&self) -> Result<Vec<String>, ProjectionError> {
        let mut lines = Vec::new();
        self.each_item(|item| lines.push(canonical(item))).await?;
        lines.sort();
        Ok(lines)
    }
}

impl DynamoActiveOrders {
    /// Every item once, through `each` (a paginated, consistent Scan: one page in
    /// memory at a time).
    async fn each_item(&self, mut each: impl FnMut(&HashMap<String, AttributeValue>)) -> Result<(), ProjectionError> {
        let mut pages = self
            .client
            .scan()
            .table_name(&self.table)
            .consistent_read(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for item in page.map_err(|e| dynamo_error("Scan", &e))?.items() {
                each(item);
            }
        }
        Ok(())
    }

    async fn verify_pass(&self, buckets: Buckets, keep: &[u32]) -> Result<Digests, ProjectionError> {
        let mut d = Digests::new(buckets, keep);
        self.each_item(|item| {
            let id = match item.get("order_id") {
                Some(AttributeValue::S(id)) => id.as_str(),
                _ => "",
            };
            let version = match item.get("version") {
                Some(AttributeValue::N(v)) => v.parse().ok(),
                _ => None,
            };
            d.add(id, id.to_owned(), version, &canonical(item));
        })
        .await?;
        Ok(d)
    }
}

/// An item as one line: attributes sorted by name.
fn canonical(item: &HashMap<String, AttributeValue>) -> String {
    let fields: BTreeMap<&str, String> = item.iter().map(|(k, v)| (k.as_str(), format!("{v:?}"))).collect();
    format!("{fields:?}")
}

/// Digests streamed from a Scan (DynamoDB cannot compute them in place).
impl Verifiable for DynamoActiveOrders {
    async fn digests(&self, buckets: Buckets) -> Result<Vec<BucketDigest>, ProjectionError> {
        Ok(self.verify_pass(buckets, &[]).await?.digests())
    }

    async fn rows(&self, buckets: Buckets, which: &[u32]) -> Result<Vec<Row>, ProjectionError> {
        Ok(self.verify_pass(buckets, which).await?.kept())
    }
}
