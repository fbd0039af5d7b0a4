//! The Rust emulators, embedded as libraries and bound to 127.0.0.1 only.
//!
//! The ferrokinesis *binary* binds 0.0.0.0; embedding its library on our own loopback
//! listener keeps every byte of test traffic on this machine.

use std::future::Future;

use ferrokinesis::store::{DurableStateOptions, StoreOptions};
use tokio::net::TcpListener;

use crate::config::{LOOPBACK, StackConfig};
use crate::error::StackError;
use crate::service::Service;

/// Kinesis limits we raise locally: tests create many short-lived streams in parallel.
const LOCAL_SHARD_LIMIT: u32 = 2_000;

/// Runs the Kinesis emulator until `shutdown` resolves, in memory.
///
/// ferrokinesis 0.7's durable mode appends a full snapshot of the whole store, with an
/// fsync, to its WAL on *every* mutation, so each PutRecords costs O(all data held).
/// Measured here: ~80 MB of test records made it write 2.9 GB and spend 6.5 CPU-minutes,
/// and publish tests slowed from seconds to minutes. A stream is a retention-bounded log,
/// not the system of record: the event store (DynamoDB stand-in, persistent) is, and the
/// outbox relay and the replay tool republish from it. So by default stream contents do
/// not survive `down`/`up` (`up` re-provisions the streams); `kinesis_durable = true`
/// (`CAFE__STACK__KINESIS_DURABLE=true`) turns persistence on for light use.
pub async fn serve_kinesis(
    cfg: &StackConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StackError> {
    let options = StoreOptions {
        // Real Kinesis takes seconds; keep a short delay so callers still have to wait
        // for ACTIVE, as they must on AWS.
        create_stream_ms: 50,
        delete_stream_ms: 50,
        update_stream_ms: 50,
        shard_limit: LOCAL_SHARD_LIMIT,
        durable: cfg.kinesis_durable.then(|| DurableStateOptions {
            state_dir: Service::Kinesis.data_dir(cfg),
            snapshot_interval_secs: 60,
            max_retained_bytes: None,
        }),
        aws_region: cfg.names.region.clone(),
        ..StoreOptions::default()
    };
    let (app, _store) = ferrokinesis::create_app(options);
    let app = one_put_at_a_time(app);
    let listener = TcpListener::bind((LOOPBACK, cfg.ports.kinesis)).await?;
    // axum::serve negotiates HTTP/1.1 and h2c, which SubscribeToShard needs.
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

/// Serializes PutRecord and PutRecords: one runs at a time, to the end of its response.
///
/// ferrokinesis 0.7 numbers a put's records first and stores them later, so two
/// concurrent puts can become visible out of sequence order: a reader at the tip that
/// sees the later put continues after it and skips the earlier one for good. Kinesis
/// never does that, and a consumer that resumes after its last record is right to trust
/// it (a projector lost updates to this, one run in four of the consumer-kill
/// experiment). Under concurrent puts on one stream it can also deadlock: a read holds
/// a blocking map guard across an await while puts block every runtime thread waiting
/// for that map. One put at a time removes both: numbering and storing become one step,
/// and at most one thread ever waits on the map. Puts are in-memory and short, so the
/// pipeline's rates are far below what one at a time allows (see the README's figures).
fn one_put_at_a_time(app: axum::Router) -> axum::Router {
    let turn = std::sync::Arc::new(tokio::sync::Mutex::new(()));
    app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let turn = turn.clone();
            async move {
                let put = req
                    .headers()
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|t| t.ends_with(".PutRecords") || t.ends_with(".PutRecord"));
                if put {
                    let _turn = turn.lock().await;
                    next.run(req).await
                } else {
                    next.run(req).await
                }
            }
        },
    ))
}

/// Runs the DynamoDB emulator until `shutdown` resolves, backed by one SQLite file.
pub async fn serve_dynamodb(
    cfg: &StackConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StackError> {
    let dir = Service::DynamoDb.data_dir(cfg);
    std::fs::create_dir_all(&dir).map_err(StackError::path(&dir))?;
    let file = dir.join("dynamodb.sqlite");
    let db = dynoxide::Database::new(&file.to_string_lossy()).map_err(|e| StackError::Command {
        command: "dynoxide open".to_owned(),
        detail: e.to_string(),
    })?;
    if !cfg.dynamodb_fsync {
        // `synchronous = OFF` with a bigger page cache (see `StackConfig::dynamodb_fsync`).
        db.enable_bulk_loading().map_err(|e| StackError::Command {
            command: "dynoxide pragmas".to_owned(),
            detail: e.to_string(),
        })?;
    }
    let listener = TcpListener::bind((LOOPBACK, cfg.ports.dynamodb)).await?;
    dynoxide::server::serve_with_shutdown(listener, db, shutdown)
        .await
        .map_err(|detail| StackError::Command {
            command: "dynoxide serve".to_owned(),
            detail,
        })
}
