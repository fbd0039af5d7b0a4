//! [`AnalyticsFacts`]: the events as warehouse facts, one row per event (per order
//! line for orders), plus two small dimensions.
//!
//! Each batch is one [`Warehouse::execute_batch`]: per table it touches, a temporary
//! staging table shaped like the target, multi-row `INSERT`s of the batch's rows
//! (deduplicated by key here: Redshift's `MERGE` refuses a source with two rows for one
//! target row), a `MERGE` on the key, and the staging table dropped. Idempotence needs
//! no checkpoint: fact keys are event ids, so a redelivered event matches its own row
//! and rewrites it unchanged; the menu dimension is guarded by the item's version (stale
//! rows are deleted from the stage before the `MERGE`) and `dim_store.first_seen` only
//! ever moves earlier (`LEAST`), so every order of arrival ends in the same tables.

use std::collections::BTreeMap;

use cafe_events::proto::loyalty::v1::Tier;
use cafe_events::{AggregateId, DomainEvent};
use chrono::{DateTime, Utc};

use super::reports::Reports;
use super::{Dialect, Warehouse, literal, valid_schema};
use crate::error::ProjectionError;
use crate::names::tier_name;
use crate::projector::{Batch, Projection};
use crate::verify::{BucketDigest, Buckets, Row, Verifiable, digests_from_sql, row_hash_sql_postgres, rows_from_sql};

/// One table: its name, key and columns (key first), the DDL of its columns, and how a
/// matched row is updated.
struct Spec {
    table: &'static str,
    key: &'static [&'static str],
    /// SQL of the aggregate id a row belongs to (verification buckets rows by it).
    aggregate: &'static str,
    /// SQL of the aggregate version a row reflects, where the table keeps one.
    version: &'static str,
    columns: &'static [&'static str],
    ddl: &'static str,
    /// `SET` assignments for `WHEN MATCHED`: the stage is `s`, the target is named by its
    /// table name (Redshift's `MERGE` takes no alias for the target).
    update: &'static str,
}

const ORDER_LINES: Spec = Spec {
    table: "fact_order_lines",
    key: &["event_id", "line_no"],
    aggregate: "order_id",
    version: "NULL",
    columns: &[
        "event_id",
        "line_no",
        "order_id",
        "store_id",
        "customer_id",
        "item_id",
        "quantity",
        "unit_price_cents",
        "line_total_cents",
        "occurred_at",
    ],
    ddl: "event_id VARCHAR(36) NOT NULL, line_no INTEGER NOT NULL, order_id VARCHAR(128) NOT NULL,
          store_id VARCHAR(128) NOT NULL, customer_id VARCHAR(128) NOT NULL, item_id VARCHAR(128) NOT NULL,
          quantity INTEGER NOT NULL, unit_price_cents BIGINT NOT NULL, line_total_cents BIGINT NOT NULL,
          occurred_at TIMESTAMP NOT NULL, PRIMARY KEY (event_id, line_no)",
    // Facts never change: rewriting a redelivered row with itself is the no-op update
    // Redshift's MERGE needs (it requires both WHEN clauses).
    update: "occurred_at = s.occurred_at",
};

const ORDER_STATUS: Spec = Spec {
    table: "fact_order_status",
    key: &["event_id"],
    aggregate: "order_id",
    version: "NULL",
    columns: &["event_id", "order_id", "status", "occurred_at"],
    ddl: "event_id VARCHAR(36) NOT NULL, order_id VARCHAR(128) NOT NULL, status VARCHAR(32) NOT NULL,
          occurred_at TIMESTAMP NOT NULL, PRIMARY KEY (event_id)",
    update: "occurred_at = s.occurred_at",
};

const INVENTORY_MOVES: Spec = Spec {
    table: "fact_inventory_moves",
    key: &["event_id"],
    aggregate: "store_id || '#' || sku",
    version: "NULL",
    columns: &[
        "event_id",
        "store_id",
        "sku",
        "kind",
        "delta",
        "on_hand_after",
        "occurred_at",
    ],
    ddl: "event_id VARCHAR(36) NOT NULL, store_id VARCHAR(128) NOT NULL, sku VARCHAR(128) NOT NULL,
          kind VARCHAR(32) NOT NULL, delta BIGINT NOT NULL, on_hand_after BIGINT, occurred_at TIMESTAMP NOT NULL,
          PRIMARY KEY (event_id)",
    update: "occurred_at = s.occurred_at",
};

const LOYALTY: Spec = Spec {
    table: "fact_loyalty",
    key: &["event_id"],
    aggregate: "customer_id",
    version: "NULL",
    columns: &[
        "event_id",
        "customer_id",
        "kind",
        "points",
        "balance_after",
        "tier",
        "occurred_at",
    ],
    ddl: "event_id VARCHAR(36) NOT NULL, customer_id VARCHAR(128) NOT NULL, kind VARCHAR(32) NOT NULL,
          points BIGINT NOT NULL, balance_after BIGINT, tier VARCHAR(32), occurred_at TIMESTAMP NOT NULL,
          PRIMARY KEY (event_id)",
    update: "occurred_at = s.occurred_at",
};

const MENU_ITEMS: Spec = Spec {
    table: "dim_menu_item",
    key: &["item_id"],
    aggregate: "item_id",
    version: "version",
    columns: &["item_id", "name", "category", "price_cents", "retired", "version"],
    // Nullable: a batch holding only a retirement does not know the item's name; the
    // MERGE keeps what the target has (and the staging table, made LIKE this one,
    // must accept the gap).
    ddl: "item_id VARCHAR(128) NOT NULL, name VARCHAR(800), category VARCHAR(256), price_cents BIGINT,
          retired BOOLEAN NOT NULL, version BIGINT NOT NULL, PRIMARY KEY (item_id)",
    update: "name = COALESCE(s.name, dim_menu_item.name), category = COALESCE(s.category, dim_menu_item.category),
             price_cents = COALESCE(s.price_cents, dim_menu_item.price_cents), retired = s.retired,
             version = s.version",
};

const STORES: Spec = Spec {
    table: "dim_store",
    key: &["store_id"],
    aggregate: "store_id",
    version: "NULL",
    columns: &["store_id", "first_seen"],
    ddl: "store_id VARCHAR(128) NOT NULL, first_seen TIMESTAMP NOT NULL, PRIMARY KEY (store_id)",
    update: "first_seen = LEAST(dim_store.first_seen, s.first_seen)",
};

const TABLES: [&Spec; 6] = [
    &ORDER_LINES,
    &ORDER_STATUS,
    &INVENTORY_MOVES,
    &LOYALTY,
    &MENU_ITEMS,
    &STORES,
];

/// Largest `INSERT` we build: well under the Data API's 100 KB per statement.
const MAX_INSERT_BYTES: usize = 60 * 1024;

/// The analytics projector over any [`Warehouse`], its tables in `schema`.
#[derive(Debug, Clone)]
pub struct AnalyticsFacts<W> {
    warehouse: W,
    schema: String,
}

impl<W: Warehouse> AnalyticsFacts<W> {
    /// Creates the schema and tables if missing (`IF NOT EXISTS` DDL both warehouses
    /// accept: there is no migration table to keep, the DDL is its own record).
    pub async fn connect(warehouse: W, schema: &str) -> Result<Self, ProjectionError> {
        let schema = valid_schema(schema)?.to_owned();
        let mut ddl = vec![format!("CREATE SCHEMA IF NOT EXISTS {schema}")];
        ddl.extend(
            TABLES
                .iter()
                .map(|t| format!("CREATE TABLE IF NOT EXISTS {schema}.{} ({})", t.table, t.ddl)),
        );
        warehouse.execute_batch(ddl).await?;
        Ok(AnalyticsFacts { warehouse, schema })
    }

    /// The warehouse.
    pub fn warehouse(&self) -> &W {
        &self.warehouse
    }

    /// The schema holding the tables.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The reports over these facts.
    pub fn reports(&self) -> Reports<'_, W> {
        Reports::checked(&self.warehouse, &self.schema)
    }

    /// The statements that load `rows` (key-deduplicated, last wins) into `spec`'s table.
    fn load(&self, spec: &Spec, rows: BTreeMap<Vec<String>, Vec<String>>, out: &mut Vec<String>) {
        if rows.is_empty() {
            return;
        }
        let (s, table) = (&self.schema, spec.table);
        let stage = format!("stage_{table}");
        out.push(format!("CREATE TEMP TABLE {stage} (LIKE {s}.{table})"));
        let head = format!("INSERT INTO {stage} ({}) VALUES ", spec.columns.join(", "));
        let mut insert = String::new();
        for row in rows.into_values() {
            let tuple = format!("({})", row.join(", "));
            if !insert.is_empty() && insert.len() + tuple.len() + 2 > MAX_INSERT_BYTES {
                out.push(std::mem::take(&mut insert));
            }
            if insert.is_empty() {
                insert.push_str(&head);
            } else {
                insert.push_str(", ");
            }
            insert.push_str(&tuple);
        }
        out.push(insert);
        if spec.table == MENU_ITEMS.table {
            out.push(format!(
                "DELETE FROM {stage} USING {s}.{table}
                  WHERE {table}.item_id = {stage}.item_id AND {table}.version >= {stage}.version"
            ));
        }
        let on = spec
            .key
            .iter()
            .map(|k| format!("{table}.{k} = s.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ");
        let values = spec
            .columns
            .iter()
            .map(|c| format!("s.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push(format!(
            "MERGE INTO {s}.{table} USING {stage} AS s ON {on}
              WHEN MATCHED THEN UPDATE SET {}
              WHEN NOT MATCHED THEN INSERT ({}) VALUES ({values})",
            spec.update,
            spec.columns.join(", ")
        ));
        out.push(format!("DROP TABLE {stage}"));
    }
}

/// Literal builders for one batch.
struct Lit(super::Dialect);

impl Lit {
    fn s(&self, v: &str) -> Result<String, ProjectionError> {
        literal(v, self.0)
    }

    fn at(&self, at: DateTime<Utc>) -> Result<String, ProjectionError> {
        self.s(&at.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string())
    }

    fn opt(&self, v: Option<&str>) -> Result<String, ProjectionError> {
        v.map_or_else(|| Ok("NULL".to_owned()), |v| self.s(v))
    }
}

/// A menu item as the batch leaves it.
struct MenuRow {
    name: Option<String>,
    category: Option<String>,
    price_cents: Option<i64>,
    retired: bool,
    version: u64,
}

type Rows = BTreeMap<Vec<String>, Vec<String>>;

/// Adds `row` under the key made of its first `key_len` values.
fn put(rows: &mut Rows, key_len: usize, row: Vec<String>) {
    rows.insert(row[..key_len].to_vec(), row);
}

impl<W: Warehouse> Projection for AnalyticsFacts<W> {
    fn name(&self) -> &'static str {
        "analytics"
    }

    async fn apply(&self, batch: Batch<'_>) -> Result<(), ProjectionError> {
        let l = Lit(self.warehouse.dialect());
        let (mut lines, mut status, mut moves, mut loyalty) = (Rows::new(), Rows::new(), Rows::new(), Rows::new());
        let mut menu: BTreeMap<String, MenuRow> = BTreeMap::new();
        let mut stores: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
        let mut seen_store = |store: &str, at: DateTime<Utc>| {
            let first = stores.entry(store.to_owned()).or_insert(at);
            *first = (*first).min(at);
        };
        for p in batch.events {
            let e = &p.event;
            let (id, at) = (l.s(&e.event_id.to_string())?, l.at(e.occurred_at)?);
            let order_status = |order: &str, s: &str| -> Result<Vec<String>, ProjectionError> {
                Ok(vec![id.clone(), l.s(order)?, l.s(s)?, at.clone()])
            };
            match (&e.aggregate_id, &e.event) {
                (AggregateId::Order(order), DomainEvent::OrderPlaced(x)) => {
                    for (n, line) in x.lines.iter().enumerate() {
                        let total = line
                            .unit_price_cents
                            .checked_mul(i64::from(line.quantity))
                            .ok_or_else(|| {
                                ProjectionError::poison("warehouse", format!("line total of {order} overflows"))
                            })?;
                        let row = vec![
                            id.clone(),
                            (n + 1).to_string(),
                            l.s(order.as_str())?,
                            l.s(&x.store_id)?,
                            l.s(&x.customer_id)?,
                            l.s(&line.item_id)?,
                            line.quantity.to_string(),
                            line.unit_price_cents.to_string(),
                            total.to_string(),
                            at.clone(),
                        ];
                        put(&mut lines, 2, row);
                    }
                    put(&mut status, 1, order_status(order.as_str(), "placed")?);
                    seen_store(&x.store_id, e.occurred_at);
                }
                (AggregateId::Order(order), event) => {
                    // OrderPlaced is the arm above; every other order event names a status.
                    let Some(s) = crate::names::order_status(event) else {
                        continue;
                    };
                    put(&mut status, 1, order_status(order.as_str(), s)?);
                }
                (AggregateId::StockItem(..), event) => {
                    let (store, sku, kind, delta, on_hand) = match event {
                        DomainEvent::StockRestocked(x) => {
                            (&x.store_id, &x.sku, "restocked", x.quantity, Some(x.on_hand_after))
                        }
                        DomainEvent::StockAdjusted(x) => {
                            (&x.store_id, &x.sku, "adjusted", x.delta, Some(x.on_hand_after))
                        }
                        DomainEvent::StockReserved(x) => {
                            (&x.store_id, &x.sku, "reserved", -x.quantity, Some(x.on_hand_after))
                        }
                        DomainEvent::StockDepleted(x) => (&x.store_id, &x.sku, "depleted", 0, None),
                        _ => continue,
                    };
                    let row = vec![
                        id.clone(),
                        l.s(store)?,
                        l.s(sku)?,
                        l.s(kind)?,
                        delta.to_string(),
                        on_hand.map_or_else(|| "NULL".to_owned(), |n| n.to_string()),
                        at.clone(),
                    ];
                    put(&mut moves, 1, row);
                    seen_store(store, e.occurred_at);
                }
                (AggregateId::LoyaltyAccount(customer), event) => {
                    let (kind, points, balance, tier) = match event {
                        DomainEvent::PointsEarned(x) => ("earned", x.points, Some(x.balance_after), None),
                        DomainEvent::PointsRedeemed(x) => ("redeemed", -x.points, Some(x.balance_after), None),
                        DomainEvent::TierChanged(x) => (
                            "tier_changed",
                            0,
                            None,
                            Some(tier_name(Tier::try_from(x.to).unwrap_or_default())),
                        ),
                        _ => continue,
                    };
                    let row = vec![
                        id.clone(),
                        l.s(customer.as_str())?,
                        l.s(kind)?,
                        points.to_string(),
                        balance.map_or_else(|| "NULL".to_owned(), |n| n.to_string()),
                        l.opt(tier)?,
                        at.clone(),
                    ];
                    put(&mut loyalty, 1, row);
                }
                (AggregateId::MenuItem(item), event) => {
                    let row = menu.entry(item.to_string()).or_insert(MenuRow {
                        name: None,
                        category: None,
                        price_cents: None,
                        retired: false,
                        version: e.version,
                    });
                    match event {
                        DomainEvent::MenuItemPublished(x) => {
                            row.name = Some(x.name.clone());
                            row.category = Some(x.category.clone());
                            row.price_cents = Some(x.price_cents);
                            row.retired = false;
                        }
                        DomainEvent::MenuItemRetired(_) => row.retired = true,
                        _ => continue,
                    }
                    row.version = e.version;
                }
            }
        }
        let mut menu_rows = Rows::new();
        for (item, m) in menu {
            let version = i64::try_from(m.version)
                .map_err(|_| ProjectionError::poison("warehouse", format!("version {} beyond BIGINT", m.version)))?;
            let row = vec![
                l.s(&item)?,
                l.opt(m.name.as_deref())?,
                l.opt(m.category.as_deref())?,
                m.price_cents.map_or_else(|| "NULL".to_owned(), |n| n.to_string()),
                if m.retired { "TRUE" } else { "FALSE" }.to_owned(),
                version.to_string(),
            ];
            put(&mut menu_rows, 1, row);
        }
        let mut store_rows = Rows::new();
        for (store, first) in stores {
            put(&mut store_rows, 1, vec![l.s(&store)?, l.at(first)?]);
        }
        let mut statements = Vec::new();
        for (spec, rows) in [
            (&ORDER_LINES, lines),
            (&ORDER_STATUS, status),
            (&INVENTORY_MOVES, moves),
            (&LOYALTY, loyalty),
            (&MENU_ITEMS, menu_rows),
            (&STORES, store_rows),
        ] {
            self.load(spec, rows, &mut statements);
        }
        if statements.is_empty() {
            return Ok(());
        }
        self.warehouse.execute_batch(statements).await
    }

    async fn snapshot(&self) -> Result<Vec<String>, ProjectionError> {
        let mut out = Vec::new();
        for spec in TABLES {
            let table = self
                .warehouse
                .query(format!(
                    "SELECT {} FROM {}.{} ORDER BY {}",
                    spec.columns.join(", "),
                    self.schema,
                    spec.table,
                    spec.key.join(", ")
                ))
                .await?;
            for row in table.rows {
                let values = serde_json::to_string(&row)
                    .map_err(|e| ProjectionError::poison("warehouse", format!("snapshot row: {e}")))?;
                out.push(format!("{} {values}", spec.table));
            }
        }
        Ok(out)
    }
}

impl<W: Warehouse> AnalyticsFacts<W> {
    /// Every row of every table as `(bucket, agg, key, v, h)`, in the warehouse's SQL.
    fn verify_rows(&self, buckets: Buckets) -> String {
        let dialect = self.warehouse.dialect();
        // (bucket of, hash of) a text expression.
        let sql_of = |expr: &str| match dialect {
            Dialect::Postgres => (buckets.sql_postgres(expr), row_hash_sql_postgres(expr)),
            Dialect::Redshift => (
                format!("(STRTOL(SUBSTRING(MD5({expr}), 1, 8), 16) % {})", buckets.count()),
                format!("STRTOL(SUBSTRING(MD5({expr}), 1, 15), 16)"),
            ),
        };
        TABLES
            .iter()
            .map(|spec| {
                // Redshift casts no BOOLEAN to text, so those are spelled out.
                let text = |c: &str| {
                    if spec.ddl.contains(&format!("{c} BOOLEAN")) {
                        format!("CASE WHEN {c} THEN 't' WHEN NOT {c} THEN 'f' ELSE '~' END")
                    } else {
                        format!("COALESCE(CAST({c} AS VARCHAR), '~')")
                    }
                };
                let row = spec.columns.iter().map(|c| text(c)).collect::<Vec<_>>().join(" || '|' || ");
                let key = spec.key.iter().map(|c| text(c)).collect::<Vec<_>>().join(" || '#' || ");
                format!(
                    "SELECT {} AS bucket, {agg} AS agg, '{table}:' || {key} AS key, CAST({version} AS BIGINT) AS v, {} AS h FROM {schema}.{table}",
                    sql_of(spec.aggregate).0,
                    sql_of(&row).1,
                    agg = spec.aggregate,
                    table = spec.table,
                    version = spec.version,
                    schema = self.schema,
                )
            })
            .collect::<Vec<_>>()
            .join("\nUNION ALL\n")
    }
}

fn number<T: std::str::FromStr>(v: Option<&Option<String>>) -> Result<T, ProjectionError> {
    v.and_then(|v| v.as_deref())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| ProjectionError::poison("warehouse", format!("verification: not a number: {v:?}")))
}

/// Digests computed by the warehouse.
impl<W: Warehouse> Verifiable for AnalyticsFacts<W> {
    async fn digests(&self, buckets: Buckets) -> Result<Vec<BucketDigest>, ProjectionError> {
        let sql = format!(
            "SELECT bucket, COUNT(*), CAST(SUM(CAST(h AS DECIMAL(38, 0))) AS VARCHAR) FROM ({}) b GROUP BY bucket",
            self.verify_rows(buckets)
        );
        let table = self.warehouse.query(sql).await?;
        let rows = table
            .rows
            .iter()
            .map(|r| {
                let sum = r.get(2).cloned().flatten().unwrap_or_default();
                Ok((number(r.first())?, number(r.get(1))?, sum))
            })
            .collect::<Result<Vec<_>, ProjectionError>>()?;
        digests_from_sql(buckets, rows)
    }

    async fn rows(&self, buckets: Buckets, which: &[u32]) -> Result<Vec<Row>, ProjectionError> {
        if which.is_empty() {
            return Ok(Vec::new());
        }
        let list = which.iter().map(u32::to_string).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT bucket, agg, key, v, h FROM ({}) b WHERE bucket IN ({list})",
            self.verify_rows(buckets)
        );
        let table = self.warehouse.query(sql).await?;
        let rows = table
            .rows
            .iter()
            .map(|r| {
                let text = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
                Ok((
                    number(r.first())?,
                    text(1),
                    text(2),
                    r.get(3).cloned().flatten().and_then(|v| v.parse().ok()),
                    number(r.get(4))?,
                ))
            })
            .collect::<Result<Vec<_>, ProjectionError>>()?;
        Ok(rows_from_sql(rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The width of `column`'s `VARCHAR(n)` in `table`'s DDL.
    fn varchar(table: &str, column: &str) -> Option<usize> {
        let spec = TABLES.iter().find(|t| t.table == table)?;
        let declared = spec
            .ddl
            .split(',')
            .map(str::trim)
            .find(|d| d.split_whitespace().next() == Some(column))?;
        let width = declared.split("VARCHAR(").nth(1)?.split(')').next()?;
        width.parse().ok()
    }

    /// Whatever the API accepts, the warehouse holds: its text columns take the API's
    /// longest text in bytes (Redshift's `VARCHAR(n)` counts bytes) in any script.
    #[test]
    fn every_text_column_holds_what_the_api_accepts() {
        use cafe_producers::api::{MAX_CATEGORY, MAX_CHAR_BYTES, MAX_TEXT};
        assert!(varchar("dim_menu_item", "name") >= Some(MAX_TEXT * MAX_CHAR_BYTES));
        assert!(varchar("dim_menu_item", "category") >= Some(MAX_CATEGORY * MAX_CHAR_BYTES));
        let mut ids = 0;
        for spec in TABLES {
            for column in spec.columns.iter().filter(|c| c.ends_with("_id") || **c == "sku") {
                let width = varchar(spec.table, column);
                if *column == "event_id" {
                    continue; // a UUID the service makes, never the client
                }
                assert!(
                    width >= Some(cafe_events::ids::MAX_ID_LEN),
                    "{}.{column} is VARCHAR({width:?}), narrower than an id",
                    spec.table
                );
                ids += 1;
            }
        }
        assert!(ids >= 10, "only {ids} id columns found: is the DDL parsed?");
    }
}
