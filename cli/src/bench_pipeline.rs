//! `cafe bench pipeline`: the whole pipeline (API, relay, every projector, the payment
//! saga) under an open-loop load, a fixed arrival rate per step, so a pipeline that
//! cannot keep up shows as latency and backlog rather than as a load generator that
//! slowed down. Per step: orders/s accepted, the API's p99, and per read model the
//! end-to-end latency p50/p99/max, with the CPU each process used.
//!
//! End to end is each event's `occurred_at` (set when the command is decided, as the
//! POST is served) to the moment its projector's store write returned, as every worker
//! measures it ([`cafe_consumers::metrics::END_TO_END_SECONDS`]): the time from
//! `POST` until a read of that model sees it, without a poller's own interval added.
//! Quantiles come from the histogram's buckets (a factor of √2 apart: within about
//! 20 %). The knee is the highest step at which every read model's p99 stays within a
//! second and every order sent was accepted (the payment-requests consumer is shown
//! but not counted: it waits on the payment function, so its latency is the saga's).
//! Figures, never pass/fail.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cafe_app::read_side::Reading;
use cafe_app::{Application, Settings, load};
use cafe_consumers::metrics::{LatencyCounts, Snapshot};
use cafe_localstack::{Stack, StackConfig};

/// How the projectors read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// GetRecords polling.
    Polling,
    /// Enhanced fan-out (SubscribeToShard).
    FanOut,
}

/// The knee's bound on every read model's p99.
const KNEE_P99: Duration = Duration::from_secs(1);
/// Longest the bench waits between steps for every projector to catch up.
const SETTLE: Duration = Duration::from_secs(60);

/// CPU seconds (user + system) of `pid` so far, from /proc (Linux).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // CLK_TCK is 100 on Linux.
    Some(ticks as f64 / 100.0)
}

/// The processes whose CPU is reported: this one (API, relay, projectors, the
/// embedded Kinesis and DynamoDB are separate), the stand-ins, the payment function.
async fn processes(stack: &Stack) -> Vec<(String, u32)> {
    let mut out = vec![("cafe (API, relay, projectors)".to_owned(), std::process::id())];
    for row in stack.status().await {
        if let Some(pid) = row.pid.and_then(|p| u32::try_from(p).ok()) {
            out.push((row.service.name().to_owned(), pid));
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            // comm is cut at 15 characters.
            if comm.trim() == "cafe-lambda-pay" {
                out.push((format!("payment function {pid}"), pid));
            }
        }
    }
    out
}

/// The parent of `pid`.
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds of each process and its live children (PostgreSQL's backends, a
/// supervisor's server), which /proc does not add to the parent until they exit.
fn cpu_of(procs: &[(String, u32)]) -> BTreeMap<String, f64> {
    let all: Vec<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    let parents: Vec<(u32, Option<u32>)> = all.iter().map(|p| (*p, parent(*p))).collect();
    procs
        .iter()
        .filter_map(|(name, pid)| {
            let own = cpu_seconds(*pid)?;
            let children: f64 = parents
                .iter()
                .filter(|(_, pp)| *pp == Some(*pid))
                .filter_map(|(c, _)| cpu_seconds(*c))
                .sum();
            Some((name.clone(), own + children))
        })
        .collect()
}

fn latencies(s: &Snapshot) -> BTreeMap<String, LatencyCounts> {
    s.end_to_end.iter().cloned().collect()
}

/// Waits until every shard of every application read nothing more (projection lag
/// zero) twice in a row, or `SETTLE` passes; returns how long it took.
async fn settle(metrics: &cafe_consumers::metrics::Metrics) -> Duration {
    let started = Instant::now();
    let mut calm = 0;
    while started.elapsed() < SETTLE {
        let s = metrics.snapshot();
        let caught_up = !s.shards.is_empty() && s.shards.iter().all(|x| x.projection_lag_seconds == Some(0.0));
        calm = if caught_up { calm + 1 } else { 0 };
        if calm >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    started.elapsed()
}

/// One step's figures.
#[derive(Debug)]
struct Step {
    rate: u32,
    sent: u64,
    accepted: usize,
    accepted_per_s: f64,
    api_p99: Duration,
    /// Per application: p50, p99, max (seconds) and events.
    models: Vec<(String, f64, f64, f64, u64)>,
    cpu: Vec<(String, f64)>,
    settle: Duration,
}

impl Step {
    /// Every read model within the knee's bound, every order accepted. The
    /// payment-requests consumer is not a read model: it waits on the payment function
    /// (its requests in flight are bounded), so its latency is the saga's, reported
    /// beside the read models, not part of the knee.
    fn kept_up(&self) -> bool {
        self.accepted as u64 == self.sent
            && self.api_p99 <= KNEE_P99
            && self
                .models
                .iter()
                .filter(|m| is_read_model(&m.0))
                .all(|m| m.2 <= KNEE_P99.as_secs_f64())
    }
}

fn is_read_model(application: &str) -> bool {
    cafe_projections::catalog::ReadModel::ALL
        .iter()
        .any(|m| m.name() == application)
}

/// Runs the steps in each mode and prints their figures and the knee.
pub async fn pipeline(
    cfg: &StackConfig,
    stack: &Stack,
    rates: &[u32],
    step: Duration,
    modes: &[Mode],
    idle_poll: Option<Duration>,
    saga: bool,
) -> Result<()> {
    println!(
        "bench pipeline: open loop, {} per step, rates {:?} orders/s; end to end = occurred_at -> store write returned",
        humantime::format_duration(step),
        rates
    );
    for &mode in modes {
        let mut settings = Settings::local(cfg.clone());
        settings.reading = Reading {
            idle_poll,
            fan_out: mode == Mode::FanOut,
        };
        // The dashboard's monitor reads the stream too; the bench measures the pipeline.
        settings.monitor = None;
        settings.worker_id = format!("bench-{}", std::process::id());
        // Without the payment function the read side has the machine to itself: what
        // the read models sustain when the saga is not competing for the cores.
        settings.saga = saga;
        let running = Application::build(settings).await?.start().await?;
        let base = format!("http://{}", running.addr());
        let http = load::client(running.config())?;
        load::seed_menu(&http, &base).await.context("publishing the menu")?;
        let metrics = running.consumer_metrics().clone();
        // Warm-up: connections, leases, the function's first invocations.
        let _ = load::orders(&http, &base, 20, 256, tokio::time::sleep(Duration::from_secs(5))).await;
        settle(&metrics).await;
        let procs = processes(stack).await;
        let mode_name = match mode {
            Mode::Polling => format!(
                "polling (caught-up shards read every {})",
                humantime::format_duration(idle_poll.unwrap_or(Duration::from_secs(1)))
            ),
            Mode::FanOut => "enhanced fan-out".to_owned(),
        };
        println!("\nmode: {mode_name}");
        let mut steps = Vec::new();
        for &rate in rates {
            let before = latencies(&metrics.snapshot());
            let cpu0 = cpu_of(&procs);
            let wall = Instant::now();
            let report = load::orders(&http, &base, rate, 4096, tokio::time::sleep(step)).await;
            let settled = settle(&metrics).await;
            let secs = wall.elapsed().as_secs_f64();
            let after = latencies(&metrics.snapshot());
            let cpu1 = cpu_of(&procs);
            let models = after
                .iter()
                .map(|(app, now)| {
                    let d = before.get(app).map_or_else(|| now.clone(), |b| now.since(b));
                    let q = |p: f64| d.quantile(p).unwrap_or(0.0);
                    (app.clone(), q(0.5), q(0.99), q(1.0), d.count())
                })
                .collect();
            let cpu = cpu1
                .iter()
                .map(|(name, s)| (name.clone(), (s - cpu0.get(name).copied().unwrap_or(*s)) / secs))
                .filter(|(_, c)| *c >= 0.005)
                .collect();
            let s = Step {
                rate,
                sent: report.sent,
                accepted: report.accepted.len(),
                accepted_per_s: report.accepted.len() as f64 / report.elapsed.as_secs_f64().max(f64::EPSILON),
                api_p99: report.quantile(0.99),
                models,
                cpu,
                settle: settled,
            };
            print_step(&s);
            steps.push(s);
        }
        match steps.iter().filter(|s| s.kept_up()).map(|s| s.rate).max() {
            Some(knee) => println!(
                "knee ({mode_name}): {knee} orders/s (the highest step with every read model's p99 <= {} s)",
                KNEE_P99.as_secs()
            ),
            None => println!("knee ({mode_name}): below the lowest step"),
        }
        running.stop(Duration::from_secs(20)).await?;
    }
    Ok(())
}

fn print_step(s: &Step) {
    println!(
        "  {:>5} orders/s asked: {} of {} accepted ({:.0}/s), API p99 {} ms; caught up {:.1} s after the step{}",
        s.rate,
        s.accepted,
        s.sent,
        s.accepted_per_s,
        s.api_p99.as_millis(),
        s.settle.as_secs_f64(),
        if s.kept_up() {
            ""
        } else {
            "  [p99 over 1 s or orders refused]"
        }
    );
    println!(
        "    {:<18} {:>9} {:>9} {:>9} {:>9}",
        "read model", "p50 ms", "p99 ms", "max* ms", "events"
    );
    for (app, p50, p99, max, n) in &s.models {
        let name = if is_read_model(app) {
            app.clone()
        } else {
            format!("({app})")
        };
        println!(
            "    {:<18} {:>9.0} {:>9.0} {:>9.0} {:>9}",
            name,
            p50 * 1e3,
            p99 * 1e3,
            max * 1e3,
            n
        );
    }
    let cpu: Vec<String> = s.cpu.iter().map(|(n, c)| format!("{n} {c:.2}")).collect();
    println!("    CPU (cores): {}", cpu.join(", "));
    println!(
        "    (* the upper bound of the slowest event's histogram bucket; (payment-requests) feeds the saga, not a read model)"
    );
}
