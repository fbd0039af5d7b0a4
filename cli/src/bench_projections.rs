//! `cafe bench projections`: events/s of each projector applying a generated history
//! in runtime-sized batches (four shards at once, as four shard tasks would), and for
//! PostgreSQL the ceiling: a raw `COPY` of the very rows the projector produced into the
//! same tables of a fresh schema, on as many connections as there are shards. Figures, never pass/fail.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use cafe_localstack::{StackConfig, aws, provision};
use cafe_projections::active_orders::DynamoActiveOrders;
use cafe_projections::history::{self, HistoryConfig};
use cafe_projections::postgres::orders::PgOrdersView;
use cafe_projections::{Batch, Positioned, Projection};
use futures::{SinkExt, TryStreamExt};

/// The Aurora tables and the columns a COPY may write (not the generated total_amount).
const PG_TABLES: &[(&str, &str)] = &[
    (
        "orders",
        "order_id, customer_id, store_id, total_cents, currency, status, created_at, updated_at, version",
    ),
    ("order_items", "order_id, line_no, item_id, quantity, unit_price_cents"),
    ("loyalty_accounts", "customer_id, balance, tier, updated_at, version"),
    (
        "loyalty_ledger",
        "customer_id, version, event_id, kind, points, balance_after, order_id, occurred_at",
    ),
];

/// Applies every shard's events in batches of `batch`, shards concurrently.
async fn apply_all<P: Projection>(p: &P, shards: &[(String, Vec<Positioned>)], batch: usize) -> Result<Duration> {
    let started = Instant::now();
    let tasks = shards.iter().map(|(shard, events)| async move {
        for chunk in events.chunks(batch.max(1)) {
            p.apply(Batch {
                shard_id: shard,
                events: chunk,
            })
            .await?;
        }
        Ok::<(), cafe_projections::ProjectionError>(())
    });
    for r in futures::future::join_all(tasks).await {
        r?;
    }
    Ok(started.elapsed())
}

fn rate(events: usize, took: Duration) -> f64 {
    events as f64 / took.as_secs_f64().max(f64::EPSILON)
}

/// Runs the benchmark on a history of `orders` orders.
pub async fn projections(cfg: &StackConfig, orders: usize, batch: usize) -> Result<()> {
    let history = history::generate(HistoryConfig {
        seed: 1,
        orders,
        customers: (orders / 4).max(1),
        stores: 50,
        menu_items: 40,
    });
    let shards = history::sharded(&history, 4);
    let relevant =
        |pred: fn(&cafe_events::AggregateId) -> bool| history.iter().filter(|e| pred(&e.aggregate_id)).count();
    let order_events = relevant(|a| matches!(a, cafe_events::AggregateId::Order(_)));
    let pg_events = relevant(|a| {
        matches!(
            a,
            cafe_events::AggregateId::Order(_) | cafe_events::AggregateId::LoyaltyAccount(_)
        )
    });
    println!(
        "history: {} events ({} order, {} order+loyalty) over {orders} orders, 4 shards, batches of {batch}",
        history.len(),
        order_events,
        pg_events
    );
    let run = std::process::id();

    // PostgreSQL: the projector, then COPY of the same rows into a fresh schema.
    let url = cfg.postgres_url(&cfg.names.orders_database);
    let (projected, copied) = (format!("bench_{run}_projected"), format!("bench_{run}_copied"));
    let pg = PgOrdersView::connect(&url, &projected).await?;
    let took = apply_all(&pg, &shards, batch).await?;
    let target = PgOrdersView::connect(&url, &copied).await?;
    let client = pg.pool().get().await?;
    let mut dumps: Vec<(&str, &str, Vec<Bytes>)> = Vec::new();
    for (table, columns) in PG_TABLES {
        let out = client
            .copy_out(&format!("COPY {projected}.{table} ({columns}) TO STDOUT"))
            .await?;
        dumps.push((table, columns, out.try_collect().await?));
    }
    let rows: usize = dumps
        .iter()
        .map(|(_, _, chunks)| chunks.iter().map(|c| bytecount(c)).sum::<usize>())
        .sum();
    // The ceiling copies on as many connections as the projector has shards.
    let mut targets = Vec::new();
    for _ in 0..shards.len() {
        targets.push(target.pool().get().await?);
    }
    let copy_started = Instant::now();
    for (table, columns, chunks) in dumps {
        let all: Vec<u8> = chunks.concat();
        let parts = split_lines(&all, targets.len());
        let copies = targets.iter().zip(parts).map(|(client, part)| {
            let statement = format!("COPY {copied}.{table} ({columns}) FROM STDIN");
            async move {
                let sink = client.copy_in(&statement).await?;
                futures::pin_mut!(sink);
                sink.send(Bytes::copy_from_slice(part)).await?;
                sink.finish().await?;
                Ok::<(), tokio_postgres::Error>(())
            }
        });
        for r in futures::future::join_all(copies).await {
            r?;
        }
    }
    let copy_took = copy_started.elapsed();
    println!(
        "postgres (orders+loyalty): {:>9.0} events/s ({pg_events} events in {:.2} s) -> {rows} rows",
        rate(pg_events, took),
        took.as_secs_f64()
    );
    println!(
        "  raw COPY of the same {rows} rows:  {:.2} s = {:.0} events/s equivalent; projector at {:.0} % of the COPY ceiling",
        copy_took.as_secs_f64(),
        rate(pg_events, copy_took),
        100.0 * copy_took.as_secs_f64() / took.as_secs_f64().max(f64::EPSILON)
    );
    drop((client, targets));
    let admin = pg.pool().get().await?;
    admin
        .batch_execute(&format!(
            "DROP SCHEMA {projected} CASCADE; DROP SCHEMA {copied} CASCADE;"
        ))
        .await
        .context("dropping the benchmark schemas")?;

    // DynamoDB active orders.
    let sdk = aws::sdk_config(cfg).await;
    let dynamodb = aws::dynamodb(&sdk, cfg);
    let spec = provision::ensure_table_like(
        &dynamodb,
        &cfg.names,
        &cfg.names.active_orders_table,
        &format!("bench-active-{run}"),
    )
    .await?;
    let active = DynamoActiveOrders::new(dynamodb.clone(), &spec.name);
    let took = apply_all(&active, &shards, batch).await?;
    println!(
        "dynamodb (active orders):  {:>9.0} events/s ({order_events} events in {:.2} s)",
        rate(order_events, took),
        took.as_secs_f64()
    );
    let _ = dynamodb.delete_table().table_name(&spec.name).send().await;
    Ok(())
}

/// `data` cut into `n` pieces at line ends.
fn split_lines(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    for i in (1..=n.max(1)).rev() {
        let want = rest.len() / i;
        let cut = rest[want..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |p| want + p + 1);
        let (part, tail) = rest.split_at(cut);
        parts.push(part);
        rest = tail;
    }
    parts
}

/// Rows in a COPY text chunk.
fn bytecount(chunk: &[u8]) -> usize {
    chunk.iter().filter(|&&b| b == b'\n').count()
}
