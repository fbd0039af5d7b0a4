//! `cafe bench consumer`: the consumer runtime's throughput beside the raw GetRecords
//! read rate of the same stream (the ceiling), measured in the same run; the worker's
//! resident memory; and the failover time after a kill -9. Prints figures, asserts
//! nothing.
//!
//! The worker runs as its own process (`cafe consume --sink discard`), as it would in
//! production, so its RSS is its own and not the benchmark's. Its progress is read
//! from its Prometheus endpoint.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cafe_consumers::lease::Checkpoint;
use cafe_consumers::lease::{DynamoLeaseTable, LeaseTable};
use cafe_consumers::retrieval::{MAX_RECORD_BYTES, get_batch, read_limit, start_iterator};
use cafe_localstack::{StackConfig, provision};
use cafe_producers::publish::{KinesisSink, Publisher, PublisherConfig};

use crate::{load, pipeline};

/// A `cafe consume` child, killed when dropped.
struct WorkerChild {
    child: Child,
    /// The metrics URL it printed, if asked for one.
    metrics: Option<String>,
}

impl Drop for WorkerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_worker(exe: &std::path::Path, application: &str, stream: &str, extra: &[&str]) -> Result<WorkerChild> {
    let mut child = Command::new(exe)
        .args([
            "consume",
            "--application",
            application,
            "--stream",
            stream,
            "--sink",
            "discard",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting `cafe consume`")?;
    let mut metrics = None;
    let stdout = child.stdout.as_mut().context("worker stdout")?;
    let mut reader = BufReader::new(stdout);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("the worker exited before it started");
        }
        if let Some(url) = line.trim().strip_prefix("metrics on ") {
            metrics = Some(url.to_owned());
        }
        if line.starts_with("worker ") {
            break;
        }
    }
    Ok(WorkerChild { child, metrics })
}

/// Sum of `cafe_consumer_records_total` over all shards.
async fn records_processed(http: &load::Http, url: &str) -> Result<u64> {
    let base = url.strip_suffix("/metrics").unwrap_or(url);
    let (_, body) = load::get_bytes(http, base, "/metrics").await?;
    let text = String::from_utf8_lossy(&body);
    let name = format!(
        "{}_{}_total",
        cafe_consumers::metrics::PREFIX,
        cafe_consumers::metrics::RECORDS
    );
    let mut sum = 0u64;
    for line in text.lines().filter(|l| l.starts_with(&name)) {
        if let Some(v) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            sum += v as u64;
        }
    }
    Ok(sum)
}

/// A memory figure of `pid` in bytes from `/proc/PID/status` (Linux): `VmRSS:` now,
/// `VmHWM:` its peak so far.
pub(crate) fn memory_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = status
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    Some(kb * 1024)
}

/// The ceiling: every shard read from TRIM_HORIZON to its tip with back-to-back
/// GetRecords through `retrieval::get_batch` (the call and the zero-copy deaggregation
/// the worker itself uses, nothing else), one task per shard: the least work that
/// delivers the user records. `budget` None asks for 10,000 records a call (the service maximum); Some aims
/// each call at that many bytes, as the worker does. Returns (user records, Kinesis
/// records, elapsed).
pub(crate) async fn raw_read(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    budget: Option<usize>,
) -> Result<(u64, u64, Duration)> {
    let shards = cafe_consumers::discovery::list_shards(kinesis, stream).await?;
    let started = Instant::now();
    let tasks: Vec<_> = shards
        .into_iter()
        .map(|s| {
            let (kinesis, stream) = (kinesis.clone(), stream.to_owned());
            tokio::spawn(async move {
                let mut it = start_iterator(&kinesis, &stream, &s.shard_id, &Checkpoint::TrimHorizon, None).await?;
                let (mut user, mut raw) = (0u64, 0u64);
                let mut limit = budget.map_or(10_000, |b| read_limit(b, MAX_RECORD_BYTES, 10_000));
                while let Some(iterator) = it {
                    let batch = get_batch(&kinesis, &s.shard_id, &iterator, limit, &Checkpoint::TrimHorizon).await?;
                    raw += batch.kinesis_records as u64;
                    user += batch.records.len() as u64;
                    if let (Some(b), Some(average)) = (budget, batch.kinesis_bytes.checked_div(batch.kinesis_records)) {
                        limit = read_limit(b, average, 10_000);
                    }
                    if batch.records.is_empty() && batch.millis_behind_latest == 0 {
                        break;
                    }
                    it = batch.next_iterator;
                }
                anyhow::Ok((user, raw))
            })
        })
        .collect();
    let (mut user, mut raw) = (0, 0);
    for t in tasks {
        let (u, r) = t.await??;
        user += u;
        raw += r;
    }
    Ok((user, raw, started.elapsed()))
}

/// The benchmark; prints its figures.
pub async fn consumer(cfg: &StackConfig, shards: u32, events: u32, failover: Duration) -> Result<()> {
    let exe = std::env::current_exe().context("locating the cafe binary")?;
    let clients = pipeline::Clients::new(cfg, false).await;
    let tag = cafe_events::EventId::new().as_uuid().simple().to_string();
    let tag = tag[tag.len() - 8..].to_owned();
    let stream = format!("bench-consume-{tag}");
    provision::ensure_stream(&clients.kinesis, &stream, shards).await?;

    // The stream, filled the way the command side fills it: KPL-aggregated events.
    let publisher = Publisher::new(
        KinesisSink::new(clients.kinesis.clone(), &stream),
        PublisherConfig::default(),
    );
    let mut kinesis_records = 0;
    for store in 0..events.div_ceil(5_000) {
        let batch: Vec<_> = (0..5_000.min(events - store * 5_000))
            .map(|sku| cafe_events::samples::restocked(store, sku))
            .collect::<Result<_, _>>()?;
        kinesis_records += publisher.publish(&batch).await?.kinesis_records;
    }
    println!("stream {stream}: {shards} shards, {events} events in {kinesis_records} Kinesis records (KPL-aggregated)");

    // Ceilings (fixed and byte-aimed limits), then the worker, then both again; the
    // fastest read of the four is the ceiling.
    let budget = Some(cafe_consumers::WorkerConfig::new("", "").read_bytes_budget);
    let mut reads = Vec::new();
    let mut raw = 0;
    for b in [None, budget] {
        let (user, r, t) = raw_read(&clients.kinesis, &stream, b).await?;
        if user != u64::from(events) {
            bail!("the raw read found {user} user records, expected {events}");
        }
        raw = r;
        reads.push(t);
    }
    let http = load::client(cfg)?;
    let application = format!("bench-{tag}");
    let worker = spawn_worker(
        &exe,
        &application,
        &stream,
        &["--metrics-listen", "127.0.0.1:0", "--idle-poll", "200ms"],
    )?;
    let started = Instant::now();
    let url = worker
        .metrics
        .clone()
        .context("the worker printed no metrics address")?;
    let pid = worker.child.id();
    let mut rss_max = 0u64;
    let mut rss_samples = Vec::new();
    let mut first: Option<(Instant, u64)> = None;
    loop {
        let done = records_processed(&http, &url).await.unwrap_or(0);
        if done > 0 && first.is_none() {
            first = Some((Instant::now(), done));
        }
        if let Some(rss) = memory_bytes(pid, "VmRSS:") {
            rss_max = rss_max.max(rss);
            rss_samples.push(rss);
        }
        if done >= u64::from(events) {
            break;
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the worker processed {done} of {events} records in 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let consumed_in = started.elapsed();
    // Steady state: from the first poll that saw progress to the end, which leaves out
    // process start, lease creation and the first take round.
    let steady_rate = first.map_or(0.0, |(at, done)| {
        (f64::from(events) - done as f64) / at.elapsed().as_secs_f64().max(f64::EPSILON)
    });
    drop(worker);
    for b in [None, budget] {
        reads.push(raw_read(&clients.kinesis, &stream, b).await?.2);
    }
    let ceiling_time = reads.iter().copied().min().unwrap_or(Duration::MAX);
    let ceiling = f64::from(events) / ceiling_time.as_secs_f64();
    let rate = f64::from(events) / consumed_in.as_secs_f64();

    // Failover: two idle workers at the default timings but `failover`; kill -9 one,
    // time until the other holds every lease.
    let application = format!("bench-failover-{tag}");
    let failover_arg = humantime::format_duration(failover).to_string();
    let extra = ["--failover", failover_arg.as_str(), "--start", "latest"];
    let mut doomed = spawn_worker(&exe, &application, &stream, &extra)?;
    let survivor = spawn_worker(&exe, &application, &stream, &extra)?;
    let leases = DynamoLeaseTable::new(clients.dynamodb.clone(), &cfg.names.leases_table, &application);
    let balanced_by = Instant::now() + Duration::from_secs(120);
    let owners = |ls: &[cafe_consumers::lease::Lease]| {
        let mut o: Vec<String> = ls.iter().filter_map(|l| l.owner.clone()).collect();
        o.sort();
        o.dedup();
        o
    };
    loop {
        let ls = leases.list().await?;
        if ls.len() == shards as usize && ls.iter().all(|l| l.owner.is_some()) && owners(&ls).len() == 2 {
            break;
        }
        if Instant::now() > balanced_by {
            bail!("the two failover workers never shared the leases");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    doomed.child.kill()?;
    let killed = Instant::now();
    loop {
        let ls = leases.list().await?;
        if owners(&ls).len() == 1 && ls.iter().all(|l| l.owner.is_some()) {
            break;
        }
        if killed.elapsed() > failover * 4 {
            bail!("no takeover within {:?}", failover * 4);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let takeover = killed.elapsed();
    drop(survivor);
    clients.kinesis.delete_stream().stream_name(&stream).send().await.ok();

    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let steady = {
        // The second half of the run: past start-up allocation.
        let tail = &rss_samples[rss_samples.len() / 2..];
        tail.iter().copied().max().unwrap_or(rss_max)
    };
    println!("consumer benchmark ({shards} shards, {events} events, release build recommended)");
    let secs: Vec<String> = reads.iter().map(|t| format!("{:.2}", t.as_secs_f64())).collect();
    println!(
        "  raw GetRecords ceiling   {ceiling:>10.0} records/s  ({raw} Kinesis records; fastest of 4 reads, s: {})",
        secs.join(" / ")
    );
    println!(
        "  consumer (no-op), steady {steady_rate:>10.0} records/s  = {:.0} % of the ceiling",
        100.0 * steady_rate / ceiling,
    );
    println!(
        "  consumer, whole run      {rate:>10.0} records/s  = {:.0} % ({:.2} s incl. process start and lease set-up)",
        100.0 * rate / ceiling,
        consumed_in.as_secs_f64()
    );
    println!(
        "  worker RSS               {:>10.1} MiB steady, {:.1} MiB peak",
        mib(steady),
        mib(rss_max)
    );
    println!(
        "  failover after kill -9   {:>10.1} s  (failover time {})",
        takeover.as_secs_f64(),
        humantime::format_duration(failover)
    );
    Ok(())
}
