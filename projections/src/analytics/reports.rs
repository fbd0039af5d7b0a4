//! The analytics reports: SQL over the facts in the subset both warehouses accept
//! (`DATE_TRUNC`, window functions, `CAST(... AS DECIMAL)`), answered as a [`Table`].
//!
//! Sales count paid orders only (an order with a `paid` status fact), bucketed by the
//! hour the order was placed; a declined or cancelled-before-payment order is no sale.
//! Baskets count every placed order: what customers put together, paid or not.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Warehouse, literal, valid_schema};
use crate::error::ProjectionError;

/// A result: column names and rows of text values (`None` is SQL `NULL`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Table {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// The rows.
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    /// The table as aligned text: a header, a rule, one line per row; numbers
    /// right-aligned, `NULL` shown as `-`.
    pub fn render(&self) -> String {
        let cell = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
        let mut widths: Vec<usize> = self.columns.iter().map(|c| c.chars().count()).collect();
        let mut numeric = vec![true; self.columns.len()];
        for row in &self.rows {
            for (i, v) in row.iter().enumerate().take(widths.len()) {
                widths[i] = widths[i].max(cell(v).chars().count());
                numeric[i] &= v.as_deref().is_none_or(|s| s.parse::<f64>().is_ok());
            }
        }
        let line = |values: Vec<String>| {
            let cells: Vec<String> = values
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    if numeric[i] {
                        format!("{v:>w$}", w = widths[i])
                    } else {
                        format!("{v:<w$}", w = widths[i])
                    }
                })
                .collect();
            cells.join("  ").trim_end().to_owned()
        };
        let mut out = line(self.columns.clone());
        out.push('\n');
        out.push_str(&line(widths.iter().map(|w| "-".repeat(*w)).collect()));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row.iter().map(cell).collect()));
            out.push('\n');
        }
        out
    }

    /// The index of column `name`.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c == name)
    }
}

/// The reports, over the facts in `schema` of a warehouse.
#[derive(Debug, Clone)]
pub struct Reports<'a, W> {
    warehouse: &'a W,
    schema: &'a str,
}

/// A time window: `[from, to)`, either end open.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    /// First instant included.
    pub from: Option<DateTime<Utc>>,
    /// First instant excluded.
    pub to: Option<DateTime<Utc>>,
}

impl<'a, W: Warehouse> Reports<'a, W> {
    /// Reports over `schema` (the projector's schema).
    pub fn new(warehouse: &'a W, schema: &'a str) -> Result<Self, ProjectionError> {
        valid_schema(schema)?;
        Ok(Reports { warehouse, schema })
    }

    /// Reports over a schema already checked (the projector's).
    pub(crate) fn checked(warehouse: &'a W, schema: &'a str) -> Self {
        Reports { warehouse, schema }
    }

    /// `AND occurred_at >= ... AND occurred_at < ...` for `alias`, as literals.
    fn window(&self, alias: &str, w: Window) -> Result<String, ProjectionError> {
        let mut sql = String::new();
        for (op, at) in [(">=", w.from), ("<", w.to)] {
            if let Some(at) = at {
                let text = at.naive_utc().format("%Y-%m-%d %H:%M:%S%.6f").to_string();
                sql.push_str(&format!(
                    " AND {alias}.occurred_at {op} CAST({} AS TIMESTAMP)",
                    literal(&text, self.warehouse.dialect())?
                ));
            }
        }
        Ok(sql)
    }

    /// One order's total as its facts add up (None until its lines are loaded): what the
    /// smoke run compares with the Aurora total.
    pub async fn order_total_cents(&self, order_id: &str) -> Result<Option<i64>, ProjectionError> {
        let sql = format!(
            "SELECT CAST(SUM(line_total_cents) AS VARCHAR) FROM {}.fact_order_lines WHERE order_id = {}",
            self.schema,
            literal(order_id, self.warehouse.dialect())?
        );
        let table = self.warehouse.query(sql).await?;
        Ok(table
            .rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .and_then(|v| v.parse().ok()))
    }

    /// Paid sales per store and hour: orders, units and sales in cents.
    pub async fn sales_by_store_hour(&self, w: Window) -> Result<Table, ProjectionError> {
        let s = self.schema;
        let sql = format!(
            "SELECT l.store_id, DATE_TRUNC('hour', l.occurred_at) AS hour_start, COUNT(DISTINCT l.order_id) AS orders,
                    SUM(l.quantity) AS units, SUM(l.line_total_cents) AS sales_cents
               FROM {s}.fact_order_lines l
              WHERE l.order_id IN (SELECT order_id FROM {s}.fact_order_status WHERE status = 'paid'){}
              GROUP BY l.store_id, DATE_TRUNC('hour', l.occurred_at)
              ORDER BY l.store_id, hour_start",
            self.window("l", w)?
        );
        self.warehouse.query(sql).await
    }

    /// The `limit` best-selling items by units (paid orders), with their sales.
    pub async fn top_items(&self, w: Window, limit: u32) -> Result<Table, ProjectionError> {
        let s = self.schema;
        let sql = format!(
            "SELECT l.item_id, MAX(d.name) AS name, SUM(l.quantity) AS units, SUM(l.line_total_cents) AS sales_cents,
                    COUNT(DISTINCT l.order_id) AS orders
               FROM {s}.fact_order_lines l LEFT JOIN {s}.dim_menu_item d ON d.item_id = l.item_id
              WHERE l.order_id IN (SELECT order_id FROM {s}.fact_order_status WHERE status = 'paid'){}
              GROUP BY l.item_id
              ORDER BY units DESC, l.item_id
              LIMIT {limit}",
            self.window("l", w)?
        );
        self.warehouse.query(sql).await
    }

    /// Customers and their points per current tier (a customer's tier is their last
    /// tier change, `green` before any; their balance is the last ledger entry's).
    pub async fn loyalty_tiers(&self) -> Result<Table, ProjectionError> {
        let s = self.schema;
        let sql = format!(
            "WITH balances AS (
                 SELECT customer_id, balance_after,
                        ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY occurred_at DESC, event_id DESC) AS rn
                   FROM {s}.fact_loyalty WHERE kind IN ('earned', 'redeemed')
             ), tiers AS (
                 SELECT customer_id, tier,
                        ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY occurred_at DESC, event_id DESC) AS rn
                   FROM {s}.fact_loyalty WHERE kind = 'tier_changed'
             ), customers AS (
                 SELECT DISTINCT customer_id FROM {s}.fact_loyalty
             ), standing AS (
                 SELECT c.customer_id, COALESCE(t.tier, 'green') AS tier, COALESCE(b.balance_after, 0) AS balance,
                        CASE COALESCE(t.tier, 'green') WHEN 'green' THEN 1 WHEN 'gold' THEN 2 ELSE 3 END AS tier_rank
                   FROM customers c
                   LEFT JOIN balances b ON b.customer_id = c.customer_id AND b.rn = 1
                   LEFT JOIN tiers t ON t.customer_id = c.customer_id AND t.rn = 1
             )
             SELECT tier, COUNT(*) AS customers, SUM(balance) AS points
               FROM standing GROUP BY tier, tier_rank ORDER BY tier_rank"
        );
        self.warehouse.query(sql).await
    }

    /// Basket size per store over every placed order: orders, lines and units per
    /// order, and the average order value in cents.
    pub async fn basket_size(&self, w: Window) -> Result<Table, ProjectionError> {
        let s = self.schema;
        let sql = format!(
            "SELECT l.store_id, COUNT(DISTINCT l.order_id) AS orders,
                    CAST(COUNT(*) * 1.0 / COUNT(DISTINCT l.order_id) AS DECIMAL(12,2)) AS lines_per_order,
                    CAST(SUM(l.quantity) * 1.0 / COUNT(DISTINCT l.order_id) AS DECIMAL(12,2)) AS units_per_order,
                    CAST(SUM(l.line_total_cents) * 1.0 / COUNT(DISTINCT l.order_id) AS DECIMAL(14,2)) AS avg_order_cents
               FROM {s}.fact_order_lines l
              WHERE 1 = 1{}
              GROUP BY l.store_id
              ORDER BY l.store_id",
            self.window("l", w)?
        );
        self.warehouse.query(sql).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_render_aligned_with_numbers_to_the_right() {
        let t = Table {
            columns: vec!["store_id".into(), "sales_cents".into()],
            rows: vec![
                vec![Some("store-000".into()), Some("12345".into())],
                vec![Some("s1".into()), None],
            ],
        };
        assert_eq!(
            t.render(),
            "store_id   sales_cents\n---------  -----------\nstore-000        12345\ns1                   -\n"
        );
        assert_eq!(serde_json::to_value(&t).unwrap()["rows"][1][1], serde_json::Value::Null);
    }
}
