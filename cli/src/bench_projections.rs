//! `cafe bench projections`: events/s of each projector applying a generated history
//! in runtime-sized batches (four shards at once, as four shard tasks would), and for
//! PostgreSQL the ceiling: a raw `COPY` of the very rows the projector produced into the
//! same tables of a fresh schema, on as many connections as there are shards. Figures, never pass/fail.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use cafe_localstack::StackConfig;
use cafe_projections::catalog::{Endpoints, Namespace, ReadModel};
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

/// Applies every shard's events in batches of `batch`, each shard on a task of its own
/// as the worker runs them (one task for all four would serialise their client-side
/// work on one thread and understate every projector).
async fn apply_all<P: Projection + Clone>(
    p: &P,
    shards: &[(String, Vec<Positioned>)],
    batch: usize,
) -> Result<Duration> {
    let shards: Vec<(String, Arc<[Positioned]>)> = shards
        .iter()
        .map(|(s, events)| (s.clone(), events.clone().into()))
        .collect();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (shard, events) in shards {
        let p = p.clone();
        tasks.spawn(async move {
            for chunk in events.chunks(batch.max(1)) {
                p.apply(Batch {
                    shard_id: &shard,
                    events: chunk,
                })
                .await?;
            }
            Ok::<(), cafe_projections::ProjectionError>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(started.elapsed())
}

fn rate(events: usize, took: Duration) -> f64 {
    events as f64 / took.as_secs_f64().max(f64::EPSILON)
}

/// Runs the benchmark on a history of `orders` orders, for the models in `only` (all
/// when empty).
/// The PostgreSQL phase runs on a history of `postgres_orders` orders of its own: its
/// projector and COPY both run at a few hundred thousand events/s, so it takes that many
/// for one trial to last seconds rather than tenths, where a checkpoint landing in it
/// decides the figure.
pub async fn projections(
    cfg: &StackConfig,
    orders: usize,
    postgres_orders: usize,
    batch: usize,
    only: &[ReadModel],
    trials: usize,
) -> Result<()> {
    let runs = |m: ReadModel| only.is_empty() || only.contains(&m);
    let generate = |orders: usize| {
        history::generate(HistoryConfig {
            seed: 1,
            orders,
            customers: (orders / 4).max(1),
            stores: 50,
            menu_items: 40,
            ..HistoryConfig::default()
        })
    };
    if runs(ReadModel::Orders) {
        let history = generate(postgres_orders);
        let pg_events = history
            .iter()
            .filter(|e| ReadModel::Orders.consumes(&e.aggregate_id))
            .count();
        println!(
            "postgres history: {} events ({pg_events} order+loyalty) over {postgres_orders} orders, 4 shards, batches of {batch}",
            history.len()
        );
        let shards = history::sharded(&history, 4);
        drop(history);
        postgres(cfg, &shards, batch, pg_events, trials).await?;
    }
    if only.iter().all(|m| *m == ReadModel::Orders) && !only.is_empty() {
        return Ok(());
    }
    let history = generate(orders);
    let shards = history::sharded(&history, 4);
    println!(
        "history: {} events over {orders} orders, 4 shards, batches of {batch}",
        history.len(),
    );
    // Every other model, on a namespace of its own, dropped afterwards.
    let at = endpoints(cfg).await?;
    let ns = Namespace::shadow(&format!("bench_{}", std::process::id()))?;
    for model in ReadModel::ALL
        .into_iter()
        .filter(|m| *m != ReadModel::Orders && runs(*m))
    {
        let projection = model.connect(&at, &ns).await?;
        let events = history.iter().filter(|e| model.consumes(&e.aggregate_id)).count();
        let took = apply_all(&projection, &shards, batch).await;
        model
            .drop(&at, &ns)
            .await
            .with_context(|| format!("dropping the benchmark's {model} copy"))?;
        report(&format!("{model} ({})", model.store()), events, took?);
    }
    Ok(())
}

/// The local stack's stores.
async fn endpoints(cfg: &StackConfig) -> Result<Endpoints> {
    crate::read_side::endpoints(cfg, &crate::pipeline::Clients::new(cfg, false).await)
}

/// The PostgreSQL projector, then a raw COPY of the rows it produced into a fresh schema,
/// `trials` times in alternation (each on fresh schemas); the medians are compared, as
/// a PostgreSQL checkpoint or autovacuum landing in one run moves its figure.
async fn postgres(
    cfg: &StackConfig,
    shards: &[(String, Vec<Positioned>)],
    batch: usize,
    pg_events: usize,
    trials: usize,
) -> Result<()> {
    let run = std::process::id();
    let at = endpoints(cfg).await?;
    let (mut projector, mut ceiling, mut rows) = (Vec::new(), Vec::new(), 0);
    for trial in 0..trials.max(1) {
        let (projected, copied) = (
            format!("bench_{run}_{trial}_projected"),
            format!("bench_{run}_{trial}_copied"),
        );
        let (projected_ns, copied_ns) = (Namespace::shadow(&projected)?, Namespace::shadow(&copied)?);
        let pg = at.orders(&projected_ns).await?;
        projector.push(apply_all(&pg, shards, batch).await?);
        let target = at.orders(&copied_ns).await?;
        let (copy_took, copied_rows) = copy_ceiling(&pg, &projected, &target, &copied, shards.len()).await?;
        ceiling.push(copy_took);
        rows = copied_rows;
        println!(
            "  trial {}: projector {:.2} s, raw COPY {:.2} s ({:.0} %)",
            trial + 1,
            projector[trial].as_secs_f64(),
            copy_took.as_secs_f64(),
            100.0 * copy_took.as_secs_f64() / projector[trial].as_secs_f64().max(f64::EPSILON)
        );
        for ns in [projected_ns, copied_ns] {
            ReadModel::Orders
                .drop(&at, &ns)
                .await
                .context("dropping the benchmark schemas")?;
        }
    }
    let (took, copy_took) = (median(&mut projector), median(&mut ceiling));
    println!(
        "postgres (orders+loyalty): {:>9.0} events/s ({pg_events} events -> {rows} rows in {:.2} s, median of {})",
        rate(pg_events, took),
        took.as_secs_f64(),
        projector.len()
    );
    println!(
        "  raw COPY of the same rows: {:.2} s = {:.0} events/s equivalent; projector at {:.0} % of the COPY ceiling",
        copy_took.as_secs_f64(),
        rate(pg_events, copy_took),
        100.0 * copy_took.as_secs_f64() / took.as_secs_f64().max(f64::EPSILON)
    );
    Ok(())
}

fn median(durations: &mut [Duration]) -> Duration {
    durations.sort();
    durations.get(durations.len() / 2).copied().unwrap_or_default()
}

/// Dumps the projected tables and COPYs the rows into `copied` on `connections`
/// connections at once (as many as the projector had shards); the time and row count.
pub(crate) async fn copy_ceiling(
    projected_view: &PgOrdersView,
    projected: &str,
    target: &PgOrdersView,
    copied: &str,
    connections: usize,
) -> Result<(Duration, usize)> {
    let client = projected_view.pool().get().await?;
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
    let mut targets = Vec::new();
    for _ in 0..connections {
        targets.push(target.pool().get().await?);
    }
    let started = Instant::now();
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
    Ok((started.elapsed(), rows))
}

fn report(what: &str, events: usize, took: Duration) {
    println!(
        "{what:<27}{:>9.0} events/s ({events} events in {:.2} s)",
        rate(events, took),
        took.as_secs_f64()
    );
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
