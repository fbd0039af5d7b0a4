//! PostgreSQL plumbing shared by the Aurora read model and the warehouse's PostgreSQL
//! backend: pools confined to one schema, and the migration runner.

pub mod orders;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::error::ProjectionError;

/// A migration: its number, name and SQL, embedded in the binary.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Applied in increasing order; never renumbered.
    pub version: i32,
    /// File name, for the record.
    pub name: &'static str,
    /// The statements.
    pub sql: &'static str,
}

/// Checks a schema name: it is spliced into SQL, so only `[a-z0-9_]`, starting with a
/// letter, is accepted.
pub fn valid_schema(schema: &str) -> Result<&str, ProjectionError> {
    let ok = schema.len() <= 63
        && schema.starts_with(|c: char| c.is_ascii_lowercase())
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(schema)
    } else {
        Err(ProjectionError::poison(
            "postgres",
            format!("schema name {schema:?} must match [a-z][a-z0-9_]*"),
        ))
    }
}

/// TLS for every connection, verified against the system's roots (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` are honoured; Aurora's certificates chain to the Amazon RDS root, which
/// the image must trust). The connection string's `sslmode` decides: `prefer` (the
/// default) falls back to plain text where the server has no TLS, as the local stack's
/// has not; `require` refuses it, as against Aurora.
fn tls() -> Result<MakeRustlsConnect, ProjectionError> {
    static CONFIG: OnceLock<Result<rustls::ClientConfig, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            tracing::warn!(errors = ?found.errors, "no trusted root certificates found: TLS to PostgreSQL will fail");
        }
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map(|b| b.with_root_certificates(roots).with_no_client_auth())
            .map_err(|e| e.to_string())
    });
    match config {
        Ok(config) => Ok(MakeRustlsConnect::new(config.clone())),
        Err(e) => Err(ProjectionError::poison("postgres", format!("TLS: {e}"))),
    }
}

/// A pool whose connections see `schema` first (`search_path`), so one database can
/// hold many isolated copies of a read model (tests, replay's shadow models).
pub fn pool(url: &str, schema: &str, size: usize) -> Result<Pool, ProjectionError> {
    let schema = valid_schema(schema)?;
    let mut cfg: tokio_postgres::Config = url
        .parse()
        .map_err(|e| ProjectionError::poison("postgres", format!("connection string: {e}")))?;
    cfg.options(format!("-c search_path={schema}"));
    cfg.connect_timeout(Duration::from_secs(5));
    let manager = Manager::from_config(
        cfg,
        tls()?,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size.max(1))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .create_timeout(Some(Duration::from_secs(5)))
        .wait_timeout(Some(Duration::from_secs(10)))
        .build()
        .map_err(|e| ProjectionError::poison("postgres", format!("pool: {e}")))
}

/// Creates `schema` if needed and applies the migrations it has not seen, each in its
/// own transaction, under an advisory lock so concurrent starters apply each once.
pub async fn migrate(pool: &Pool, schema: &str, migrations: &[Migration]) -> Result<(), ProjectionError> {
    let schema = valid_schema(schema)?;
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    tx.batch_execute(&format!(
        "SELECT pg_advisory_xact_lock(hashtext('cafe-migrate-{schema}'));
         CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
             version INTEGER PRIMARY KEY,
             name TEXT NOT NULL,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let applied: Vec<i32> = tx
        .query(&format!("SELECT version FROM {schema}.schema_migrations"), &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for m in migrations.iter().filter(|m| !applied.contains(&m.version)) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            &format!("INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)"),
            &[&m.version, &m.name],
        )
        .await?;
        tracing::info!(schema, version = m.version, name = m.name, "migration applied");
    }
    tx.commit().await?;
    Ok(())
}

/// Every row of `table` as JSON text, ordered by `order_by`: the canonical dump the
/// conformance suite and replay verification compare.
pub async fn dump(pool: &Pool, table: &str, order_by: &str) -> Result<Vec<String>, ProjectionError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            &format!("SELECT row_to_json(t)::text FROM {table} t ORDER BY {order_by}"),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| format!("{table} {}", r.get::<_, String>(0)))
        .collect())
}
