//! Idempotent provisioning of every resource the pipeline uses, from [`Names`].
//!
//! Each `ensure_*` creates a resource if missing and accepts one that exists, so `up`
//! can run it every time; tests call the same functions with their own unique names.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_kinesis::types::StreamStatus;
use aws_sdk_sqs::types::QueueAttributeName;

use crate::aws;
use crate::config::{LOOPBACK, Names, StackConfig};
use crate::error::StackError;

/// A DynamoDB key attribute: name and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Attribute name.
    pub name: &'static str,
    /// `S` or `N`.
    pub kind: KeyKind,
}

/// Scalar type of a key attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// String.
    S,
    /// Number.
    N,
}

/// A global secondary index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gsi {
    /// Index name.
    pub name: &'static str,
    /// Partition key.
    pub hash: Key,
    /// Sort key.
    pub range: Option<Key>,
}

/// A DynamoDB table as the pipeline needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// Table name.
    pub name: String,
    /// Partition key.
    pub hash: Key,
    /// Sort key.
    pub range: Option<Key>,
    /// Secondary indexes.
    pub gsis: Vec<Gsi>,
    /// Attribute holding an epoch-seconds expiry, if items expire.
    pub ttl_attribute: Option<&'static str>,
}

const fn s(name: &'static str) -> Key {
    Key { name, kind: KeyKind::S }
}
const fn n(name: &'static str) -> Key {
    Key { name, kind: KeyKind::N }
}

/// The pipeline's tables.
pub fn table_specs(names: &Names) -> Vec<TableSpec> {
    vec![
        // Event store: one item per event; a conditional put on (aggregate_id, version)
        // is the optimistic-concurrency check. `pending` is the outbox's sparse index:
        // only events Kinesis has not accepted yet carry its keys (cafe-producers'
        // `store::dynamo::PENDING_INDEX`; its tests run against this spec).
        TableSpec {
            name: names.events_table.clone(),
            hash: s("aggregate_id"),
            range: Some(n("version")),
            gsis: vec![Gsi {
                name: "pending",
                hash: s("pending_bucket"),
                range: Some(s("appended_at")),
            }],
            ttl_attribute: None,
        },
        // Consumer leases, KCL-compatible attribute names.
        TableSpec {
            name: names.leases_table.clone(),
            hash: s("leaseKey"),
            range: None,
            gsis: vec![],
            ttl_attribute: None,
        },
        // Poison records parked by consumers: pk the application, sk shard#position
        // (cafe-consumers' `parking::DynamoParkingLot`).
        TableSpec {
            name: names.parked_table.clone(),
            hash: s("application"),
            range: Some(s("position")),
            gsis: vec![],
            ttl_attribute: None,
        },
        // Orders in flight (cafe-projections' `active_orders`): finished orders stay
        // as tombstones without GSI keys until `expires_at`.
        TableSpec {
            name: names.active_orders_table.clone(),
            hash: s("order_id"),
            range: None,
            gsis: vec![Gsi {
                name: "by-customer",
                hash: s("customer_id"),
                range: Some(s("created_at")),
            }],
            ttl_attribute: Some("expires_at"),
        },
        // Replays (cafe-replay): pk the replay id, sk `meta` or `segment#NNNN`.
        TableSpec {
            name: names.replays_table.clone(),
            hash: s("replay_id"),
            range: Some(s("part")),
            gsis: vec![],
            ttl_attribute: None,
        },
        TableSpec {
            name: names.idempotency_table.clone(),
            hash: s("idempotency_key"),
            range: None,
            gsis: vec![],
            ttl_attribute: Some("expires_at"),
        },
    ]
}

/// Creates (if missing) a table shaped like the pipeline table `template` but named
/// `name`: what tests and benchmarks use for a table of their own.
pub async fn ensure_table_like(
    client: &aws_sdk_dynamodb::Client,
    names: &Names,
    template: &str,
    name: &str,
) -> Result<TableSpec, StackError> {
    let mut spec = table_specs(names)
        .into_iter()
        .find(|s| s.name == template)
        .ok_or_else(|| StackError::Config(format!("no pipeline table named {template}")))?;
    spec.name = name.to_owned();
    ensure_table(client, &spec).await?;
    Ok(spec)
}

/// Creates every resource of `cfg` that is missing.
pub async fn provision(cfg: &StackConfig) -> Result<(), StackError> {
    let sdk = aws::sdk_config(cfg).await;
    let kinesis = aws::kinesis(&sdk, cfg);
    let dynamodb = aws::dynamodb(&sdk, cfg);
    let sqs = aws::sqs(&sdk, cfg);
    let names = &cfg.names;
    let databases = [names.orders_database.as_str(), names.analytics_database.as_str()];
    let tables_and_stream = async {
        let tables = async {
            for spec in table_specs(names) {
                ensure_table(&dynamodb, &spec).await?;
            }
            Ok::<(), StackError>(())
        };
        let (created, ()) = tokio::try_join!(ensure_stream(&kinesis, &names.stream, cfg.stream_shards), tables)?;
        // The Kinesis stand-in keeps no streams across restarts unless `kinesis_durable`
        // is set, so after `down`/`up` the stream is new while DynamoDB still holds the
        // old one's leases, whose checkpoints name sequence numbers the new stream
        // refuses (every worker would back off forever). A new stream starts with an
        // empty lease table; the read models keep their rows (their writes are version
        // guarded, and the event store's versions carry on).
        if created {
            reset_table(&dynamodb, names, &names.leases_table).await?;
        }
        Ok::<(), StackError>(())
    };
    tokio::try_join!(
        tables_and_stream,
        ensure_queue_with_dlq(
            &sqs,
            &names.payments_queue,
            &names.payments_dlq,
            names.payments_max_receive_count
        ),
        ensure_databases(cfg, &databases),
        ensure_memorydb_cluster(cfg),
    )?;
    Ok(())
}

/// The MemoryDB stand-in's two shards and the hash slots each serves: the lower half
/// to the first, the upper half to the second, so keys of one batch land on both.
pub fn memorydb_shards(cfg: &StackConfig) -> [(u16, std::ops::RangeInclusive<u16>); 2] {
    [(cfg.ports.memorydb, 0..=8191), (cfg.ports.memorydb_2, 8192..=16383)]
}

/// Forms the MemoryDB stand-in's cluster: each node takes its half of the slots if it
/// holds none, the first meets the second, and both must then say `cluster_state:ok`.
/// Idempotent: a formed cluster (remembered across restarts in each node's
/// `nodes.conf`) is left as it is.
pub async fn ensure_memorydb_cluster(cfg: &StackConfig) -> Result<(), StackError> {
    let fail = |e: redis::RedisError| StackError::provision("memorydb cluster", e);
    let shards = memorydb_shards(cfg);
    let mut cons = Vec::with_capacity(shards.len());
    for (port, _) in &shards {
        let client = redis::Client::open(cfg.redis_node_url(*port)).map_err(fail)?;
        cons.push(client.get_multiplexed_async_connection().await.map_err(fail)?);
    }
    for ((_, slots), con) in shards.iter().zip(cons.iter_mut()) {
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query_async(con)
            .await
            .map_err(fail)?;
        if !own_slots(&nodes) {
            let _: () = redis::cmd("CLUSTER")
                .arg("ADDSLOTSRANGE")
                .arg(slots.start())
                .arg(slots.end())
                .query_async(con)
                .await
                .map_err(fail)?;
        }
    }
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut cons[0])
        .await
        .map_err(fail)?;
    let second = format!("{LOOPBACK}:{}@", shards[1].0);
    if !nodes.contains(&second) {
        let _: () = redis::cmd("CLUSTER")
            .arg("MEET")
            .arg(LOOPBACK)
            .arg(shards[1].0)
            .query_async(&mut cons[0])
            .await
            .map_err(fail)?;
    }
    let known = format!("cluster_known_nodes:{}", shards.len());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut formed = true;
        for con in cons.iter_mut() {
            let info: String = redis::cmd("CLUSTER").arg("INFO").query_async(con).await.map_err(fail)?;
            formed &= info.lines().any(|l| l.trim() == "cluster_state:ok") && info.lines().any(|l| l.trim() == known);
        }
        if formed {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(StackError::provision(
                "memorydb cluster",
                "the two nodes did not agree on a formed cluster within 30 s (see memorydb.log)",
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether `CLUSTER NODES` says the node answering holds any slot (its `myself` line
/// lists slot ranges after the eight fixed fields).
fn own_slots(nodes: &str) -> bool {
    nodes
        .lines()
        .find(|l| {
            l.split_whitespace()
                .nth(2)
                .is_some_and(|flags| flags.split(',').any(|f| f == "myself"))
        })
        .is_some_and(|l| l.split_whitespace().count() > 8)
}

/// Creates a stream if missing and waits until it is ACTIVE.
/// Returns whether it had to create the stream.
pub async fn ensure_stream(client: &aws_sdk_kinesis::Client, name: &str, shards: u32) -> Result<bool, StackError> {
    let shard_count = i32::try_from(shards).map_err(|e| StackError::provision(name, e))?;
    let created = match client
        .create_stream()
        .stream_name(name)
        .shard_count(shard_count)
        .send()
        .await
    {
        Ok(_) => true,
        Err(err) if err.as_service_error().is_some_and(|e| e.is_resource_in_use_exception()) => false,
        Err(err) => return Err(StackError::provision(format!("stream {name}"), format!("{err:?}"))),
    };
    wait_for_stream_active(client, name).await?;
    Ok(created)
}

/// Drops the pipeline table `name` and creates it again, empty.
async fn reset_table(client: &aws_sdk_dynamodb::Client, names: &Names, name: &str) -> Result<(), StackError> {
    if let Err(err) = client.delete_table().table_name(name).send().await {
        let missing = err
            .as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception());
        if !missing {
            return Err(StackError::provision(format!("table {name}"), format!("{err:?}")));
        }
    }
    ensure_table_like(client, names, name, name).await.map(|_| ())
}

/// Waits (up to 30 s) until the stream is ACTIVE: after creation, and after a reshard
/// (SplitShard, MergeShards, UpdateShardCount leave it UPDATING for a while).
pub async fn wait_for_stream_active(client: &aws_sdk_kinesis::Client, name: &str) -> Result<(), StackError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let summary = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .map_err(|e| StackError::provision(format!("stream {name}"), format!("{e:?}")))?;
        let status = summary.stream_description_summary().map(|d| d.stream_status().clone());
        if status == Some(StreamStatus::Active) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(StackError::provision(
                format!("stream {name}"),
                format!("still {status:?} after 30 s"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn attr(key: Key) -> Result<AttributeDefinition, StackError> {
    AttributeDefinition::builder()
        .attribute_name(key.name)
        .attribute_type(match key.kind {
            KeyKind::S => ScalarAttributeType::S,
            KeyKind::N => ScalarAttributeType::N,
        })
        .build()
        .map_err(|e| StackError::provision(key.name, e))
}

fn key_schema(hash: Key, range: Option<Key>) -> Result<Vec<KeySchemaElement>, StackError> {
    let mut keys = vec![
        KeySchemaElement::builder()
            .attribute_name(hash.name)
            .key_type(KeyType::Hash)
            .build(),
    ];
    if let Some(r) = range {
        keys.push(
            KeySchemaElement::builder()
                .attribute_name(r.name)
                .key_type(KeyType::Range)
                .build(),
        );
    }
    keys.into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| StackError::provision(hash.name, e))
}

/// Creates a table (on-demand billing) if missing.
pub async fn ensure_table(client: &aws_sdk_dynamodb::Client, spec: &TableSpec) -> Result<(), StackError> {
    let what = || format!("table {}", spec.name);
    let mut keys: Vec<Key> = [Some(spec.hash), spec.range].into_iter().flatten().collect();
    for g in &spec.gsis {
        keys.extend([Some(g.hash), g.range].into_iter().flatten());
    }
    keys.sort_by_key(|k| k.name);
    keys.dedup_by_key(|k| k.name);

    let mut req = client
        .create_table()
        .table_name(&spec.name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(spec.hash, spec.range)?))
        .set_attribute_definitions(Some(keys.into_iter().map(attr).collect::<Result<_, _>>()?));
    for g in &spec.gsis {
        req = req.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(g.name)
                .set_key_schema(Some(key_schema(g.hash, g.range)?))
                .projection(Projection::builder().projection_type(ProjectionType::All).build())
                .build()
                .map_err(|e| StackError::provision(what(), e))?,
        );
    }
    match req.send().await {
        Ok(_) => {}
        Err(e) if e.as_service_error().is_some_and(|se| se.is_resource_in_use_exception()) => {
            return add_missing_indexes(client, spec).await;
        }
        Err(e) => return Err(StackError::provision(what(), format!("{e:?}"))),
    }
    if let Some(ttl) = spec.ttl_attribute {
        client
            .update_time_to_live()
            .table_name(&spec.name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(ttl)
                    .enabled(true)
                    .build()
                    .map_err(|e| StackError::provision(what(), e))?,
            )
            .send()
            .await
            .map_err(|e| StackError::provision(what(), format!("{e:?}")))?;
    }
    Ok(())
}

/// An existing table gets the indexes a newer spec added, so `up` upgrades a developer's
/// stack in place instead of demanding `--fresh`.
async fn add_missing_indexes(client: &aws_sdk_dynamodb::Client, spec: &TableSpec) -> Result<(), StackError> {
    let what = || format!("table {}", spec.name);
    let described = client
        .describe_table()
        .table_name(&spec.name)
        .send()
        .await
        .map_err(|e| StackError::provision(what(), format!("{e:?}")))?;
    let existing: Vec<String> = described
        .table()
        .map(|t| {
            t.global_secondary_indexes()
                .iter()
                .filter_map(|g| g.index_name().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    for g in spec.gsis.iter().filter(|g| !existing.iter().any(|e| e == g.name)) {
        let attrs = [Some(g.hash), g.range]
            .into_iter()
            .flatten()
            .map(attr)
            .collect::<Result<Vec<_>, _>>()?;
        let create = aws_sdk_dynamodb::types::CreateGlobalSecondaryIndexAction::builder()
            .index_name(g.name)
            .set_key_schema(Some(key_schema(g.hash, g.range)?))
            .projection(Projection::builder().projection_type(ProjectionType::All).build())
            .build()
            .map_err(|e| StackError::provision(what(), e))?;
        client
            .update_table()
            .table_name(&spec.name)
            .set_attribute_definitions(Some(attrs))
            .global_secondary_index_updates(
                aws_sdk_dynamodb::types::GlobalSecondaryIndexUpdate::builder()
                    .create(create)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| StackError::provision(what(), format!("adding index {}: {e:?}", g.name)))?;
    }
    Ok(())
}

/// Creates a queue and its dead-letter queue, wired by a redrive policy.
/// Returns the queue URL.
pub async fn ensure_queue_with_dlq(
    client: &aws_sdk_sqs::Client,
    queue: &str,
    dlq: &str,
    max_receive_count: u32,
) -> Result<String, StackError> {
    let fail = |what: &str, e: String| StackError::provision(format!("queue {what}"), e);
    let dlq_url = client
        .create_queue()
        .queue_name(dlq)
        .send()
        .await
        .map_err(|e| fail(dlq, format!("{e:?}")))?
        .queue_url
        .ok_or_else(|| fail(dlq, "no queue URL returned".to_owned()))?;
    let dlq_arn = client
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| fail(dlq, format!("{e:?}")))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or_else(|| fail(dlq, "no QueueArn attribute".to_owned()))?;
    let url = client
        .create_queue()
        .queue_name(queue)
        .send()
        .await
        .map_err(|e| fail(queue, format!("{e:?}")))?
        .queue_url
        .ok_or_else(|| fail(queue, "no queue URL returned".to_owned()))?;
    let redrive = serde_json::json!({ "deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive_count });
    client
        .set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
        .map_err(|e| fail(queue, format!("{e:?}")))?;
    Ok(url)
}

/// Creates PostgreSQL databases that do not exist yet.
pub async fn ensure_databases(cfg: &StackConfig, databases: &[&str]) -> Result<(), StackError> {
    let fail = |e: tokio_postgres::Error| StackError::provision("postgres databases", e);
    let (client, conn) = tokio_postgres::connect(&cfg.postgres_url("postgres"), tokio_postgres::NoTls)
        .await
        .map_err(fail)?;
    let conn = tokio::spawn(conn);
    for db in databases {
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[db])
            .await
            .map_err(fail)?;
        if exists.is_none() {
            let quoted = format!("\"{}\"", db.replace('"', "\"\""));
            client
                .batch_execute(&format!("CREATE DATABASE {quoted}"))
                .await
                .map_err(fail)?;
        }
    }
    drop(client);
    let _ = conn.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::own_slots;

    #[test]
    fn a_node_holds_slots_when_its_own_line_lists_them() {
        let fresh = "e7d1 127.0.0.1:16380@26380 myself,master - 0 0 0 connected\n";
        assert!(!own_slots(fresh));
        let formed = "\
e7d1 127.0.0.1:16380@26380 myself,master - 0 0 1 connected 0-8191
a0b2 127.0.0.1:16381@26381 master - 0 1700000000000 2 connected 8192-16383
";
        assert!(own_slots(formed));
        // The other node's slots are not this node's.
        let other = "\
e7d1 127.0.0.1:16380@26380 myself,master - 0 0 1 connected
a0b2 127.0.0.1:16381@26381 master - 0 1700000000000 2 connected 8192-16383
";
        assert!(!own_slots(other));
    }
}
