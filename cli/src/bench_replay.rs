//! `cafe bench replay`: a rebuild of the orders read model beside its two ceilings,
//! measured in the same run on the same data. Figures, never pass/fail.
//!
//! - **From the stream**: a generated history of order and loyalty events (what the
//!   orders model reads) published KPL-aggregated to a stream of its own; read raw
//!   (back-to-back GetRecords, deaggregated, every shard at once); rebuilt by a `cafe
//!   replay rebuild --from stream` *process* (its RSS is its own, sampled throughout);
//!   and the rows the rebuild produced COPYed raw into a fresh schema. The lower of the
//!   two raw rates is the ceiling a rebuild could reach.
//! - **From the event store**: the same kind of history appended to an events table of
//!   its own, read raw by a parallel Scan (same segments and page size), and rebuilt by
//!   a `cafe replay rebuild` process.
//!
//! The rebuild processes see the benchmark's stream or table through the configuration
//! (`CAFE__STACK__NAMES__STREAM`, `CAFE__STACK__NAMES__EVENTS_TABLE`), as any deployment
//! names its own.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cafe_events::EventEnvelope;
use cafe_localstack::{StackConfig, provision};
use cafe_producers::publish::{KinesisSink, Publisher, PublisherConfig};
use cafe_producers::store::{Append, DynamoEventStore, EventStore};
use cafe_projections::catalog::{Namespace, ReadModel};
use cafe_projections::history::{self, HistoryConfig};

use crate::{bench_consumer, bench_projections, pipeline};

/// Orders per generated part: small enough that a part's clock (1–90 s an event) stays
/// within days of the generator's epoch, so every event lies before a replay's
/// watermark.
const ORDERS_PER_PART: usize = 2_000;

/// Which half to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    /// From the stream.
    Stream,
    /// From the event store.
    EventStore,
}

/// Part `n` of a long history: the events the orders model reads, of orders and
/// customers no other part has.
fn part(n: usize) -> Vec<EventEnvelope> {
    history::generate(HistoryConfig {
        seed: n as u64 + 1,
        orders: ORDERS_PER_PART,
        customers: ORDERS_PER_PART / 4,
        stores: 50,
        menu_items: 40,
        first_order: n * ORDERS_PER_PART,
        first_customer: n * ORDERS_PER_PART / 4,
    })
    .into_iter()
    .filter(|e| ReadModel::Orders.consumes(&e.aggregate_id))
    .collect()
}

/// Generates `events` events part by part, handing each part to `sink`.
async fn generate<F, Fut>(events: u64, mut sink: F) -> Result<()>
where
    F: FnMut(Vec<EventEnvelope>) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut left = events;
    let mut n = 0;
    while left > 0 {
        let mut p = part(n);
        n += 1;
        // The cut keeps whole aggregates' prefixes only: events come in a global order
        // in which each aggregate's are ascending.
        p.truncate(usize::try_from(left).unwrap_or(usize::MAX));
        left -= p.len() as u64;
        sink(p).await?;
    }
    Ok(())
}

/// A `cafe replay rebuild` run as its own process.
struct Rebuild {
    id: String,
    took: Duration,
    applied: u64,
    rss_peak: u64,
    /// Peak RSS over the first and the second half of the run.
    rss_halves: (u64, u64),
}

async fn rebuild(env: (&str, &str), args: &[&str]) -> Result<Rebuild> {
    let exe = std::env::current_exe().context("locating the cafe binary")?;
    let started = Instant::now();
    let mut child = Command::new(exe)
        .args(["replay", "rebuild", "--projector", "orders", "--no-governor"])
        .args(args)
        .env(env.0, env.1)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `cafe replay rebuild`")?;
    let pid = child.id();
    let stdout = child.stdout.take().context("rebuild stdout")?;
    let lines = std::thread::spawn(move || BufReader::new(stdout).lines().map_while(Result::ok).collect::<Vec<_>>());
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    let mut peak = 0;
    loop {
        if let Some(hwm) = bench_consumer::memory_bytes(pid, "VmHWM:") {
            peak = hwm.max(peak);
        }
        if let Some(rss) = bench_consumer::memory_bytes(pid, "VmRSS:") {
            samples.push((started.elapsed(), rss));
        }
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("cafe replay rebuild exited with {status}");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = started.elapsed();
    let lines = lines
        .join()
        .map_err(|_| anyhow::anyhow!("reading the rebuild's output"))?;
    let id = lines
        .iter()
        .find_map(|l| {
            l.strip_prefix("replay ")?
                .split_once(": shadows")
                .map(|(id, _)| id.to_owned())
        })
        .context("the rebuild printed no replay id")?;
    let applied = lines
        .iter()
        .find_map(|l| {
            let (_, rest) = l.split_once(" events read, ")?;
            rest.split_once(" applied")?.0.parse::<u64>().ok()
        })
        .context("the rebuild printed no count")?;
    let half = took / 2;
    let max = |early: bool| {
        samples
            .iter()
            .filter(|(at, _)| (*at < half) == early)
            .map(|(_, r)| *r)
            .max()
            .unwrap_or(0)
    };
    Ok(Rebuild {
        id,
        took,
        applied,
        rss_peak: peak,
        rss_halves: (max(true), max(false)),
    })
}

impl Rebuild {
    /// Its rate against `ceiling`, and its memory.
    fn print(&self, rate: f64, ceiling: f64, what: &str) {
        println!(
            "  cafe replay rebuild        {rate:>10.0} events/s  ({:.1} s, process start to exit) = {:.0} % of {what}",
            self.took.as_secs_f64(),
            100.0 * rate / ceiling
        );
        println!(
            "  rebuild peak RSS           {:>10.1} MiB  (first half {:.1} MiB, second half {:.1} MiB)",
            mib(self.rss_peak),
            mib(self.rss_halves.0),
            mib(self.rss_halves.1)
        );
    }
}

fn rate(n: u64, took: Duration) -> f64 {
    n as f64 / took.as_secs_f64().max(f64::EPSILON)
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// Drops replay `id` through the CLI, as an operator would.
fn drop_replay(id: &str) -> Result<()> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe).args(["replay", "drop", id]).output()?;
    if !out.status.success() {
        bail!("cafe replay drop {id}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The benchmark; prints its figures.
pub async fn replay(cfg: &StackConfig, events: u64, store_events: u64, shards: u32, only: Option<Part>) -> Result<()> {
    let clients = pipeline::Clients::new(cfg, false).await;
    let tag = cafe_events::EventId::new().as_uuid().simple().to_string();
    let tag = tag[tag.len() - 8..].to_owned();
    if only != Some(Part::EventStore) {
        from_stream(cfg, &clients, &tag, events, shards).await?;
    }
    if only != Some(Part::Stream) {
        from_store(cfg, &clients, &tag, store_events).await?;
    }
    Ok(())
}

async fn from_stream(
    cfg: &StackConfig,
    clients: &pipeline::Clients,
    tag: &str,
    events: u64,
    shards: u32,
) -> Result<()> {
    let stream = format!("bench-replay-{tag}");
    provision::ensure_stream(&clients.kinesis, &stream, shards).await?;
    let publisher = Publisher::new(
        KinesisSink::new(clients.kinesis.clone(), &stream),
        PublisherConfig::default(),
    );
    let started = Instant::now();
    let kinesis_records = std::cell::Cell::new(0);
    generate(events, |part| {
        let (publisher, records) = (&publisher, &kinesis_records);
        async move {
            records.set(records.get() + publisher.publish(&part).await?.kinesis_records);
            Ok(())
        }
    })
    .await?;
    let kinesis_records = kinesis_records.get();
    let published_in = started.elapsed();
    println!(
        "replay benchmark, from the stream: {events} order and loyalty events on {stream} ({shards} shards, {kinesis_records} KPL-aggregated Kinesis records, published in {:.1} s)",
        published_in.as_secs_f64()
    );

    let budget = Some(cafe_consumers::WorkerConfig::new("", "").read_bytes_budget);
    let (user, _, read_took) = bench_consumer::raw_read(&clients.kinesis, &stream, budget).await?;
    if user != events {
        bail!("the raw read found {user} events, expected {events}");
    }
    let r = rebuild(
        ("CAFE__STACK__NAMES__STREAM", &stream),
        &["--from", "stream", "--progress-every", "30s"],
    )
    .await?;
    if r.applied != events {
        bail!("the rebuild applied {} events, expected {events}", r.applied);
    }

    // The raw COPY of the rows the rebuild produced, into a fresh schema.
    let at = crate::read_side::endpoints(cfg, clients)?;
    let shadow = format!("replay_{}", r.id);
    let copied = format!("bench_replay_{tag}_copied");
    let (shadow_ns, copied_ns) = (Namespace::shadow(&shadow)?, Namespace::shadow(&copied)?);
    let projected = at.orders(&shadow_ns).await?;
    let target = at.orders(&copied_ns).await?;
    let (copy_took, rows) =
        bench_projections::copy_ceiling(&projected, &shadow, &target, &copied, shards as usize).await?;
    ReadModel::Orders.drop(&at, &copied_ns).await?;
    drop_replay(&r.id)?;
    clients.kinesis.delete_stream().stream_name(&stream).send().await.ok();

    let (read_rate, copy_rate, replay_rate) = (rate(events, read_took), rate(events, copy_took), rate(events, r.took));
    let ceiling = read_rate.min(copy_rate);
    println!(
        "  raw GetRecords read        {read_rate:>10.0} events/s  ({:.1} s)",
        read_took.as_secs_f64()
    );
    println!(
        "  raw COPY of the same rows  {copy_rate:>10.0} events/s  ({rows} rows in {:.1} s, {shards} connections)",
        copy_took.as_secs_f64()
    );
    r.print(replay_rate, ceiling, "the lower ceiling");
    Ok(())
}

async fn from_store(cfg: &StackConfig, clients: &pipeline::Clients, tag: &str, events: u64) -> Result<()> {
    let names = &cfg.names;
    let table = provision::ensure_table_like(
        &clients.dynamodb,
        names,
        &names.events_table,
        &format!("bench-replay-events-{tag}"),
    )
    .await?
    .name;
    let store = Arc::new(DynamoEventStore::new(
        clients.dynamodb.clone(),
        &table,
        &names.idempotency_table,
    ));
    let started = Instant::now();
    generate(events, |part| {
        let store = store.clone();
        async move { fill(&store, part).await }
    })
    .await?;
    println!(
        "replay benchmark, from the event store: {events} order and loyalty events in {table} (appended in {:.1} s)",
        started.elapsed().as_secs_f64()
    );
    let (segments, page) = (4, 5_000);
    let (scanned, scan_took) = raw_scan(&clients.dynamodb, &table, segments, page).await?;
    if scanned != events {
        bail!("the raw Scan found {scanned} items, expected {events}");
    }
    let (segments_arg, page_arg) = (segments.to_string(), page.to_string());
    let r = rebuild(
        ("CAFE__STACK__NAMES__EVENTS_TABLE", &table),
        &[
            "--segments",
            &segments_arg,
            "--page-size",
            &page_arg,
            "--progress-every",
            "30s",
        ],
    )
    .await?;
    if r.applied != events {
        bail!("the rebuild applied {} events, expected {events}", r.applied);
    }
    drop_replay(&r.id)?;
    clients.dynamodb.delete_table().table_name(&table).send().await.ok();
    let (scan_rate, replay_rate) = (rate(events, scan_took), rate(events, r.took));
    println!(
        "  raw parallel Scan          {scan_rate:>10.0} events/s  ({:.1} s, {segments} segments, pages of {page})",
        scan_took.as_secs_f64()
    );
    r.print(replay_rate, scan_rate, "the Scan");
    Ok(())
}

/// Appends a part: each aggregate's events whole, grouped into transactions of at most
/// 100 writes, eight transactions at a time.
async fn fill(store: &DynamoEventStore, part: Vec<EventEnvelope>) -> Result<()> {
    let mut by_aggregate: std::collections::BTreeMap<String, Vec<EventEnvelope>> = std::collections::BTreeMap::new();
    for e in part {
        by_aggregate.entry(e.aggregate_id.to_string()).or_default().push(e);
    }
    let mut groups: Vec<Vec<&[EventEnvelope]>> = vec![Vec::new()];
    let mut size = 0;
    for events in by_aggregate.values() {
        for chunk in events.chunks(100) {
            if size + chunk.len() > 100 {
                groups.push(Vec::new());
                size = 0;
            }
            size += chunk.len();
            if let Some(g) = groups.last_mut() {
                g.push(chunk);
            }
        }
    }
    let appends = groups.into_iter().filter(|g| !g.is_empty()).map(|g| async move {
        let appends: Vec<Append<'_>> = g.into_iter().map(|events| Append { events, claim: None }).collect();
        store.append_group(&appends).await
    });
    use futures::StreamExt;
    let mut results = futures::stream::iter(appends).buffer_unordered(8);
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(())
}

/// Every item of `table` by a parallel Scan, nothing decoded: the count and the time.
async fn raw_scan(
    dynamodb: &aws_sdk_dynamodb::Client,
    table: &str,
    segments: i32,
    page: i32,
) -> Result<(u64, Duration)> {
    let started = Instant::now();
    let scans = (0..segments).map(|segment| async move {
        let mut count = 0u64;
        let mut start = None;
        loop {
            let out = dynamodb
                .scan()
                .table_name(table)
                .segment(segment)
                .total_segments(segments)
                .limit(page)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(|e| anyhow::anyhow!("Scan: {}", aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
            count += out.items().len() as u64;
            start = out.last_evaluated_key;
            if start.is_none() {
                return anyhow::Ok(count);
            }
        }
    });
    let counts = futures::future::try_join_all(scans).await?;
    Ok((counts.iter().sum(), started.elapsed()))
}
