//! The Aurora PostgreSQL read model: orders with their items, loyalty accounts and the
//! points ledger.
//!
//! One transaction per batch: the batch's events are folded per aggregate in memory,
//! written as a handful of multi-row statements over `UNNEST`ed arrays (one round trip
//! each, whatever the batch size), and the shard's checkpoint is written in the same
//! transaction. Two guards make it idempotent:
//! - the stored checkpoint: events at or before it are skipped, so a batch the runtime
//!   redelivers after a crash (its own checkpoint lagged ours) writes nothing;
//! - each row's `version`: a row is only moved forward, so the same events arriving
//!   under another shard name (a replay, a resharded stream) change nothing either.

use std::collections::BTreeMap;

use cafe_events::proto::loyalty::v1::Tier;
use cafe_events::{AggregateId, DomainEvent};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Pool, Transaction};
use serde::Serialize;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::{Migration, dump, migrate, pool};
use crate::error::ProjectionError;
use crate::names::{order_status, tier_name};
use crate::projector::{Batch, Positioned, Projection};
use crate::verify::{BucketDigest, Buckets, Row, Verifiable, digests_from_sql, row_hash_sql_postgres, rows_from_sql};

/// The migrations of this read model, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_orders_and_loyalty.sql",
        sql: include_str!("../../migrations/orders/0001_orders_and_loyalty.sql"),
    },
    Migration {
        version: 2,
        name: "0002_room_for_hot_updates.sql",
        sql: include_str!("../../migrations/orders/0002_room_for_hot_updates.sql"),
    },
];

/// The orders + loyalty projector and its queries.
#[derive(Debug, Clone)]
pub struct PgOrdersView {
    pool: Pool,
    name: &'static str,
}

impl PgOrdersView {
    /// Connects to `url` inside `schema` (created and migrated if needed).
    pub async fn connect(url: &str, schema: &str) -> Result<Self, ProjectionError> {
        let pool = pool(url, schema, 8)?;
        migrate(&pool, schema, MIGRATIONS).await?;
        Ok(PgOrdersView { pool, name: "orders" })
    }

    /// The pool, for the benchmark's raw-COPY ceiling on the same tables.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// One order with its lines, as the read model has it now.
    pub async fn order(&self, order_id: &str) -> Result<Option<OrderView>, ProjectionError> {
        let client = self.pool.get().await?;
        let Some(row) = client
            .query_opt(
                "SELECT order_id, customer_id, store_id, total_cents, total_amount::text, currency, status,
                        created_at, updated_at, version
                   FROM orders WHERE order_id = $1",
                &[&order_id],
            )
            .await?
        else {
            return Ok(None);
        };
        let lines = client
            .query(
                "SELECT item_id, quantity, unit_price_cents FROM order_items WHERE order_id = $1 ORDER BY line_no",
                &[&order_id],
            )
            .await?
            .iter()
            .map(|r| OrderLineView {
                item_id: r.get(0),
                quantity: r.get(1),
                unit_price_cents: r.get(2),
            })
            .collect();
        Ok(Some(OrderView {
            order_id: row.get(0),
            customer_id: row.get(1),
            store_id: row.get(2),
            total_cents: row.get(3),
            total_amount: row.get(4),
            currency: row.get(5),
            status: row.get(6),
            created_at: row.get(7),
            updated_at: row.get(8),
            version: row.get::<_, i64>(9).try_into().unwrap_or_default(),
            lines,
        }))
    }

    /// A customer's loyalty account.
    pub async fn loyalty(&self, customer_id: &str) -> Result<Option<LoyaltyView>, ProjectionError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT customer_id, balance, tier, version FROM loyalty_accounts WHERE customer_id = $1",
                &[&customer_id],
            )
            .await?;
        Ok(row.map(|r| LoyaltyView {
            customer_id: r.get(0),
            balance: r.get(1),
            tier: r.get(2),
            version: r.get::<_, i64>(3).try_into().unwrap_or_default(),
        }))
    }
}

/// An order as `GET /v1/orders/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrderView {
    /// The order.
    pub order_id: String,
    /// Who placed it.
    pub customer_id: String,
    /// Where.
    pub store_id: String,
    /// Sum of the lines.
    pub total_cents: i64,
    /// The same in currency units, as the seed's schema has it ("12.34").
    pub total_amount: String,
    /// ISO currency code.
    pub currency: String,
    /// Where it is in its life.
    pub status: String,
    /// When it was placed.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
    /// The order aggregate's version this row reflects.
    pub version: u64,
    /// What was ordered.
    pub lines: Vec<OrderLineView>,
}

/// One line of an [`OrderView`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct OrderLineView {
    /// Menu item.
    pub item_id: String,
    /// How many.
    pub quantity: i32,
    /// Price at the time of ordering.
    pub unit_price_cents: i64,
}

/// A loyalty account as `GET /v1/loyalty/{customer}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct LoyaltyView {
    /// The customer.
    pub customer_id: String,
    /// Points available.
    pub balance: i64,
    /// `green`, `gold` or `platinum`.
    pub tier: String,
    /// The account aggregate's version this reflects.
    pub version: u64,
}

/// Whether `(sequence, sub)` lies after the checkpoint `(cp_sequence, cp_sub)`. Sequence
/// numbers are decimal strings of varying length: compared as numbers.
pub fn after(sequence: &str, sub: u64, cp_sequence: &str, cp_sub: u64) -> bool {
    let a = sequence.trim_start_matches('0');
    let b = cp_sequence.trim_start_matches('0');
    (a.len(), a, sub) > (b.len(), b, cp_sub)
}

#[derive(Default)]
struct OrderRows {
    // Placed orders (full rows).
    id: Vec<String>,
    customer: Vec<String>,
    store: Vec<String>,
    total: Vec<i64>,
    currency: Vec<String>,
    status: Vec<String>,
    created: Vec<DateTime<Utc>>,
    updated: Vec<DateTime<Utc>>,
    version: Vec<i64>,
    // Their lines.
    line_order: Vec<String>,
    line_no: Vec<i32>,
    line_item: Vec<String>,
    line_qty: Vec<i32>,
    line_price: Vec<i64>,
    // Orders placed in an earlier batch: status only.
    moved_id: Vec<String>,
    moved_status: Vec<String>,
    moved_updated: Vec<DateTime<Utc>>,
    moved_version: Vec<i64>,
}

/// Accounts to move forward, one statement's worth: all rows of one [`AccountRows`]
/// know the same things (see [`LoyaltyRows`]).
#[derive(Default)]
struct AccountRows {
    customer: Vec<String>,
    balance: Vec<i64>,
    tier: Vec<String>,
    updated: Vec<DateTime<Utc>>,
    version: Vec<i64>,
}

impl AccountRows {
    fn push(&mut self, customer: &str, balance: i64, tier: &str, updated: DateTime<Utc>, version: i64) {
        self.customer.push(customer.to_owned());
        self.balance.push(balance);
        self.tier.push(tier.to_owned());
        self.updated.push(updated);
        self.version.push(version);
    }
}

#[derive(Default)]
struct LoyaltyRows {
    // A batch may say only half of an account: PointsEarned/Redeemed carry the balance,
    // TierChanged the tier. Each half has its own upsert, which keeps the other half.
    // (A new account takes `green` or a zero balance for the half it lacks: an account
    // starts green, and its first event is always a points movement.)
    full: AccountRows,
    balance_only: AccountRows,
    tier_only: AccountRows,
    // Only events this build does not know: the version moves, nothing else.
    version_only: AccountRows,
    ledger_customer: Vec<String>,
    ledger_version: Vec<i64>,
    ledger_event: Vec<uuid::Uuid>,
    ledger_kind: Vec<String>,
    ledger_points: Vec<i64>,
    ledger_balance: Vec<i64>,
    ledger_order: Vec<Option<String>>,
    ledger_at: Vec<DateTime<Utc>>,
}

fn version(v: u64) -> Result<i64, ProjectionError> {
    i64::try_from(v).map_err(|_| ProjectionError::poison("postgres", format!("version {v} beyond BIGINT")))
}

/// Folds the batch into final per-aggregate rows: later events of an aggregate override
/// earlier ones, so each row is written once per batch.
fn fold(events: &[&Positioned]) -> Result<(OrderRows, LoyaltyRows), ProjectionError> {
    struct Order<'a> {
        placed: Option<&'a cafe_events::proto::orders::v1::OrderPlaced>,
        created: DateTime<Utc>,
        status: &'static str,
        updated: DateTime<Utc>,
        version: u64,
    }
    struct Account {
        balance: Option<i64>,
        tier: Option<&'static str>,
        updated: DateTime<Utc>,
        version: u64,
    }
    let mut orders: BTreeMap<&str, Order<'_>> = BTreeMap::new();
    let mut accounts: BTreeMap<&str, Account> = BTreeMap::new();
    let mut l = LoyaltyRows::default();
    for p in events {
        let e = &p.event;
        match (&e.aggregate_id, &e.event) {
            (AggregateId::Order(id), event) => {
                let Some(status) = order_status(event) else { continue };
                let o = orders.entry(id.as_str()).or_insert(Order {
                    placed: None,
                    created: e.occurred_at,
                    status,
                    updated: e.occurred_at,
                    version: e.version,
                });
                if let DomainEvent::OrderPlaced(placed) = event {
                    o.placed = Some(placed);
                    o.created = e.occurred_at;
                }
                o.status = status;
                o.updated = e.occurred_at;
                o.version = e.version;
            }
            (AggregateId::LoyaltyAccount(id), event) => {
                let a = accounts.entry(id.as_str()).or_insert(Account {
                    balance: None,
                    tier: None,
                    updated: e.occurred_at,
                    version: e.version,
                });
                let (kind, points, balance_after, order) = match event {
                    DomainEvent::PointsEarned(x) => ("earned", x.points, x.balance_after, Some(x.order_id.clone())),
                    DomainEvent::PointsRedeemed(x) => ("redeemed", -x.points, x.balance_after, None),
                    DomainEvent::TierChanged(x) => {
                        a.tier = Some(tier_name(Tier::try_from(x.to).unwrap_or_default()));
                        a.updated = e.occurred_at;
                        a.version = e.version;
                        continue;
                    }
                    _ => continue,
                };
                a.balance = Some(balance_after);
                a.updated = e.occurred_at;
                a.version = e.version;
                l.ledger_customer.push(id.to_string());
                l.ledger_version.push(version(e.version)?);
                l.ledger_event.push(e.event_id.as_uuid());
                l.ledger_kind.push(kind.to_owned());
                l.ledger_points.push(points);
                l.ledger_balance.push(balance_after);
                l.ledger_order.push(order.filter(|o| !o.is_empty()));
                l.ledger_at.push(e.occurred_at);
            }
            _ => {}
        }
    }
    let mut o = OrderRows::default();
    for (id, order) in orders {
        match order.placed {
            Some(placed) => {
                o.id.push(id.to_owned());
                o.customer.push(placed.customer_id.clone());
                o.store.push(placed.store_id.clone());
                o.total.push(placed.total_cents);
                o.currency.push(placed.currency.clone());
                o.status.push(order.status.to_owned());
                o.created.push(order.created);
                o.updated.push(order.updated);
                o.version.push(version(order.version)?);
                for (n, line) in placed.lines.iter().enumerate() {
                    o.line_order.push(id.to_owned());
                    o.line_no.push(i32::try_from(n + 1).unwrap_or(i32::MAX));
                    o.line_item.push(line.item_id.clone());
                    o.line_qty.push(i32::try_from(line.quantity).unwrap_or(i32::MAX));
                    o.line_price.push(line.unit_price_cents);
                }
            }
            None => {
                o.moved_id.push(id.to_owned());
                o.moved_status.push(order.status.to_owned());
                o.moved_updated.push(order.updated);
                o.moved_version.push(version(order.version)?);
            }
        }
    }
    for (id, a) in accounts {
        let v = version(a.version)?;
        match (a.balance, a.tier) {
            (Some(balance), Some(tier)) => l.full.push(id, balance, tier, a.updated, v),
            (Some(balance), None) => l.balance_only.push(id, balance, "green", a.updated, v),
            (None, Some(tier)) => l.tier_only.push(id, 0, tier, a.updated, v),
            (None, None) => l.version_only.push(id, 0, "green", a.updated, v),
        }
    }
    Ok((o, l))
}

macro_rules! upsert_accounts {
    ($set:literal) => {
        concat!(
            "INSERT INTO loyalty_accounts AS a (customer_id, balance, tier, updated_at, version)
             SELECT * FROM UNNEST($1::varchar[], $2::int8[], $3::varchar[], $4::timestamptz[], $5::int8[])
             ON CONFLICT (customer_id) DO UPDATE SET ",
            $set,
            ", updated_at = EXCLUDED.updated_at, version = EXCLUDED.version
             WHERE a.version < EXCLUDED.version"
        )
    };
}

const UPSERT_ORDERS: &str = "
INSERT INTO orders AS o (order_id, customer_id, store_id, total_cents, currency, status, created_at, updated_at, version)
SELECT * FROM UNNEST($1::varchar[], $2::varchar[], $3::varchar[], $4::int8[], $5::varchar[], $6::varchar[],
                     $7::timestamptz[], $8::timestamptz[], $9::int8[])
ON CONFLICT (order_id) DO UPDATE
   SET status = EXCLUDED.status, updated_at = EXCLUDED.updated_at, version = EXCLUDED.version
 WHERE o.version < EXCLUDED.version";

const INSERT_ITEMS: &str = "
INSERT INTO order_items (order_id, line_no, item_id, quantity, unit_price_cents)
SELECT * FROM UNNEST($1::varchar[], $2::int4[], $3::varchar[], $4::int4[], $5::int8[])
ON CONFLICT (order_id, line_no) DO NOTHING";

const MOVE_ORDERS: &str = "
UPDATE orders AS o SET status = u.status, updated_at = u.updated_at, version = u.version
  FROM UNNEST($1::varchar[], $2::varchar[], $3::timestamptz[], $4::int8[]) AS u(order_id, status, updated_at, version)
 WHERE o.order_id = u.order_id AND o.version < u.version";

/// Upserts of accounts, by what the batch knows of them (see [`LoyaltyRows`]).
const UPSERT_ACCOUNTS: [&str; 4] = [
    upsert_accounts!("balance = EXCLUDED.balance, tier = EXCLUDED.tier"),
    upsert_accounts!("balance = EXCLUDED.balance"),
    upsert_accounts!("tier = EXCLUDED.tier"),
    upsert_accounts!("tier = a.tier"),
];

const INSERT_LEDGER: &str = "
INSERT INTO loyalty_ledger (customer_id, version, event_id, kind, points, balance_after, order_id, occurred_at)
SELECT * FROM UNNEST($1::varchar[], $2::int8[], $3::uuid[], $4::varchar[], $5::int8[], $6::int8[], $7::varchar[],
                     $8::timestamptz[])
ON CONFLICT (customer_id, version) DO NOTHING";

// The same three tables, loaded by binary COPY when every row is new (see `apply`).
const COPY_ORDERS: &str = "COPY orders (order_id, customer_id, store_id, total_cents, currency, status, created_at, \
                           updated_at, version) FROM STDIN (FORMAT binary)";
const COPY_ITEMS: &str =
    "COPY order_items (order_id, line_no, item_id, quantity, unit_price_cents) FROM STDIN (FORMAT binary)";
const COPY_LEDGER: &str = "COPY loyalty_ledger (customer_id, version, event_id, kind, points, balance_after, \
                           order_id, occurred_at) FROM STDIN (FORMAT binary)";

const READ_CHECKPOINT: &str =
    "SELECT sequence::text, sub_sequence FROM projection_checkpoints WHERE projector = $1 AND shard_id = $2 FOR UPDATE";

const WRITE_CHECKPOINT: &str = "
INSERT INTO projection_checkpoints AS c (projector, shard_id, sequence, sub_sequence, updated_at)
VALUES ($1, $2, $3::text::numeric, $4, now())
ON CONFLICT (projector, shard_id) DO UPDATE
   SET sequence = EXCLUDED.sequence, sub_sequence = EXCLUDED.sub_sequence, updated_at = now()
 WHERE (c.sequence, c.sub_sequence) < (EXCLUDED.sequence, EXCLUDED.sub_sequence)";

/// One column of a batch's rows, held as a `Vec`: bound whole as an array parameter by
/// the upserts, read cell by cell by COPY. Lets both paths share one list of columns.
trait Column: Sync {
    fn rows(&self) -> usize;
    fn param(&self) -> &(dyn ToSql + Sync);
    fn cell(&self, row: usize) -> &(dyn ToSql + Sync);
}

impl<T: ToSql + Sync> Column for Vec<T> {
    fn rows(&self) -> usize {
        self.len()
    }
    fn param(&self) -> &(dyn ToSql + Sync) {
        self
    }
    fn cell(&self, row: usize) -> &(dyn ToSql + Sync) {
        &self[row]
    }
}

impl OrderRows {
    fn placed(&self) -> [&dyn Column; 9] {
        [
            &self.id,
            &self.customer,
            &self.store,
            &self.total,
            &self.currency,
            &self.status,
            &self.created,
            &self.updated,
            &self.version,
        ]
    }

    fn lines(&self) -> [&dyn Column; 5] {
        [
            &self.line_order,
            &self.line_no,
            &self.line_item,
            &self.line_qty,
            &self.line_price,
        ]
    }
}

impl LoyaltyRows {
    fn ledger(&self) -> [&dyn Column; 8] {
        [
            &self.ledger_customer,
            &self.ledger_version,
            &self.ledger_event,
            &self.ledger_kind,
            &self.ledger_points,
            &self.ledger_balance,
            &self.ledger_order,
            &self.ledger_at,
        ]
    }
}

/// Loads the batch's placed orders, their lines and its ledger entries by binary COPY.
/// Fails with a unique violation if any of them exists already.
async fn copy_new_rows(tx: &Transaction<'_>, o: &OrderRows, l: &LoyaltyRows) -> Result<(), tokio_postgres::Error> {
    use tokio_postgres::types::Type;
    const ORDERS: &[Type] = &[
        Type::VARCHAR,
        Type::VARCHAR,
        Type::VARCHAR,
        Type::INT8,
        Type::VARCHAR,
        Type::VARCHAR,
        Type::TIMESTAMPTZ,
        Type::TIMESTAMPTZ,
        Type::INT8,
    ];
    const ITEMS: &[Type] = &[Type::VARCHAR, Type::INT4, Type::VARCHAR, Type::INT4, Type::INT8];
    const LEDGER: &[Type] = &[
        Type::VARCHAR,
        Type::INT8,
        Type::UUID,
        Type::VARCHAR,
        Type::INT8,
        Type::INT8,
        Type::VARCHAR,
        Type::TIMESTAMPTZ,
    ];
    copy_rows(tx, COPY_ORDERS, ORDERS, &o.placed()).await?;
    copy_rows(tx, COPY_ITEMS, ITEMS, &o.lines()).await?;
    copy_rows(tx, COPY_LEDGER, LEDGER, &l.ledger()).await
}

/// One binary COPY of `columns` (nothing sent when they hold no rows).
async fn copy_rows(
    tx: &Transaction<'_>,
    statement: &str,
    types: &[tokio_postgres::types::Type],
    columns: &[&dyn Column],
) -> Result<(), tokio_postgres::Error> {
    let rows = columns.first().map_or(0, |c| c.rows());
    if rows == 0 {
        return Ok(());
    }
    let mut writer = std::pin::pin!(BinaryCopyInWriter::new(tx.copy_in(statement).await?, types));
    let mut row = Vec::with_capacity(columns.len());
    for i in 0..rows {
        row.clear();
        row.extend(columns.iter().map(|c| c.cell(i)));
        writer.as_mut().write(&row).await?;
    }
    writer.finish().await?;
    Ok(())
}

/// The columns as array parameters.
fn params<'a>(columns: &[&'a dyn Column]) -> Vec<&'a (dyn ToSql + Sync)> {
    columns.iter().map(|c| c.param()).collect()
}

/// The same rows as [`copy_new_rows`] through the version-guarded upserts, for a batch
/// some of whose rows exist already; pipelined.
async fn upsert_new_rows(tx: &Transaction<'_>, o: &OrderRows, l: &LoyaltyRows) -> Result<(), ProjectionError> {
    let (upsert, items, ledger) = futures::try_join!(
        tx.prepare_cached(UPSERT_ORDERS),
        tx.prepare_cached(INSERT_ITEMS),
        tx.prepare_cached(INSERT_LEDGER),
    )?;
    let (placed, lines, ledger_rows) = (params(&o.placed()), params(&o.lines()), params(&l.ledger()));
    let writes = [
        (!o.id.is_empty()).then_some((&upsert, &placed)),
        (!o.id.is_empty()).then_some((&items, &lines)),
        (!l.ledger_customer.is_empty()).then_some((&ledger, &ledger_rows)),
    ];
    futures::future::try_join_all(
        writes
            .into_iter()
            .flatten()
            .map(|(stmt, params)| tx.execute(stmt, params)),
    )
    .await?;
    Ok(())
}

impl Projection for PgOrdersView {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn apply(&self, batch: Batch<'_>) -> Result<(), ProjectionError> {
        let Some(last) = batch.events.last() else {
            return Ok(());
        };
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let read = tx.prepare_cached(READ_CHECKPOINT).await?;
        // The savepoint for the bulk load below travels with the checkpoint read.
        let key: [&(dyn ToSql + Sync); 2] = [&self.name, &batch.shard_id];
        let (checkpoint, ()) = futures::try_join!(tx.query_opt(&read, &key), tx.batch_execute("SAVEPOINT bulk"),)?;
        let checkpoint = checkpoint.map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)));
        let fresh: Vec<&Positioned> = batch
            .events
            .iter()
            .filter(|p| match &checkpoint {
                Some((seq, sub)) => after(&p.sequence, p.sub, seq, u64::try_from(*sub).unwrap_or(0)),
                None => true,
            })
            .collect();
        if fresh.is_empty() {
            // Everything here was applied before; nothing to record either.
            return Ok(());
        }
        let (o, l) = fold(&fresh)?;
        // New rows first. Live, nearly every placed order, line and ledger entry after
        // our checkpoint is new, so they are loaded by binary COPY, PostgreSQL's bulk
        // path (measured: the batch takes ~30 % less time than with the same rows as
        // UNNEST upserts). A row that exists already
        // (a replay under another shard name, a redelivery after a reshard) makes the
        // COPY fail on its key: the savepoint undoes it and the same rows go through the
        // guarded upserts instead, so the outcome is the same either way.
        match copy_new_rows(&tx, &o, &l).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                tx.batch_execute("ROLLBACK TO SAVEPOINT bulk").await?;
                upsert_new_rows(&tx, &o, &l).await?;
            }
            Err(e) => return Err(e.into()),
        }
        // Then everything that moves existing rows, and the checkpoint, sent at once
        // (tokio-postgres pipelines requests issued together on one connection): one
        // round trip. They are independent, and the transaction makes them
        // all-or-nothing; on a failure the first statement's own error is reported
        // (later ones only say "aborted").
        let sub = i64::try_from(last.sub).unwrap_or(i64::MAX);
        let (moved, full, balance, tier, touched, checkpoint) = futures::try_join!(
            tx.prepare_cached(MOVE_ORDERS),
            tx.prepare_cached(UPSERT_ACCOUNTS[0]),
            tx.prepare_cached(UPSERT_ACCOUNTS[1]),
            tx.prepare_cached(UPSERT_ACCOUNTS[2]),
            tx.prepare_cached(UPSERT_ACCOUNTS[3]),
            tx.prepare_cached(WRITE_CHECKPOINT),
        )?;
        let moves = [
            &o.moved_id as &(dyn ToSql + Sync),
            &o.moved_status,
            &o.moved_updated,
            &o.moved_version,
        ];
        let position = [&self.name as &(dyn ToSql + Sync), &batch.shard_id, &last.sequence, &sub];
        let accounts = [
            (&full, &l.full),
            (&balance, &l.balance_only),
            (&tier, &l.tier_only),
            (&touched, &l.version_only),
        ];
        let account_params: Vec<_> = accounts
            .iter()
            .filter(|(_, rows)| !rows.customer.is_empty())
            .map(|(stmt, rows)| {
                let params: [&(dyn ToSql + Sync); 5] =
                    [&rows.customer, &rows.balance, &rows.tier, &rows.updated, &rows.version];
                (*stmt, params)
            })
            .collect();
        let writes = (!o.moved_id.is_empty())
            .then_some((&moved, &moves[..]))
            .into_iter()
            .chain(account_params.iter().map(|(stmt, params)| (*stmt, &params[..])))
            .chain(std::iter::once((&checkpoint, &position[..])));
        // No RELEASE SAVEPOINT: the commit ends the savepoint with the transaction.
        futures::future::try_join_all(writes.map(|(stmt, params)| tx.execute(stmt, params))).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn snapshot(&self) -> Result<Vec<String>, ProjectionError> {
        let mut out = dump(&self.pool, "orders", "order_id").await?;
        out.extend(dump(&self.pool, "order_items", "order_id, line_no").await?);
        out.extend(dump(&self.pool, "loyalty_accounts", "customer_id").await?);
        out.extend(dump(&self.pool, "loyalty_ledger", "customer_id, version").await?);
        Ok(out)
    }
}

/// Every row of the model with its aggregate, key and version, for verification
/// (`$1`: the bucket count).
const VERIFY_ROWS: &str = "
    WITH r AS (
        SELECT order_id AS agg, 'orders:' || order_id AS key, version AS v, row_to_json(t)::text AS txt
          FROM orders t
        UNION ALL
        SELECT order_id, 'order_items:' || order_id || '#' || line_no, NULL::bigint, row_to_json(t)::text
          FROM order_items t
        UNION ALL
        SELECT customer_id, 'loyalty_accounts:' || customer_id, version, row_to_json(t)::text
          FROM loyalty_accounts t
        UNION ALL
        SELECT customer_id, 'loyalty_ledger:' || customer_id || '#' || version, version, row_to_json(t)::text
          FROM loyalty_ledger t
    )
    SELECT BUCKET::bigint AS bucket, agg, key, v, HASH AS h FROM r";

impl PgOrdersView {
    fn verify_rows(buckets: Buckets) -> String {
        VERIFY_ROWS
            .replace("BUCKET", &buckets.sql_postgres("agg"))
            .replace("HASH", &row_hash_sql_postgres("txt"))
    }
}

/// Digests computed by PostgreSQL: only a row per bucket crosses the wire.
impl Verifiable for PgOrdersView {
    async fn digests(&self, buckets: Buckets) -> Result<Vec<BucketDigest>, ProjectionError> {
        let sql = format!(
            "SELECT bucket, count(*), sum(h)::text FROM ({}) b GROUP BY bucket",
            Self::verify_rows(buckets)
        );
        let rows = self.pool.get().await?.query(&sql, &[]).await?;
        digests_from_sql(buckets, rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))))
    }

    async fn rows(&self, buckets: Buckets, which: &[u32]) -> Result<Vec<Row>, ProjectionError> {
        let which: Vec<i64> = which.iter().map(|b| i64::from(*b)).collect();
        let sql = format!(
            "SELECT bucket, agg, key, v, h FROM ({}) b WHERE bucket = ANY($1)",
            Self::verify_rows(buckets)
        );
        let rows = self.pool.get().await?.query(&sql, &[&which]).await?;
        Ok(rows_from_sql(
            rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_compare_as_numbers_then_by_sub_sequence() {
        assert!(after("100", 0, "99", 5));
        assert!(!after("99", 5, "100", 0));
        assert!(after("0100", 1, "100", 0));
        assert!(!after("100", 0, "100", 0));
        assert!(!after(
            "49590338271490256608559692538361571095921575989136588898",
            0,
            "49590338271490256608559692538361571095921575989136588899",
            0
        ));
    }
}
