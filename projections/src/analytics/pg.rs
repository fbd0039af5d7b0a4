//! The warehouse over the PostgreSQL wire protocol: the local `analytics` database
//! standing in for Redshift.

use deadpool_postgres::Pool;
use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::error::SqlState;

use super::{Dialect, Table, Warehouse};
use crate::error::ProjectionError;

/// A [`Warehouse`] on PostgreSQL: each batch in one real transaction.
#[derive(Debug, Clone)]
pub struct PgWarehouse {
    pool: Pool,
}

impl PgWarehouse {
    /// A pool on `url` whose `search_path` is `schema` (unqualified names land there;
    /// the analytics SQL qualifies its tables anyway, as Redshift needs).
    pub fn connect(url: &str, schema: &str) -> Result<Self, ProjectionError> {
        Self::with_connections(url, schema, 4)
    }

    /// The same with a pool of `connections`: what bounds concurrent reports, as
    /// Redshift's concurrency slots do (beyond them queries wait in the pool).
    pub fn with_connections(url: &str, schema: &str, connections: usize) -> Result<Self, ProjectionError> {
        Ok(PgWarehouse {
            pool: crate::postgres::pool(url, schema, connections)?,
        })
    }
}

/// Classifies a driver error. Beyond the crate-wide rule (data and integrity errors are
/// poison), a unique violation here is transient: the facts are keyed by event id and
/// loaded by `MERGE`, so a violation only means another worker (a predecessor not yet
/// gone after a failover) inserted the same events first; the retry finds them matched.
fn pg_error(e: tokio_postgres::Error) -> ProjectionError {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        return ProjectionError::transient("postgres", format!("concurrent load of the same rows: {e}"));
    }
    e.into()
}

impl Warehouse for PgWarehouse {
    fn dialect(&self) -> Dialect {
        Dialect::Postgres
    }

    async fn execute_batch(&self, statements: Vec<String>) -> Result<(), ProjectionError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await.map_err(pg_error)?;
        for statement in &statements {
            // The simple protocol: no prepare round trip for SQL that is never repeated.
            tx.batch_execute(statement).await.map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)
    }

    async fn query(&self, sql: String) -> Result<Table, ProjectionError> {
        let client = self.pool.get().await?;
        // The simple protocol answers every value as text, which is the port's contract.
        let messages = client.simple_query(&sql).await.map_err(pg_error)?;
        let mut table = Table::default();
        for message in messages {
            match message {
                SimpleQueryMessage::RowDescription(columns) => {
                    table.columns = columns.iter().map(|c| c.name().to_owned()).collect();
                }
                SimpleQueryMessage::Row(row) => {
                    table
                        .rows
                        .push((0..row.len()).map(|i| row.get(i).map(str::to_owned)).collect());
                }
                _ => {}
            }
        }
        Ok(table)
    }
}
