//! The DocumentDB read model: menu items and order documents, through the official
//! MongoDB driver.
//!
//! A batch is folded per aggregate in memory, then written as one classic `update`
//! command per collection (at most [`CHUNK`] statements each, unordered), so a batch
//! costs two round trips whatever its size. The classic command rather than the 8.0
//! `bulkWrite` because DocumentDB only speaks the former.
//!
//! Idempotence is the version guard in every statement's filter
//! (`{_id, version: {$lt: N}}`): a document only moves forward. With `upsert`, a filter
//! that misses because the stored version is already `>= N` makes the server try an
//! insert of an existing `_id`, which it refuses with duplicate key (11000): that error
//! means "already applied" and is the only one ignored. Upsert is only used when the
//! batch holds the event that creates the whole document (`OrderPlaced`,
//! `MenuItemPublished`); a status change alone never creates a half document.

use std::collections::BTreeMap;

use cafe_events::proto::orders::v1::OrderPlaced;
use cafe_events::{AggregateId, DomainEvent};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::error::ProjectionError;
use crate::names::order_status;
use crate::postgres::orders::OrderLineView;
use crate::projector::{Batch, Projection};
use crate::verify::{BucketDigest, Buckets, Digests, Row, Verifiable};

/// Statements per `update` command: the server's batch limit is far above this, and a
/// smaller command keeps any one round trip short.
pub const CHUNK: usize = 1000;

/// The duplicate-key code: with a version-guarded upsert, "this version or a newer one is
/// already there".
const DUPLICATE_KEY: i32 = 11000;

const MENU_ITEMS: &str = "menu_items";
const ORDER_DOCUMENTS: &str = "order_documents";

/// The documents projector and its queries.
#[derive(Debug, Clone)]
pub struct MongoDocuments {
    db: Database,
}

/// A menu item as the menu endpoints and the cache show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MenuItemView {
    /// The item.
    pub item_id: String,
    /// Display name.
    pub name: String,
    /// Menu section (`coffee`, `bakery`, ...).
    pub category: String,
    /// Current price.
    pub price_cents: i64,
    /// Free-form labels.
    pub tags: Vec<String>,
    /// Taken off the menu (kept so past orders still name it).
    pub retired: bool,
    /// The menu item aggregate's version this reflects.
    pub version: u64,
}

/// An order as the documents store keeps it: one document with its lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderDocument {
    /// The order.
    pub order_id: String,
    /// Who placed it.
    pub customer_id: String,
    /// Where.
    pub store_id: String,
    /// What was ordered.
    pub lines: Vec<OrderLineView>,
    /// Sum of the lines.
    pub total_cents: i64,
    /// ISO currency code.
    pub currency: String,
    /// Where it is in its life (the names of [`crate::names::status_name`]).
    pub status: String,
    /// When it was placed.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// The order aggregate's version this reflects.
    pub version: u64,
}

impl MongoDocuments {
    /// Connects to `url` and uses `database` (collections and indexes created if needed).
    pub async fn connect(url: &str, database: &str) -> Result<Self, ProjectionError> {
        let client = Client::with_uri_str(url).await?;
        let db = client.database(database);
        // The category listing is the one query that is not by `_id`. (Not `{category,
        // _id}`: nx-27017 then refuses every write with "JSON path error near '_id'".)
        db.collection::<Document>(MENU_ITEMS)
            .create_index(IndexModel::builder().keys(doc! { "category": 1 }).build())
            .await?;
        Ok(MongoDocuments { db })
    }

    /// Drops the whole database: for benchmarks and tests that made one of their own.
    pub async fn drop_database(&self) -> Result<(), ProjectionError> {
        Ok(self.db.drop().await?)
    }

    fn menu(&self) -> Collection<Document> {
        self.db.collection(MENU_ITEMS)
    }

    fn orders(&self) -> Collection<Document> {
        self.db.collection(ORDER_DOCUMENTS)
    }

    /// The published items (of one category, or all), sorted by id.
    pub async fn menu_items(&self, category: Option<&str>) -> Result<Vec<MenuItemView>, ProjectionError> {
        let mut filter = doc! { "retired": false };
        if let Some(c) = category {
            filter.insert("category", c);
        }
        let docs: Vec<Document> = self
            .menu()
            .find(filter)
            .sort(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        docs.iter().map(menu_item_view).collect()
    }

    /// One item, retired or not.
    pub async fn menu_item(&self, item_id: &str) -> Result<Option<MenuItemView>, ProjectionError> {
        self.menu()
            .find_one(doc! { "_id": item_id })
            .await?
            .as_ref()
            .map(menu_item_view)
            .transpose()
    }

    /// One order document.
    pub async fn order_document(&self, order_id: &str) -> Result<Option<OrderDocument>, ProjectionError> {
        self.orders()
            .find_one(doc! { "_id": order_id })
            .await?
            .as_ref()
            .map(order_document)
            .transpose()
    }

    /// Runs `statements` as unordered `update` commands; duplicate keys (already applied)
    /// are ignored, any other write error refuses the batch.
    async fn update(&self, collection: &str, statements: Vec<Document>) -> Result<(), ProjectionError> {
        for chunk in statements.chunks(CHUNK) {
            let reply = self
                .db
                .run_command(doc! { "update": collection, "updates": chunk, "ordered": false })
                .await?;
            if let Ok(e) = reply.get_document("writeConcernError") {
                return Err(ProjectionError::transient("mongodb", format!("write concern: {e}")));
            }
            if let Ok(errors) = reply.get_array("writeErrors") {
                let refused: Vec<String> = errors
                    .iter()
                    .filter_map(Bson::as_document)
                    .filter(|e| lenient_i64(e.get("code")) != Some(i64::from(DUPLICATE_KEY)))
                    .map(|e| e.to_string())
                    .collect();
                if !refused.is_empty() {
                    return Err(ProjectionError::poison(
                        "mongodb",
                        format!("{collection}: {} write errors, first {}", refused.len(), refused[0]),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Reads a number whatever width the server chose (nx-27017 hands back small int64s as
/// int32; other servers may answer doubles for computed values).
fn lenient_i64(value: Option<&Bson>) -> Option<i64> {
    match value? {
        Bson::Int32(v) => Some(i64::from(*v)),
        Bson::Int64(v) => Some(*v),
        Bson::Double(v) if v.fract() == 0.0 => Some(*v as i64),
        _ => None,
    }
}

fn int(doc: &Document, key: &str) -> Result<i64, ProjectionError> {
    lenient_i64(doc.get(key))
        .ok_or_else(|| ProjectionError::poison("mongodb", format!("{key} is not a number in {doc}")))
}

fn string(doc: &Document, key: &str) -> Result<String, ProjectionError> {
    doc.get_str(key)
        .map(str::to_owned)
        .map_err(|_| ProjectionError::poison("mongodb", format!("{key} is not a string in {doc}")))
}

fn time(doc: &Document, key: &str) -> Result<DateTime<Utc>, ProjectionError> {
    match doc.get(key) {
        Some(Bson::DateTime(t)) => Ok(DateTime::<Utc>::from_timestamp_millis(t.timestamp_millis()).unwrap_or_default()),
        // nx-27017 turns a date written by `$set` on an existing document into SQLite's
        // text form ("2026-01-01 00:00:01.234000", UTC); DocumentDB keeps the date.
        Some(Bson::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").map(|t| t.and_utc()))
            .map_err(|e| ProjectionError::poison("mongodb", format!("{key}: {e} in {s:?}"))),
        other => Err(ProjectionError::poison(
            "mongodb",
            format!("{key} is not a time: {other:?}"),
        )),
    }
}

fn version(doc: &Document) -> Result<u64, ProjectionError> {
    u64::try_from(int(doc, "version")?).map_err(|e| ProjectionError::poison("mongodb", e))
}

fn menu_item_view(d: &Document) -> Result<MenuItemView, ProjectionError> {
    Ok(MenuItemView {
        item_id: string(d, "_id")?,
        name: string(d, "name")?,
        category: string(d, "category")?,
        price_cents: int(d, "price_cents")?,
        tags: d
            .get_array("tags")
            .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
        // nx-27017 turns a bool written by `$set` on an existing document into 0/1.
        retired: match d.get("retired") {
            Some(Bson::Boolean(b)) => *b,
            other => lenient_i64(other).is_some_and(|n| n != 0),
        },
        version: version(d)?,
    })
}

fn order_document(d: &Document) -> Result<OrderDocument, ProjectionError> {
    let lines = d
        .get_array("lines")
        .map_err(|_| ProjectionError::poison("mongodb", format!("no lines in {d}")))?
        .iter()
        .filter_map(Bson::as_document)
        .map(|l| {
            Ok(OrderLineView {
                item_id: string(l, "item_id")?,
                quantity: i32::try_from(int(l, "quantity")?).map_err(|e| ProjectionError::poison("mongodb", e))?,
                unit_price_cents: int(l, "unit_price_cents")?,
            })
        })
        .collect::<Result<_, ProjectionError>>()?;
    Ok(OrderDocument {
        order_id: string(d, "_id")?,
        customer_id: string(d, "customer_id")?,
        store_id: string(d, "store_id")?,
        lines,
        total_cents: int(d, "total_cents")?,
        currency: string(d, "currency")?,
        status: string(d, "status")?,
        created_at: time(d, "created_at")?,
        updated_at: time(d, "updated_at")?,
        version: version(d)?,
    })
}

fn bson_version(v: u64) -> Result<i64, ProjectionError> {
    i64::try_from(v).map_err(|_| ProjectionError::poison("mongodb", format!("version {v} beyond int64")))
}

fn bson_time(t: DateTime<Utc>) -> mongodb::bson::DateTime {
    mongodb::bson::DateTime::from_millis(t.timestamp_millis())
}

/// One version-guarded statement of an `update` command.
fn statement(id: &str, version: i64, set: Document, upsert: bool) -> Document {
    doc! {
        "q": { "_id": id, "version": { "$lt": version } },
        "u": { "$set": set },
        "upsert": upsert,
    }
}

/// The batch folded into one statement per menu item and per order.
fn fold(batch: Batch<'_>) -> Result<(Vec<Document>, Vec<Document>), ProjectionError> {
    struct Item<'a> {
        published: Option<&'a cafe_events::proto::menu::v1::MenuItemPublished>,
        retired: bool,
        updated: DateTime<Utc>,
        version: u64,
    }
    struct Order<'a> {
        placed: Option<&'a OrderPlaced>,
        created: DateTime<Utc>,
        status: &'static str,
        updated: DateTime<Utc>,
        version: u64,
    }
    let mut items: BTreeMap<&str, Item<'_>> = BTreeMap::new();
    let mut orders: BTreeMap<&str, Order<'_>> = BTreeMap::new();
    for p in batch.events {
        let e = &p.event;
        match &e.aggregate_id {
            AggregateId::MenuItem(id) => {
                let item = items.entry(id.as_str()).or_insert(Item {
                    published: None,
                    retired: false,
                    updated: e.occurred_at,
                    version: e.version,
                });
                match &e.event {
                    DomainEvent::MenuItemPublished(x) => {
                        item.published = Some(x);
                        item.retired = false;
                    }
                    DomainEvent::MenuItemRetired(_) => item.retired = true,
                    _ => continue,
                }
                item.updated = e.occurred_at;
                item.version = e.version;
            }
            AggregateId::Order(id) => {
                let Some(status) = order_status(&e.event) else { continue };
                let order = orders.entry(id.as_str()).or_insert(Order {
                    placed: None,
                    created: e.occurred_at,
                    status,
                    updated: e.occurred_at,
                    version: e.version,
                });
                if let DomainEvent::OrderPlaced(x) = &e.event {
                    order.placed = Some(x);
                    order.created = e.occurred_at;
                }
                order.status = status;
                order.updated = e.occurred_at;
                order.version = e.version;
            }
            _ => {}
        }
    }
    let mut menu = Vec::with_capacity(items.len());
    for (id, item) in items {
        let v = bson_version(item.version)?;
        let mut set = doc! { "retired": item.retired, "updated_at": bson_time(item.updated), "version": v };
        if let Some(p) = item.published {
            set.insert("name", &p.name);
            set.insert("category", &p.category);
            set.insert("price_cents", p.price_cents);
            set.insert("tags", &p.tags);
        }
        menu.push(statement(id, v, set, item.published.is_some()));
    }
    let mut docs = Vec::with_capacity(orders.len());
    for (id, order) in orders {
        let v = bson_version(order.version)?;
        let mut set = doc! { "status": order.status, "updated_at": bson_time(order.updated), "version": v };
        if let Some(p) = order.placed {
            let lines: Vec<Document> = p
                .lines
                .iter()
                .map(|l| {
                    doc! {
                        "item_id": &l.item_id,
                        "quantity": i64::from(l.quantity),
                        "unit_price_cents": l.unit_price_cents,
                    }
                })
                .collect();
            set.insert("customer_id", &p.customer_id);
            set.insert("store_id", &p.store_id);
            set.insert("lines", lines);
            set.insert("total_cents", p.total_cents);
            set.insert("currency", &p.currency);
            set.insert("created_at", bson_time(order.created));
        }
        docs.push(statement(id, v, set, order.placed.is_some()));
    }
    Ok((menu, docs))
}

impl Projection for MongoDocuments {
    fn name(&self) -> &'static str {
        "documents"
    }

    async fn apply(&self, batch: Batch<'_>) -> Result<(), ProjectionError> {
        let (menu, orders) = fold(batch)?;
        if !menu.is_empty() {
            self.update(MENU_ITEMS, menu).await?;
        }
        if !orders.is_empty() {
            self.update(ORDER_DOCUMENTS, orders).await?;
        }
        Ok(())
    }

    async fn snapshot(&self) -> Result<Vec<String>, ProjectionError> {
        let json = |v: Result<String, serde_json::Error>| v.map_err(|e| ProjectionError::poison("mongodb", e));
        let mut out = Vec::new();
        let items: Vec<Document> = self
            .menu()
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        for d in &items {
            out.push(format!(
                "menu_items {}",
                json(serde_json::to_string(&menu_item_view(d)?))?
            ));
        }
        let orders: Vec<Document> = self
            .orders()
            .find(doc! {})
            .sort(doc! { "_id": 1 })
            .await?
            .try_collect()
            .await?;
        for d in &orders {
            out.push(format!(
                "order_documents {}",
                json(serde_json::to_string(&order_document(d)?))?
            ));
        }
        Ok(out)
    }
}

impl MongoDocuments {
    /// One streamed pass over both collections (a cursor each: one batch in memory).
    async fn verify_pass(&self, buckets: Buckets, keep: &[u32]) -> Result<Digests, ProjectionError> {
        let json = |v: Result<String, serde_json::Error>| v.map_err(|e| ProjectionError::poison("mongodb", e));
        let mut d = Digests::new(buckets, keep);
        let mut items = self.menu().find(doc! {}).await?;
        while let Some(doc) = items.try_next().await? {
            let view = menu_item_view(&doc)?;
            let text = json(serde_json::to_string(&view))?;
            d.add(
                &view.item_id,
                format!("menu_items:{}", view.item_id),
                Some(view.version),
                &text,
            );
        }
        let mut orders = self.orders().find(doc! {}).await?;
        while let Some(doc) = orders.try_next().await? {
            let view = order_document(&doc)?;
            let text = json(serde_json::to_string(&view))?;
            d.add(
                &view.order_id,
                format!("order_documents:{}", view.order_id),
                Some(view.version),
                &text,
            );
        }
        Ok(d)
    }
}

/// Digests streamed from cursors.
impl Verifiable for MongoDocuments {
    async fn digests(&self, buckets: Buckets) -> Result<Vec<BucketDigest>, ProjectionError> {
        Ok(self.verify_pass(buckets, &[]).await?.digests())
    }

    async fn rows(&self, buckets: Buckets, which: &[u32]) -> Result<Vec<Row>, ProjectionError> {
        Ok(self.verify_pass(buckets, which).await?.kept())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_read_whatever_their_width() {
        assert_eq!(lenient_i64(Some(&Bson::Int32(7))), Some(7));
        assert_eq!(lenient_i64(Some(&Bson::Int64(1 << 40))), Some(1 << 40));
        assert_eq!(lenient_i64(Some(&Bson::Double(3.0))), Some(3));
        assert_eq!(lenient_i64(Some(&Bson::Double(3.5))), None);
        assert_eq!(lenient_i64(Some(&Bson::String("3".into()))), None);
    }
}
