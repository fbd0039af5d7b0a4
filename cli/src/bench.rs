//! `cafe bench api`: throughput and latency of `POST /v1/orders` against the local
//! stack, beside the raw ceiling of the stand-ins for the same calls, measured in the
//! same run. A benchmark prints figures; it asserts nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use cafe_localstack::{StackConfig, provision};
use cafe_producers::publish::{KinesisSink, Publisher, PublisherConfig};
use cafe_producers::relay::RelayConfig;
use tokio::sync::watch;

use crate::{load, pipeline, service_config};

/// Runs `concurrency` copies of `op` in a closed loop for `duration`; returns ops/s.
async fn closed_loop<F, Fut>(concurrency: usize, duration: Duration, op: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = u64> + Send,
{
    let op = Arc::new(op);
    let done = Arc::new(AtomicU64::new(0));
    let seq = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (op, done, seq) = (op.clone(), done.clone(), seq.clone());
            tokio::spawn(async move {
                while started.elapsed() < duration {
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    done.fetch_add(op(n).await, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// The benchmark; prints its figures.
pub async fn api(cfg: &StackConfig, duration: Duration, concurrency: usize) -> Result<()> {
    let clients = pipeline::Clients::new(cfg, false).await;
    let tag = cafe_events::EventId::new().as_uuid().simple().to_string();
    let tag = &tag[tag.len() - 8..];

    // Ceiling 1: TransactWriteItems/s on the DynamoDB stand-in, shaped like an order
    // append (one event item + one idempotency item, both conditional).
    let mut specs = provision::table_specs(&cfg.names);
    specs.retain(|s| s.name == cfg.names.events_table || s.name == cfg.names.idempotency_table);
    for s in &mut specs {
        s.name = format!("bench-{}-{tag}", s.name);
        provision::ensure_table(&clients.dynamodb, s).await?;
    }
    let (events_t, idem_t) = (specs[0].name.clone(), specs[1].name.clone());
    let ddb = clients.dynamodb.clone();
    let payload = vec![7u8; 300];
    let txn_per_s = closed_loop(concurrency, duration, move |n| {
        let (ddb, events_t, idem_t, payload) = (ddb.clone(), events_t.clone(), idem_t.clone(), payload.clone());
        async move {
            let put = |table: &str, key: &str, item: Vec<(&str, AttributeValue)>| {
                let mut p = Put::builder()
                    .table_name(table)
                    .condition_expression(format!("attribute_not_exists({key})"));
                for (k, v) in item {
                    p = p.item(k, v);
                }
                p.build().map(|p| TransactWriteItem::builder().put(p).build())
            };
            let (Ok(a), Ok(b)) = (
                put(
                    &events_t,
                    "aggregate_id",
                    vec![
                        ("aggregate_id", AttributeValue::S(format!("o-{n}"))),
                        ("version", AttributeValue::N("1".into())),
                        ("data", AttributeValue::B(payload.clone().into())),
                    ],
                ),
                put(
                    &idem_t,
                    "idempotency_key",
                    vec![("idempotency_key", AttributeValue::S(format!("k-{n}")))],
                ),
            ) else {
                return 0;
            };
            u64::from(
                ddb.transact_write_items()
                    .transact_items(a)
                    .transact_items(b)
                    .send()
                    .await
                    .is_ok(),
            )
        }
    })
    .await;

    // Ceiling 2: PutRecords records/s on the Kinesis stand-in (500 records of 300 bytes).
    let stream = format!("bench-{tag}");
    provision::ensure_stream(&clients.kinesis, &stream, cfg.stream_shards).await?;
    let kinesis = clients.kinesis.clone();
    let s2 = stream.clone();
    let put_records_per_s = closed_loop(concurrency.min(8), duration, move |n| {
        let (kinesis, stream) = (kinesis.clone(), s2.clone());
        async move {
            let entries: Vec<_> = (0..500)
                .filter_map(|i| {
                    PutRecordsRequestEntry::builder()
                        .partition_key(format!("o-{n}-{i}"))
                        .data(Blob::new(vec![1u8; 300]))
                        .build()
                        .ok()
                })
                .collect();
            match kinesis
                .put_records()
                .stream_name(&stream)
                .set_records(Some(entries))
                .send()
                .await
            {
                Ok(out) => 500 - out.failed_record_count().unwrap_or(0).max(0) as u64,
                Err(_) => 0,
            }
        }
    })
    .await;

    // The real thing: POST /v1/orders through the API, closed loop.
    let service = pipeline::service(cfg, &clients, service_config()?);
    let (stop, stopped) = watch::channel(false);
    let running = pipeline::start(service.clone(), "127.0.0.1:0".parse()?, RelayConfig::default(), stopped).await?;
    let base = format!("http://{}", running.addr);
    let http = load::client();
    load::seed_menu(&http, &base).await.context("publishing the menu")?;
    let report = load::orders_closed_loop(&http, &base, concurrency, duration).await;
    let totals = service.publisher().totals();
    let (events, records) = (
        totals.events.load(Ordering::Relaxed),
        totals.kinesis_records.load(Ordering::Relaxed),
    );
    let _ = stop.send(true);
    running.drained().await?;

    // Aggregation on a restock storm (the order path sends one event per call, so
    // there is nothing to aggregate there).
    let storm_publisher = Publisher::new(
        KinesisSink::new(clients.kinesis.clone(), &stream),
        PublisherConfig::default(),
    );
    let mut storm_records = 0;
    let storm_events = 100 * 5_000;
    for store in 0..100 {
        let batch: Vec<_> = (0..5_000)
            .map(|sku| load::restocked(store, sku))
            .collect::<Result<_>>()?;
        storm_records += storm_publisher.publish(&batch).await?.kinesis_records;
    }
    clients.kinesis.delete_stream().stream_name(&stream).send().await.ok();
    for s in &specs {
        clients.dynamodb.delete_table().table_name(&s.name).send().await.ok();
    }

    let orders_per_s = report.accepted.len() as f64 / report.elapsed.as_secs_f64();
    println!(
        "bench api: {concurrency} concurrent clients, {} per phase",
        humantime::format_duration(duration)
    );
    println!("  stand-in ceiling, TransactWriteItems/s (DynamoDB)  {txn_per_s:>10.0}");
    println!("  stand-in ceiling, PutRecords records/s (Kinesis)   {put_records_per_s:>10.0}");
    println!("  POST /v1/orders accepted/s                         {orders_per_s:>10.0}");
    println!(
        "  orders/s as a share of the TransactWriteItems ceiling {:>7.0} %",
        100.0 * orders_per_s / txn_per_s
    );
    println!(
        "  latency p50 / p99                                  {:>7.1} ms / {:.1} ms",
        report.quantile(0.5).as_secs_f64() * 1e3,
        report.quantile(0.99).as_secs_f64() * 1e3
    );
    println!(
        "  refused                                            {:>10}",
        report.refused.len()
    );
    println!("  order path: {events} events in {records} Kinesis records");
    println!(
        "  restock storm (100 stores x 5,000 SKUs): {storm_events} events in {storm_records} Kinesis records (1/{:.0})",
        storm_events as f64 / storm_records.max(1) as f64
    );
    Ok(())
}
