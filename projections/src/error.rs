//! The one error type of every projector and query port.

/// Why a projection write or a read-model query failed, and whether a retry may help.
///
/// The runtime acts on the distinction: a transient failure holds the shard and offers
/// the batch again after a backoff; a poison one is isolated to the event that causes it
/// and parked, so one bad event never stalls a shard.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The store is unreachable, restarting, throttling or timed out.
    #[error("{store} unavailable: {message}")]
    Transient {
        /// Which store (`postgres`, `dynamodb`, `redis`, `mongodb`, `warehouse`, `redshift`).
        store: &'static str,
        /// What it said.
        message: String,
    },
    /// The store refused the data itself (a constraint, an out-of-range value): trying
    /// again cannot succeed.
    #[error("{store} refused the write: {message}")]
    Poison {
        /// Which store.
        store: &'static str,
        /// What it said.
        message: String,
    },
}

impl ProjectionError {
    /// A failure that may pass.
    pub fn transient(store: &'static str, message: impl std::fmt::Display) -> Self {
        ProjectionError::Transient {
            store,
            message: message.to_string(),
        }
    }

    /// A failure that cannot pass.
    pub fn poison(store: &'static str, message: impl std::fmt::Display) -> Self {
        ProjectionError::Poison {
            store,
            message: message.to_string(),
        }
    }

    /// Whether offering the same events again may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ProjectionError::Transient { .. })
    }
}

impl From<tokio_postgres::Error> for ProjectionError {
    fn from(e: tokio_postgres::Error) -> Self {
        // Data exceptions (22) and integrity violations (23) are about the rows; every
        // other failure (connection, shutdown, serialization, resources) may pass.
        let poison = e
            .code()
            .is_some_and(|c| c.code().starts_with("22") || c.code().starts_with("23"));
        let message = match e.as_db_error() {
            Some(db) => format!("{}: {}", db.code().code(), db.message()),
            None => e.to_string(),
        };
        if poison {
            ProjectionError::poison("postgres", message)
        } else {
            ProjectionError::transient("postgres", message)
        }
    }
}

impl From<deadpool_postgres::PoolError> for ProjectionError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            other => ProjectionError::transient("postgres", other),
        }
    }
}

impl From<redis::RedisError> for ProjectionError {
    fn from(e: redis::RedisError) -> Self {
        if redis_refuses(&e) {
            ProjectionError::poison("redis", e)
        } else {
            ProjectionError::transient("redis", e)
        }
    }
}

/// Whether Redis refused the data or our script rather than being unavailable. A Lua
/// runtime error (`ERR user_script:…`, `ERR Error running script`), a key of the wrong type or a reply of the wrong shape repeats on every retry;
/// a plain `ERR` without a script in it (too many clients), `BUSY`, `LOADING`, `OOM` or a
/// dropped connection may pass.
fn redis_refuses(e: &redis::RedisError) -> bool {
    use redis::{ErrorKind, ServerErrorKind};
    let detail = e.detail().unwrap_or_default();
    match e.kind() {
        ErrorKind::UnexpectedReturnType => true,
        ErrorKind::Server(ServerErrorKind::ResponseError) => {
            detail.contains("user_script") || detail.contains("running script") || detail.contains("@user_function")
        }
        ErrorKind::Extension => e.code() == Some("WRONGTYPE"),
        _ => false,
    }
}

/// Server error codes that name a passing condition: network trouble, a primary stepping
/// down or a node restarting, a time limit, DocumentDB throttling.
const MONGO_TRANSIENT_CODES: &[i32] = &[
    6, 7, 50, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436, 16500,
];

impl From<mongodb::error::Error> for ProjectionError {
    fn from(e: mongodb::error::Error) -> Self {
        use mongodb::error::{ErrorKind, WriteFailure};
        // Reaching the cluster (I/O, pool, server selection, DNS, auth while credentials
        // rotate) may pass; so may anything the driver itself labels retryable. What the
        // server says about the data or the command (a write error, a bad document, an
        // unsupported operator) repeats on every retry: poison, so the event is parked.
        let retryable = e.contains_label("RetryableWriteError") || e.contains_label("TransientTransactionError");
        let transient = retryable
            || match e.kind.as_ref() {
                ErrorKind::Io(_)
                | ErrorKind::ConnectionPoolCleared { .. }
                | ErrorKind::ServerSelection { .. }
                | ErrorKind::DnsResolve { .. }
                | ErrorKind::Authentication { .. }
                | ErrorKind::Shutdown
                | ErrorKind::Internal { .. } => true,
                ErrorKind::Command(c) => MONGO_TRANSIENT_CODES.contains(&c.code),
                ErrorKind::Write(WriteFailure::WriteConcernError(_)) => true,
                _ => false,
            };
        if transient {
            ProjectionError::transient("mongodb", e)
        } else {
            ProjectionError::poison("mongodb", e)
        }
    }
}
