//! What the Redis read models share: connecting, pipelines of Lua scripts with the
//! EVALSHA-then-load fallback, and walking a key prefix.

use redis::aio::ConnectionManager;
use redis::{FromRedisValue, Pipeline, Script, ServerErrorKind};

use crate::error::ProjectionError;

/// A connection that reconnects by itself after the server restarts or fails over; the
/// command that saw the failure still fails (transient), and the runtime retries it.
pub async fn connect(url: &str) -> Result<ConnectionManager, ProjectionError> {
    let client = redis::Client::open(url).map_err(|e| ProjectionError::poison("redis", e))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
        .set_response_timeout(Some(std::time::Duration::from_secs(10)))
        .set_number_of_retries(2);
    Ok(ConnectionManager::new_with_config(client, config).await?)
}

/// Sends `pipe` (EVALSHAs of `scripts` among its commands). A server that does not know a
/// script (restarted, flushed with SCRIPT FLUSH, failed over to a fresh replica) answers
/// NOSCRIPT: the scripts are loaded and the whole pipeline is sent again, which is
/// harmless because every script in it is a compare-and-set.
pub async fn query<T: FromRedisValue>(
    con: &mut ConnectionManager,
    pipe: &Pipeline,
    scripts: &[&Script],
) -> Result<T, ProjectionError> {
    match pipe.query_async(con).await {
        Ok(v) => Ok(v),
        Err(e) if e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) => {
            for s in scripts {
                s.load_async(con).await?;
            }
            Ok(pipe.query_async(con).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// Every key starting with `prefix` (glob characters in it escaped), sorted.
pub async fn keys(con: &mut ConnectionManager, prefix: &str) -> Result<Vec<String>, ProjectionError> {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await?;
        out.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Deletes every key starting with `prefix` (a copy of a model being dropped), in
/// chunks, with `UNLINK` so Redis frees the memory off its main thread.
pub async fn delete_prefixed(con: &mut ConnectionManager, prefix: &str) -> Result<usize, ProjectionError> {
    let keys = keys(con, prefix).await?;
    for chunk in keys.chunks(1000) {
        let _: () = redis::cmd("UNLINK").arg(chunk).query_async(con).await?;
    }
    Ok(keys.len())
}
