//! What the Redis read models share: connecting (to one server or to a cluster),
//! running Lua scripts with the EVALSHA-then-load fallback, and walking a key prefix.
//!
//! MemoryDB is always a cluster, and ElastiCache may be one: a cluster endpoint hands
//! a plain client any node, which answers `MOVED` for every key it does not serve. So
//! [`connect`] asks the server whether it runs in cluster mode and takes the cluster
//! client when it does. That client refuses a pipeline whose keys span hash slots, and a
//! prefix scan must visit every primary; the helpers here hide both differences.

use std::collections::BTreeMap;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, Pipeline, RedisFuture, Script, ScriptInvocation, ServerErrorKind, Value};

use crate::error::ProjectionError;

const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
const RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
const RETRIES: u32 = 2;

/// A connection to one Redis server or to a Redis cluster; cheap to clone, and both
/// reconnect by themselves after a restart or failover (the command that saw the
/// failure still fails, as transient, and the runtime retries it).
#[derive(Clone)]
pub enum RedisConnection {
    /// One server (ElastiCache with cluster mode off, the local cache).
    Single(ConnectionManager),
    /// A cluster (MemoryDB, ElastiCache with cluster mode on, the local MemoryDB
    /// stand-in): commands go to the node serving their key's slot.
    Cluster(ClusterConnection),
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConnection::Single(c) => c.req_packed_command(cmd),
            RedisConnection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConnection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConnection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConnection::Single(c) => c.get_db(),
            RedisConnection::Cluster(c) => c.get_db(),
        }
    }
}

/// Connects to `url`: first as to one server, to ask `INFO cluster`; a node in cluster
/// mode is then used as the seed of a cluster client (user, password and TLS from the
/// URL apply to every node it finds).
pub async fn connect(url: &str) -> Result<RedisConnection, ProjectionError> {
    let client = redis::Client::open(url).map_err(|e| ProjectionError::poison("redis", e))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(RETRIES as usize);
    let mut single = ConnectionManager::new_with_config(client, config).await?;
    let info: String = redis::cmd("INFO").arg("cluster").query_async(&mut single).await?;
    if !cluster_enabled(&info) {
        return Ok(RedisConnection::Single(single));
    }
    let cluster = redis::cluster::ClusterClientBuilder::new([url])
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .retries(RETRIES)
        .build()
        .map_err(|e| ProjectionError::poison("redis", e))?;
    Ok(RedisConnection::Cluster(cluster.get_async_connection().await?))
}

/// Whether `INFO cluster` says the server runs in cluster mode.
fn cluster_enabled(info: &str) -> bool {
    info.lines().any(|l| l.trim() == "cluster_enabled:1")
}

/// Runs script invocations, each with one key, in `stages`: the stages one after the
/// other, the invocations of a stage in any order. One server gets everything in one
/// pipeline (one round trip, in order); a cluster gets a stage's invocations side by
/// side, each routed to its key's node (they are multiplexed on each node's connection,
/// so a stage still costs about one round trip). A server that does not know a script
/// (restarted, flushed with SCRIPT FLUSH, failed over to a fresh replica) answers
/// NOSCRIPT: the scripts are loaded and the calls sent again, which is harmless because
/// every script of ours is a compare-and-set.
pub async fn run_scripts(
    con: &RedisConnection,
    stages: &[&[ScriptInvocation<'_>]],
    scripts: &[&Script],
) -> Result<(), ProjectionError> {
    match con {
        RedisConnection::Single(single) => {
            let mut pipe = redis::pipe();
            for inv in stages.iter().flat_map(|s| s.iter()) {
                pipe.invoke_script(inv).ignore();
            }
            let mut single = single.clone();
            match pipe.query_async::<()>(&mut single).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == redis::ErrorKind::Server(ServerErrorKind::NoScript) => {
                    for s in scripts {
                        s.load_async(&mut single).await?;
                    }
                    Ok(pipe.query_async(&mut single).await?)
                }
                Err(e) => Err(e.into()),
            }
        }
        RedisConnection::Cluster(cluster) => {
            for stage in stages {
                // `invoke_async` loads its script (on every node) on NOSCRIPT by itself.
                let calls = stage.iter().map(|inv| {
                    let mut c = cluster.clone();
                    async move { inv.invoke_async::<()>(&mut c).await }
                });
                futures::future::try_join_all(calls).await?;
            }
            Ok(())
        }
    }
}

/// Every key starting with `prefix` (glob characters in it escaped), sorted: a SCAN of
/// the server, or of every primary of a cluster.
pub async fn keys(con: &RedisConnection, prefix: &str) -> Result<Vec<String>, ProjectionError> {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    // One server is scanned as a whole; a cluster's primaries one by one, each reached
    // through a slot it serves.
    let slots = match con {
        RedisConnection::Single(_) => vec![None],
        RedisConnection::Cluster(cluster) => one_slot_per_primary(&mut cluster.clone())
            .await?
            .into_iter()
            .map(Some)
            .collect(),
    };
    let mut out = Vec::new();
    for slot in slots {
        scan(con, slot, &pattern, &mut out).await?;
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// SCANs one server, or the primary serving `slot` of a cluster, to the end.
async fn scan(
    con: &RedisConnection,
    slot: Option<u16>,
    pattern: &str,
    out: &mut Vec<String>,
) -> Result<(), ProjectionError> {
    let mut cursor: u64 = 0;
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
        let reply: Value = match (con, slot) {
            (RedisConnection::Cluster(cluster), Some(slot)) => {
                let node = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
                cluster
                    .clone()
                    .route_command(cmd, RoutingInfo::SingleNode(node))
                    .await?
            }
            (any, _) => cmd.query_async(&mut any.clone()).await?,
        };
        let (next, batch): (u64, Vec<String>) = redis::from_redis_value(reply).map_err(redis::RedisError::from)?;
        out.extend(batch);
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

/// The first slot of each primary (`CLUSTER SLOTS`: start, end, then the primary as
/// host, port, id): routing a command to that slot reaches that primary.
async fn one_slot_per_primary(cluster: &mut ClusterConnection) -> Result<Vec<u16>, ProjectionError> {
    let ranges: Vec<Value> = redis::cmd("CLUSTER").arg("SLOTS").query_async(cluster).await?;
    let mut first: BTreeMap<String, u16> = BTreeMap::new();
    for range in ranges {
        let Value::Array(fields) = range else { continue };
        let (Some(start), Some(Value::Array(primary))) = (fields.first(), fields.get(2)) else {
            continue;
        };
        let start: u16 = redis::from_redis_value_ref(start).map_err(redis::RedisError::from)?;
        // Older servers list no id: host and port name the primary then.
        let id = match primary.get(2) {
            Some(id) => redis::from_redis_value_ref::<String>(id).map_err(redis::RedisError::from)?,
            None => format!("{primary:?}"),
        };
        let slot = first.entry(id).or_insert(start);
        *slot = (*slot).min(start);
    }
    Ok(first.into_values().collect())
}

/// Deletes every key starting with `prefix` (a copy of a model being dropped), in
/// chunks, with `UNLINK` so Redis frees the memory off its main thread (a cluster
/// client splits each chunk by slot).
pub async fn delete_prefixed(con: &RedisConnection, prefix: &str) -> Result<usize, ProjectionError> {
    let keys = keys(con, prefix).await?;
    let mut con = con.clone();
    for chunk in keys.chunks(1000) {
        let _: () = redis::cmd("UNLINK").arg(chunk).query_async(&mut con).await?;
    }
    Ok(keys.len())
}

#[cfg(test)]
mod tests {
    use super::cluster_enabled;

    #[test]
    fn cluster_mode_is_read_from_info_cluster() {
        assert!(cluster_enabled("# Cluster\r\ncluster_enabled:1\r\n"));
        assert!(!cluster_enabled("# Cluster\r\ncluster_enabled:0\r\n"));
        assert!(!cluster_enabled(""));
    }
}
