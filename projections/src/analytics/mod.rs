//! The `analytics` read model: append-only facts and small dimensions in a warehouse
//! (Redshift on AWS, the local `analytics` PostgreSQL database here), and the reports
//! read from them.
//!
//! The projector talks to the warehouse through one port, [`Warehouse`], with two
//! adapters: [`DataApiWarehouse`] (the Redshift Data API) and [`PgWarehouse`] (the
//! PostgreSQL wire protocol). Both run the same SQL, so the SQL is kept to the subset
//! both accept: `VARCHAR`, `BIGINT`, `INTEGER`, `TIMESTAMP` (UTC, no zone), `BOOLEAN`;
//! a temporary staging table and `MERGE` instead of `ON CONFLICT`; no arrays, no
//! `SERIAL`, no bind parameters (the Data API's are named and typed differently), hence
//! literals escaped by [`literal`].
//!
//! # Layout
//! - [`facts`]: [`AnalyticsFacts`], the projection (DDL, staging, `MERGE` by event id).
//! - [`reports`]: the report queries and the [`Table`] they print.
//! - [`pg`] and [`data_api`]: the two adapters.

pub mod data_api;
pub mod facts;
pub mod pg;
pub mod reports;

use std::future::Future;

pub use data_api::{DataApiConfigError, DataApiOptions, DataApiTarget, DataApiWarehouse};
pub use facts::AnalyticsFacts;
pub use pg::PgWarehouse;
pub use reports::Table;

use crate::error::ProjectionError;

/// How a warehouse reads string literals; the only difference in SQL the two backends
/// need us to know about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `standard_conforming_strings`: a backslash is an ordinary character.
    Postgres,
    /// Redshift keeps PostgreSQL 8.0's reading, where a backslash in a literal escapes
    /// the next character; it must be doubled to stand for itself.
    Redshift,
}

/// The warehouse port: what the analytics projector and the reports need, and nothing
/// of the SDK or driver behind it (every failure is a [`ProjectionError`], classified
/// transient or poison by the adapter that knows the store).
pub trait Warehouse: Send + Sync + 'static {
    /// How this warehouse reads literals.
    fn dialect(&self) -> Dialect;

    /// Runs `statements` in order, as one transaction where the backend can (see each
    /// adapter for the limits), in one session (temporary tables live across them).
    fn execute_batch(&self, statements: Vec<String>) -> impl Future<Output = Result<(), ProjectionError>> + Send;

    /// Runs one query and answers its column names and rows, every value as text in
    /// PostgreSQL's text format (`NULL` as `None`). Cast in SQL for a specific format.
    fn query(&self, sql: String) -> impl Future<Output = Result<Table, ProjectionError>> + Send;
}

/// `value` as an SQL string literal for `dialect`: quotes doubled (and backslashes for
/// Redshift). A NUL cannot be stored in either warehouse's `VARCHAR`, so it is refused:
/// an event carrying one is poison rather than silently truncated.
pub fn literal(value: &str, dialect: Dialect) -> Result<String, ProjectionError> {
    if value.contains('\0') {
        return Err(ProjectionError::poison(
            "warehouse",
            format!("a NUL character cannot be stored: {:?}", value.replace('\0', "\\0")),
        ));
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' if dialect == Dialect::Redshift => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(out)
}

/// Checks a schema name before it is spliced into SQL: `[a-z][a-z0-9_]*`, at most 63.
pub fn valid_schema(schema: &str) -> Result<&str, ProjectionError> {
    crate::postgres::valid_schema(schema).map_err(|e| ProjectionError::poison("warehouse", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_double_quotes_and_refuse_nul() {
        assert_eq!(literal("plain", Dialect::Postgres).unwrap(), "'plain'");
        assert_eq!(literal("O'Brien's", Dialect::Postgres).unwrap(), "'O''Brien''s'");
        assert_eq!(literal("''", Dialect::Postgres).unwrap(), "''''''");
        assert_eq!(literal("", Dialect::Postgres).unwrap(), "''");
        assert_eq!(literal("a\\b", Dialect::Postgres).unwrap(), "'a\\b'");
        assert_eq!(literal("a\\'b", Dialect::Redshift).unwrap(), "'a\\\\''b'");
        assert_eq!(literal("café ☕", Dialect::Redshift).unwrap(), "'café ☕'");
        let err = literal("bad\0byte", Dialect::Postgres).unwrap_err();
        assert!(!err.is_transient());
        assert!(err.to_string().contains("NUL"), "{err}");
    }
}
