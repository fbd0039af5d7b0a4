//! The warehouse over the Redshift Data API: HTTPS calls instead of a connection, so
//! Lambda-hosted projectors need no VPC plumbing or connection pool.
//!
//! Statements are asynchronous there: a call answers a statement id, and
//! `DescribeStatement` is polled (with backoff) until it is `FINISHED`, `FAILED` or
//! `ABORTED`; results are read page by page with `GetStatementResult`.

use std::time::{Duration, Instant};

use aws_sdk_redshiftdata::Client;
use aws_sdk_redshiftdata::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_redshiftdata::types::{Field, StatusString};
use cafe_settings::vars;

use super::{Dialect, Table, Warehouse};
use crate::error::ProjectionError;

/// Statements one `BatchExecuteStatement` accepts.
pub const MAX_STATEMENTS_PER_CALL: usize = 40;
/// SQL text one call may carry (the Data API's 100 KB query limit, applied to the sum
/// of a call's statements so no reading of the limit can refuse it).
pub const MAX_SQL_BYTES_PER_CALL: usize = 100 * 1024;

/// Where the statements run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataApiTarget {
    /// Redshift Serverless.
    Workgroup(String),
    /// A provisioned cluster; `db_user` for temporary credentials when no secret is set.
    Cluster {
        /// The cluster identifier.
        identifier: String,
        /// Database user (temporary-credentials authentication).
        db_user: Option<String>,
    },
}

/// How to reach the warehouse and how patiently to wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataApiOptions {
    /// Workgroup or cluster.
    pub target: DataApiTarget,
    /// The database.
    pub database: String,
    /// Secrets Manager secret with the credentials (else IAM / `db_user`).
    pub secret_arn: Option<String>,
    /// First wait between two `DescribeStatement` calls; doubles up to `poll_max`.
    pub poll_initial: Duration,
    /// Longest wait between two `DescribeStatement` calls.
    pub poll_max: Duration,
    /// A statement still running after this is reported as a transient failure (the
    /// batch is retried; the statement itself may still finish, which is harmless as
    /// every load is idempotent).
    pub timeout: Duration,
}

/// Redshift settings that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DataApiConfigError {
    /// A variable the Data API needs.
    #[error("environment variable {0} is not set")]
    Missing(&'static str),
    /// Both Redshift targets.
    #[error("set exactly one of CAFE_REDSHIFT_WORKGROUP (Serverless) and CAFE_REDSHIFT_CLUSTER")]
    Target,
}

impl DataApiOptions {
    /// The Data API settings read through `get` (the process environment), the one
    /// reading of them that the projector Lambda and the `cafe` tools share, so the
    /// warehouse backend is chosen by configuration:
    /// `CAFE_REDSHIFT_WORKGROUP` (Serverless) or `CAFE_REDSHIFT_CLUSTER` (with optional
    /// `CAFE_REDSHIFT_DB_USER` for temporary credentials), `CAFE_REDSHIFT_DATABASE`,
    /// optional `CAFE_REDSHIFT_SECRET_ARN`. `None` when neither target is set: the
    /// warehouse is then reached over the PostgreSQL wire.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<DataApiOptions>, DataApiConfigError> {
        let get = |k: &str| get(k).filter(|v| !v.is_empty());
        let target = match (get(vars::REDSHIFT_WORKGROUP), get(vars::REDSHIFT_CLUSTER)) {
            (None, None) => return Ok(None),
            (Some(workgroup), None) => DataApiTarget::Workgroup(workgroup),
            (None, Some(identifier)) => DataApiTarget::Cluster {
                identifier,
                db_user: get(vars::REDSHIFT_DB_USER),
            },
            (Some(_), Some(_)) => return Err(DataApiConfigError::Target),
        };
        let database = get(vars::REDSHIFT_DATABASE).ok_or(DataApiConfigError::Missing(vars::REDSHIFT_DATABASE))?;
        let mut options = DataApiOptions::new(target, database);
        options.secret_arn = get(vars::REDSHIFT_SECRET_ARN);
        Ok(Some(options))
    }

    /// Defaults for `target` and `database`: polls from 50 ms to 2 s, gives up after 10
    /// minutes.
    pub fn new(target: DataApiTarget, database: impl Into<String>) -> Self {
        DataApiOptions {
            target,
            database: database.into(),
            secret_arn: None,
            poll_initial: Duration::from_millis(50),
            poll_max: Duration::from_secs(2),
            timeout: Duration::from_secs(600),
        }
    }
}

/// A [`Warehouse`] on the Redshift Data API.
///
/// Atomicity: a batch that fits one `BatchExecuteStatement` (at most
/// [`MAX_STATEMENTS_PER_CALL`] statements and [`MAX_SQL_BYTES_PER_CALL`] bytes) is one
/// transaction. A larger batch is split into several calls sharing one Data API session
/// (so temporary staging tables live across them), and each call commits on its own: a
/// failure can leave the first calls' rows in place. That is safe only because every
/// load this crate sends is idempotent (`MERGE` by event id, version-guarded
/// dimensions), so the retry of the whole batch converges; do not send this adapter
/// statements without that property.
#[derive(Debug, Clone)]
pub struct DataApiWarehouse {
    client: Client,
    options: DataApiOptions,
}

// The two request builders are distinct types with the same target methods.
macro_rules! targeted {
    ($req:expr, $o:expr) => {{
        let req = $req.database(&$o.database).set_secret_arn($o.secret_arn.clone());
        match &$o.target {
            DataApiTarget::Workgroup(w) => req.workgroup_name(w),
            DataApiTarget::Cluster { identifier, db_user } => {
                req.cluster_identifier(identifier).set_db_user(db_user.clone())
            }
        }
    }};
}

impl DataApiWarehouse {
    /// A warehouse on `client` with `options`.
    pub fn new(client: Client, options: DataApiOptions) -> Self {
        DataApiWarehouse { client, options }
    }

    /// Polls `DescribeStatement` until the statement ends; answers whether it has a
    /// result set.
    async fn wait(&self, id: &str) -> Result<bool, ProjectionError> {
        let started = Instant::now();
        let mut delay = self.options.poll_initial;
        loop {
            let d = self
                .client
                .describe_statement()
                .id(id)
                .send()
                .await
                .map_err(sdk_error)?;
            match d.status() {
                Some(StatusString::Finished) => return Ok(d.has_result_set().unwrap_or(false)),
                Some(StatusString::Failed) => return Err(failed(id, d.error().unwrap_or("no message"))),
                Some(StatusString::Aborted) => {
                    return Err(ProjectionError::transient(
                        "redshift",
                        format!("statement {id} aborted"),
                    ));
                }
                _ => {}
            }
            if started.elapsed() >= self.options.timeout {
                return Err(ProjectionError::transient(
                    "redshift",
                    format!("statement {id} still running after {:?}", self.options.timeout),
                ));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.options.poll_max);
        }
    }
}

/// Packs statements into calls within the Data API's limits, in order.
pub fn split_calls(statements: Vec<String>) -> Result<Vec<Vec<String>>, ProjectionError> {
    let mut calls: Vec<Vec<String>> = Vec::new();
    let mut bytes = 0;
    for s in statements {
        if s.len() > MAX_SQL_BYTES_PER_CALL {
            return Err(ProjectionError::poison(
                "redshift",
                format!("a statement of {} bytes exceeds the Data API's limit", s.len()),
            ));
        }
        match calls.last_mut() {
            Some(call) if call.len() < MAX_STATEMENTS_PER_CALL && bytes + s.len() <= MAX_SQL_BYTES_PER_CALL => {
                bytes += s.len();
                call.push(s);
            }
            _ => {
                bytes = s.len();
                calls.push(vec![s]);
            }
        }
    }
    Ok(calls)
}

/// A `FAILED` statement: errors about the SQL or the data repeat on every retry
/// (poison); anything else (a serialization conflict, a restart, a disk-full) may pass.
fn failed(id: &str, message: &str) -> ProjectionError {
    const POISON: &[&str] = &[
        "syntax error",
        "invalid input",
        "violates",
        "value too long",
        "overflow",
        "out of range",
        "does not exist",
        "invalid byte sequence",
        "division by zero",
        "cannot affect a row a second time",
        "duplicate",
    ];
    let lower = message.to_lowercase();
    let text = format!("statement {id} failed: {message}");
    if POISON.iter().any(|p| lower.contains(p)) {
        ProjectionError::poison("redshift", text)
    } else {
        ProjectionError::transient("redshift", text)
    }
}

/// An SDK failure: a request the API validates as wrong is poison; throttling, limits on
/// active statements, network and service errors may pass.
fn sdk_error<E, R>(e: SdkError<E, R>) -> ProjectionError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let validation = e.code() == Some("ValidationException");
    let message = DisplayErrorContext(&e).to_string();
    if validation {
        ProjectionError::poison("redshift", message)
    } else {
        ProjectionError::transient("redshift", message)
    }
}

/// A result field as text in PostgreSQL's text format, so both adapters answer alike.
fn field_text(field: &Field) -> Result<Option<String>, ProjectionError> {
    Ok(match field {
        Field::IsNull(true) => None,
        Field::IsNull(false) => Some(String::new()),
        Field::StringValue(s) => Some(s.clone()),
        Field::LongValue(n) => Some(n.to_string()),
        Field::DoubleValue(x) => Some(x.to_string()),
        Field::BooleanValue(b) => Some(if *b { "t" } else { "f" }.to_owned()),
        Field::BlobValue(b) => Some(format!(
            "\\x{}",
            b.as_ref().iter().map(|x| format!("{x:02x}")).collect::<String>()
        )),
        other => {
            return Err(ProjectionError::poison(
                "redshift",
                format!("a result field of a type this build does not know: {other:?}"),
            ));
        }
    })
}

impl Warehouse for DataApiWarehouse {
    fn dialect(&self) -> Dialect {
        Dialect::Redshift
    }

    async fn execute_batch(&self, statements: Vec<String>) -> Result<(), ProjectionError> {
        let calls = split_calls(statements)?;
        let count = calls.len();
        let mut session: Option<String> = None;
        for (n, sqls) in calls.into_iter().enumerate() {
            let more = n + 1 < count;
            let req = self.client.batch_execute_statement().set_sqls(Some(sqls));
            let req = match &session {
                // A session carries its own database and credentials.
                Some(id) => req.session_id(id),
                None if more => targeted!(req, self.options).session_keep_alive_seconds(120),
                None => targeted!(req, self.options),
            };
            let out = req.send().await.map_err(sdk_error)?;
            if more && session.is_none() {
                session = Some(out.session_id().map(str::to_owned).ok_or_else(|| {
                    ProjectionError::transient("redshift", "no session id for a batch split over several calls")
                })?);
            }
            let id = out
                .id()
                .ok_or_else(|| ProjectionError::transient("redshift", "BatchExecuteStatement answered no id"))?;
            self.wait(id).await?;
        }
        Ok(())
    }

    async fn query(&self, sql: String) -> Result<Table, ProjectionError> {
        let out = targeted!(self.client.execute_statement().sql(sql), self.options)
            .send()
            .await
            .map_err(sdk_error)?;
        let id = out
            .id()
            .ok_or_else(|| ProjectionError::transient("redshift", "ExecuteStatement answered no id"))?;
        let mut table = Table::default();
        if !self.wait(id).await? {
            return Ok(table);
        }
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .get_statement_result()
                .id(id)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(sdk_error)?;
            if table.columns.is_empty() {
                table.columns = page
                    .column_metadata()
                    .iter()
                    .map(|c| c.name().unwrap_or_default().to_owned())
                    .collect();
            }
            for record in page.records() {
                table
                    .rows
                    .push(record.iter().map(field_text).collect::<Result<_, _>>()?);
            }
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => return Ok(table),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_at_forty_statements_and_at_the_size_limit_in_order() {
        let small: Vec<String> = (0..85).map(|i| format!("SELECT {i}")).collect();
        let calls = split_calls(small.clone()).unwrap();
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [40, 40, 5]);
        assert_eq!(calls.concat(), small);

        let big = "x".repeat(40 * 1024);
        let calls = split_calls(vec![big.clone(), big.clone(), big.clone(), "SELECT 1".into()]).unwrap();
        assert_eq!(calls.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2]);

        assert!(split_calls(vec!["x".repeat(MAX_SQL_BYTES_PER_CALL + 1)]).is_err());
        assert!(split_calls(Vec::new()).unwrap().is_empty());
    }

    #[test]
    fn failures_about_the_sql_or_data_are_poison_others_transient() {
        assert!(!failed("1", "ERROR: syntax error at or near \"MERGEE\"").is_transient());
        assert!(!failed("1", "ERROR: value too long for type character varying(256)").is_transient());
        assert!(failed("1", "ERROR: 1023 Serializable isolation violation on table").is_transient());
        assert!(failed("1", "Connection reset").to_string().contains("Connection reset"));
    }
}
