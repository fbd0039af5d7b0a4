//! `cafe bench api`: throughput and latency of `POST /v1/orders` against the local
//! stack, beside the raw ceiling of the stand-ins for the same calls, measured in the
//! same run. A benchmark prints figures; it asserts nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use cafe_events::EventEnvelope;
use cafe_localstack::{StackConfig, provision};
use cafe_producers::publish::{KinesisSink, Publisher, PublisherConfig};
use cafe_producers::store::{Append, DynamoEventStore, EventStore, IdempotencyClaim, StoredResponse};

use crate::{load, pipeline, service_config};

/// Runs `concurrency` copies of `op` in a closed loop for `duration`; returns how many
/// operations succeeded and how long it took. `seq` numbers the operations across calls.
async fn closed_loop<F, Fut>(
    concurrency: usize,
    duration: Duration,
    seq: &Arc<AtomicU64>,
    op: &Arc<F>,
) -> (u64, Duration)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = u64> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
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
    (done.load(Ordering::Relaxed), started.elapsed())
}

/// Rounds the three DynamoDB phases alternate in. The stand-in slows as a run goes on:
/// it keeps every TransactWriteItems `ClientRequestToken` for ten minutes and scans them
/// all, reading the clock for each, on every transaction (a profile of a run: over half
/// its CPU). Measuring one phase after another would favour whichever ran first, so
/// each round starts with the next phase: every phase runs once first, once second and
/// once last.
const ROUNDS: u32 = 3;

/// Orders per transaction in the grouped ceiling: 100 writes, DynamoDB's most.
const GROUP: u64 = 50;

/// Concurrent callers of the grouped ceiling: a few, so the stand-in never waits on a
/// round trip; the API's group commit has one transaction in flight.
const GROUPED_CLIENTS: usize = 4;

/// An events and an idempotency table of a benchmark's own, shaped like the stack's
/// (events first), named after `tag`; the caller deletes them.
pub async fn store_tables(
    dynamodb: &aws_sdk_dynamodb::Client,
    cfg: &StackConfig,
    tag: &str,
) -> Result<Vec<provision::TableSpec>> {
    let mut specs = provision::table_specs(&cfg.names);
    specs.retain(|s| s.name == cfg.names.events_table || s.name == cfg.names.idempotency_table);
    for s in &mut specs {
        s.name = format!("bench-{}-{tag}", s.name);
        provision::ensure_table(dynamodb, s).await?;
    }
    Ok(specs)
}

/// The benchmark; prints its figures.
pub async fn api(cfg: &StackConfig, duration: Duration, concurrency: usize) -> Result<()> {
    let clients = pipeline::Clients::new(cfg, false).await;
    let tag = load::run_tag();

    // The stand-in's ceilings, on tables of their own, with the event store's own calls.
    let specs = store_tables(&clients.dynamodb, cfg, &tag).await?;
    let bench_store = Arc::new(DynamoEventStore::new(
        clients.dynamodb.clone(),
        &specs[0].name,
        &specs[1].name,
    ));
    // An order's append as the event store makes it: its event (with the pending
    // marker) and its idempotency record.
    let order = {
        let tag = tag.clone();
        move |n: u64| -> Option<(EventEnvelope, IdempotencyClaim)> {
            let event = load::placed(&tag, n).ok()?;
            let claim = IdempotencyClaim {
                key: format!("o-{tag}-{n}"),
                request_hash: format!("{n:064x}"),
                response: StoredResponse {
                    status: 201,
                    body: serde_json::json!({ "aggregate_id": event.aggregate_id.to_string(), "version": 1 }),
                },
                ttl: Duration::from_secs(24 * 3600),
            };
            Some((event, claim))
        }
    };
    // Ceiling 1, what the issue names: TransactWriteItems/s, one order's append each.
    let single = {
        let (store, order) = (bench_store.clone(), order.clone());
        Arc::new(move |n: u64| {
            let (store, order) = (store.clone(), order.clone());
            async move {
                let Some((event, claim)) = order(n) else { return 0 };
                u64::from(store.append(std::slice::from_ref(&event), Some(&claim)).await.is_ok())
            }
        })
    };
    // Ceiling 2, the calls the API makes for its orders under load: appends grouped
    // into full transactions (50 orders: 100 writes), then their markers cleared
    // (25 per BatchWriteItem), with nothing of ours in between.
    let grouped = {
        let (store, order) = (bench_store.clone(), order.clone());
        Arc::new(move |n: u64| {
            let (store, order) = (store.clone(), order.clone());
            async move {
                let orders: Vec<_> = (0..GROUP).filter_map(|i| order(n * GROUP + i)).collect();
                let events: Vec<_> = orders.iter().map(|(e, _)| std::slice::from_ref(e)).collect();
                let appends: Vec<_> = orders
                    .iter()
                    .zip(&events)
                    .map(|((_, claim), events)| Append {
                        events,
                        claim: Some(claim),
                    })
                    .collect();
                if store.append_group(&appends).await.is_err() {
                    return 0;
                }
                let appended: Vec<_> = orders.into_iter().map(|(e, _)| e).collect();
                if store.mark_published(&appended).await.is_err() {
                    return 0;
                }
                appended.len() as u64
            }
        })
    };

    // The real thing: POST /v1/orders through the API, closed loop.
    let mut settings = cafe_app::Settings::local(cfg.clone());
    settings.service = service_config()?;
    (settings.queries, settings.projectors, settings.saga) = (false, false, false);
    let running = cafe_app::Application::build(settings).await?.start().await?;
    let service = running.service().clone();
    let base = format!("http://{}", running.addr());
    let http = load::client(running.config())?;
    load::seed_menu(&http, &base).await.context("publishing the menu")?;
    let slice = duration / ROUNDS;
    let (mut appends, mut append_time) = (0, Duration::ZERO);
    let (mut grouped_orders, mut grouped_time) = (0, Duration::ZERO);
    let mut report = load::LoadReport::default();
    let seq = Arc::new(AtomicU64::new(0));
    // Each round starts with another phase, so none always runs on the fullest
    // token cache (see ROUNDS).
    for round in 0..ROUNDS {
        for phase in (0..3).map(|p| (p + round) % 3) {
            match phase {
                0 => {
                    let (n, t) = closed_loop(concurrency, slice, &seq, &single).await;
                    appends += n;
                    append_time += t;
                }
                1 => {
                    let (n, t) = closed_loop(GROUPED_CLIENTS, slice, &seq, &grouped).await;
                    grouped_orders += n;
                    grouped_time += t;
                }
                _ => report.merge(load::orders_closed_loop(&http, &base, concurrency, slice).await),
            }
        }
    }
    let txn_per_s = appends as f64 / append_time.as_secs_f64();
    let grouped_per_s = grouped_orders as f64 / grouped_time.as_secs_f64();
    let group = service.group_stats();
    let (api_appends, api_transactions) = (
        group.appends.load(Ordering::Relaxed),
        group.transactions.load(Ordering::Relaxed),
    );
    let totals = service.publisher().totals();
    let (events, records) = (
        totals.events.load(Ordering::Relaxed),
        totals.kinesis_records.load(Ordering::Relaxed),
    );
    running.stop(crate::run::STOP_DEADLINE).await?;

    // Ceiling 3: PutRecords records/s on the Kinesis stand-in (500 records of 300 bytes).
    let stream = format!("bench-{tag}");
    provision::ensure_stream(&clients.kinesis, &stream, cfg.stream_shards).await?;
    let kinesis = clients.kinesis.clone();
    let s2 = stream.clone();
    let put_records = Arc::new(move |n: u64| {
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
    });
    let (records_put, put_time) = closed_loop(concurrency.min(8), slice, &seq, &put_records).await;
    let put_records_per_s = records_put as f64 / put_time.as_secs_f64();

    // Aggregation on a restock storm: one store's restocks all go to a few shards, the
    // case aggregation is for (the order path above is aggregated only as far as
    // concurrent orders share a round).
    let storm_publisher = Publisher::new(
        KinesisSink::new(clients.kinesis.clone(), &stream),
        PublisherConfig::default(),
    );
    let mut storm_records = 0;
    let storm_events = 100 * 5_000;
    for store in 0..100 {
        let batch: Vec<_> = (0..5_000)
            .map(|sku| cafe_events::samples::restocked(store, sku))
            .collect::<Result<_, _>>()?;
        storm_records += storm_publisher.publish(&batch).await?.kinesis_records;
    }
    clients.kinesis.delete_stream().stream_name(&stream).send().await.ok();
    for s in &specs {
        clients.dynamodb.delete_table().table_name(&s.name).send().await.ok();
    }

    let orders_per_s = report.accepted.len() as f64 / report.elapsed.as_secs_f64();
    println!(
        "bench api: {concurrency} concurrent clients, {} per phase in {ROUNDS} alternating rounds",
        humantime::format_duration(duration)
    );
    let row = |label: &str, value: String| println!("  {label:<58} {value:>12}");
    let pct = |part: f64, whole: f64| format!("{:.0} %", 100.0 * part / whole);
    row(
        "stand-in ceiling: TransactWriteItems/s (one order's append each)",
        format!("{txn_per_s:.0}"),
    );
    row(
        &format!("stand-in ceiling: orders/s appended {GROUP} a transaction + markers cleared"),
        format!("{grouped_per_s:.0}"),
    );
    row(
        "stand-in ceiling: PutRecords records/s (Kinesis)",
        format!("{put_records_per_s:.0}"),
    );
    row("POST /v1/orders accepted/s", format!("{orders_per_s:.0}"));
    row(
        "  as a share of the TransactWriteItems/s ceiling",
        pct(orders_per_s, txn_per_s),
    );
    row(
        "  as a share of the grouped + clearing ceiling",
        pct(orders_per_s, grouped_per_s),
    );
    row("  as a share of 3,000 orders/s", pct(orders_per_s, 3_000.0));
    row(
        "  orders per append transaction (group commit)",
        format!("{:.1}", api_appends as f64 / api_transactions.max(1) as f64),
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
