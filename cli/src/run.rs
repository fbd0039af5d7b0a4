//! `cafe run`, the main job: the whole pipeline under a load of real HTTP orders, then
//! a verdict on whether every part kept up, then a stop that cannot hang.
//!
//! Health is judged per part once the load stops: the API must have accepted every
//! order, 99 % of them within a second; every consumer application (each projector, the
//! payment-requests consumer) must pass what was on the stream when the load stopped,
//! read from its checkpoints; the payment function must empty its queue. A part that
//! kept up does so within [`KEPT_UP`]; one whose backlog grew through the run takes
//! longer (how much longer is watched for up to [`SETTLE`] and printed). The job exits 1
//! when any part did not keep up.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cafe_consumers::lease::{DynamoLeaseTable, LeaseTable};
use cafe_localstack::{Stack, smoke};
use cafe_projections::query::Reads;
use tokio_util::sync::CancellationToken;

use cafe_app::app::{Application, Settings, Stopped};
use cafe_app::{load, payments, read_side};
use cafe_consumers::cloudwatch::CloudWatchConfig;

/// A part kept up when it is through its backlog this soon after the load stops: a
/// projector checkpoints once a second, so one that keeps up is a second or two behind;
/// one whose backlog grew through the run needs longer, the longer the run.
pub const KEPT_UP: Duration = Duration::from_secs(5);
/// How long the job watches the parts catch up at all (how far behind a slow one was).
pub const SETTLE: Duration = Duration::from_secs(30);
/// Longest each stage of the stop may take before it is abandoned and reported.
pub const STOP_DEADLINE: Duration = Duration::from_secs(20);
/// Longest a bounded run waits, after the verdicts, for the projectors to pass what the
/// saga appended last.
const FINAL_DRAIN: Duration = Duration::from_secs(20);
/// The API keeps up when it accepts every order it is sent, answering 99 % within this.
/// The load is open loop, so an API that cannot keep up shows as queueing: latency that
/// grows with the run, far past a second within a minute.
const API_P99: Duration = Duration::from_secs(1);

/// What the main job is asked to do.
#[derive(Debug, Clone)]
pub struct RunArgs {
    /// Run for this long (None: until Ctrl-C).
    pub duration: Option<Duration>,
    /// Orders per second.
    pub rate: u32,
    /// Use the SDK's default chain instead of the local stack.
    pub aws: bool,
    /// Where the API listens.
    pub listen: SocketAddr,
    /// Publish the consumer metrics to CloudWatch this often (None: not at all).
    pub cloudwatch_every: Option<Duration>,
}

/// Where a part's backlog is read.
#[derive(Debug, Clone, Copy)]
enum Backlog {
    /// A consumer application's checkpoints, against the tapped stream.
    Application(&'static str),
    /// The payment queue's visible messages.
    PaymentQueue,
}

/// One part's verdict.
#[derive(Debug, Clone)]
struct PartHealth {
    name: &'static str,
    backlog: Backlog,
    /// Its backlog when the load stopped (records, or messages for the function).
    at_end: Option<u64>,
    /// Still left when the settle time ran out (or when it caught up: 0).
    left: u64,
    /// When it first had nothing left, counted from the end of the load.
    caught_up: Option<Duration>,
}

impl PartHealth {
    fn new(name: &'static str, backlog: Backlog) -> Self {
        PartHealth {
            name,
            backlog,
            at_end: None,
            left: 0,
            caught_up: None,
        }
    }
}

/// The first Ctrl-C or SIGTERM cancels `interrupt` (the job wraps up: settle is cut
/// short, the stop still drains within its deadlines); a second one ends the process
/// at once with 130, so no stop can turn into a hang.
fn watch_signals(interrupt: CancellationToken) {
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        eprintln!(
            "stopping: draining within {}s per stage (again to quit now)",
            STOP_DEADLINE.as_secs()
        );
        interrupt.cancel();
        crate::shutdown_signal().await;
        eprintln!("second signal: exiting without draining");
        std::process::exit(130);
    });
}

/// Runs the main job; the exit code says whether the pipeline kept up.
pub async fn run(stack: &Stack, args: RunArgs) -> Result<std::process::ExitCode> {
    let cfg = stack.config();
    let interrupt = CancellationToken::new();
    watch_signals(interrupt.clone());
    if !args.aws {
        crate::up(stack, false).await?;
        crate::print_status(stack, false).await?;
    }
    let mut settings = Settings::local(cfg.clone());
    settings.aws = args.aws;
    settings.listen = args.listen;
    settings.service = cafe_app::app::service_config_from_env()?;
    settings.faults = cafe_localstack::faults::FaultInjector::from_env()?;
    // In AWS the payment function and its event source mapping are deployed; here they
    // run under the Lambda emulator.
    settings.saga = !args.aws;
    settings.worker_id = format!("run-{}", std::process::id());
    settings.cloudwatch = args.cloudwatch_every.map(|every| CloudWatchConfig {
        every,
        ..CloudWatchConfig::new(&cfg.names.metrics_namespace, &cfg.names.stream)
    });
    let app = Application::build(settings).await?;
    let clients = app.clients().clone();
    let stream = &cfg.names.stream;
    let report = smoke::round_trip_with(&clients.kinesis, stream)
        .await
        .context("smoke round-trip")?;
    println!(
        "smoke: {} ({} bytes) published to {}/{} at {} and read back intact in {} ms",
        report.event_type,
        report.bytes,
        stream,
        report.shard_id,
        report.sequence_number,
        report.elapsed.as_millis()
    );

    let running = app.start().await?;
    let endpoints = running.endpoints().clone();
    let analytics = read_side::analytics(&endpoints).await?;
    let documents = match running.reads() {
        Some(Reads::Serving(s)) => s.current().await?.menu.source().clone(),
        Some(Reads::Fixed(m)) => m.menu.source().clone(),
        None => bail!("the main job serves the queries"),
    };
    let payments_queue = running.payments_queue().to_owned();
    let base = format!("http://{}", running.addr());
    println!("command API (and queries) on {base}; outbox relay and projectors running");
    println!("lag dashboard on {base}/dashboard (its data: {base}/v1/lag; Prometheus: {base}/metrics)");
    println!("a bearer token for your own requests: cafe token --role customer --sub cust-1 (or staff --store, hq)");
    let http = load::client(running.config())?;
    load::seed_menu(&http, &base).await.context("publishing the menu")?;
    let mut tap = load::StreamTap::new(clients.kinesis.clone(), stream).await?;

    let rate = args.rate;
    match args.duration {
        Some(d) => println!("placing orders for {} at {rate}/s", humantime::format_duration(d)),
        None => println!("placing orders at {rate}/s; Ctrl-C to stop"),
    }
    let until = {
        let interrupt = interrupt.clone();
        async move {
            match args.duration {
                Some(d) => tokio::select! { _ = tokio::time::sleep(d) => {}, _ = interrupt.cancelled() => {} },
                None => interrupt.cancelled().await,
            }
        }
    };
    // Up to 1,024 requests in flight: enough that a slow API shows as latency and a
    // shortfall of accepted orders, not as a load generator that quietly slowed down.
    let load = load::orders(&http, &base, rate, 1024, until).await;
    let load_ended = Instant::now();

    // Every accepted order's event must reach the stream (bounded wait).
    let deadline = load_ended + Duration::from_secs(15);
    loop {
        tap.poll().await?;
        if load.accepted.is_subset(&tap.orders_seen) || Instant::now() > deadline || interrupt.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Health: every consumer application passes what was on the stream when the load
    // stopped (the saga keeps appending payment outcomes after it, so the tip itself
    // moves on), and the payment queue empties.
    tap.poll().await?;
    let watermarks: Vec<(String, String)> = tap
        .logs()
        .filter_map(|(shard, log)| log.tip().map(|tip| (shard.to_owned(), tip.to_owned())))
        .collect();
    let mut parts: Vec<PartHealth> = running
        .applications()
        .into_iter()
        .map(|app| PartHealth::new(app, Backlog::Application(app)))
        .collect();
    if running.runs_saga() {
        parts.push(PartHealth::new("payment function", Backlog::PaymentQueue));
    }
    let settle_until = load_ended + SETTLE;
    loop {
        tap.poll().await?;
        let now = load_ended.elapsed();
        for part in &mut parts {
            let n = match part.backlog {
                Backlog::Application(app) => {
                    backlog(&clients.dynamodb, &cfg.names.leases_table, app, &tap, &watermarks).await
                }
                // What waits to be received; a message that failed and waits out its
                // visibility timeout (the flaky customer's retry) is a retry, not lag.
                Backlog::PaymentQueue => match payments::counts(&clients.sqs, &payments_queue).await {
                    Ok((visible, _)) => visible,
                    Err(e) => {
                        tracing::warn!(error = %e, "could not read the payment queue's depth");
                        u64::MAX
                    }
                },
            };
            part.at_end.get_or_insert(n);
            part.left = n;
            if n == 0 && part.caught_up.is_none() {
                part.caught_up = Some(now);
            }
        }
        if parts.iter().all(|p| p.caught_up.is_some()) || Instant::now() > settle_until || interrupt.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Read a few accepted orders back through the query endpoints, each from its read
    // model, waiting (bounded) for the projectors with `min_version`.
    let mut read_back = 0usize;
    let mut settled = 0usize;
    let mut sample: Vec<&String> = load.accepted.iter().collect();
    sample.sort();
    for id in sample.into_iter().take(3) {
        let mut lines = read_side::read_back(&http, &base, id).await;
        let total = lines.first().and_then(|l| l.total_cents);
        lines.extend(read_side::read_back_direct(&documents, &analytics, id, total).await);
        let payment = read_side::read_back_payment(&http, &base, id).await;
        settled += usize::from(payment.ok);
        read_back += usize::from(lines.iter().all(|l| l.ok));
        lines.push(payment);
        for l in lines {
            println!("  {:<5} {:<24} {}", if l.ok { "ok" } else { "MISS" }, l.model, l.detail);
        }
    }

    // Before the stop: the projectors pass everything on the stream by then, the
    // payment outcomes the saga appended after the load stopped included, so a bounded
    // run leaves read models holding the whole history (what `cafe replay verify`
    // compares a rebuild with). Also when a part fell behind (a loaded machine, the
    // payment function catching up): it may still catch up within the bound, and the
    // read models should not end short of what the event store holds for want of a
    // look. Bounded; no verdict depends on it.
    if !interrupt.is_cancelled() {
        let deadline = Instant::now() + FINAL_DRAIN;
        let mut previous_tips: Vec<(String, String)> = Vec::new();
        while Instant::now() < deadline && !interrupt.is_cancelled() {
            let queue_empty =
                !running.runs_saga() || matches!(payments::counts(&clients.sqs, &payments_queue).await, Ok((0, 0)));
            tap.poll().await?;
            let tips: Vec<(String, String)> = tap
                .logs()
                .filter_map(|(shard, log)| log.tip().map(|tip| (shard.to_owned(), tip.to_owned())))
                .collect();
            let mut left = 0;
            for app in running.applications() {
                left += backlog(&clients.dynamodb, &cfg.names.leases_table, app, &tap, &tips).await;
            }
            // The tap reads the stream a page at a time: only tips that did not move
            // since the last look are the stream's end.
            if queue_empty && left == 0 && tips == previous_tips {
                break;
            }
            previous_tips = tips;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // The stop: each stage has a deadline; what it leaves undone is reported.
    let Stopped {
        relay,
        projectors: reports,
        saga,
        undone,
    } = running.stop(STOP_DEADLINE).await?;

    let secs = load.elapsed.as_secs_f64().max(f64::EPSILON);
    let accepted_rate = load.accepted.len() as f64 / secs;
    let missing = load.accepted.difference(&tap.orders_seen).count();
    println!("summary:");
    println!("  orders sent          {:>10}", load.sent);
    println!(
        "  orders accepted      {:>10}  ({accepted_rate:.0}/s of {rate}/s asked)",
        load.accepted.len()
    );
    println!(
        "  orders refused       {:>10}  (statuses {:?})",
        load.refused.len(),
        dedup(&load.refused)
    );
    println!(
        "  latency p50 / p99    {:>7} ms / {} ms",
        load.quantile(0.5).as_millis(),
        load.quantile(0.99).as_millis()
    );
    println!("  orders on stream     {:>10}", load.accepted.len() - missing);
    println!("  events on stream     {:>10}", tap.events);
    println!("  undecodable records  {:>10}", tap.undecodable);
    if let Some(relay) = &relay {
        println!("  relay republished    {:>10}", relay.published);
    }
    for (name, r) in &reports {
        println!("  projector {:<14} {:>6} records, {} parked", name, r.records, r.parked);
    }
    if let Some(saga) = &saga {
        let c = saga.counts;
        println!(
            "  payment invocations  {:>10}  ({} failed whole; {} messages in, {} done, {} reported failed)",
            c.invocations, c.failed_invocations, c.received, c.deleted, c.reported_failures
        );
        println!("  payments dead-lettered {:>8}", saga.dead_letters);
        println!("  payments waiting     {:>10}  (still on the queue)", saga.waiting);
    }
    println!("  orders read back     {:>10}  (from every read model)", read_back);
    println!(
        "  sampled orders paid  {:>10}  (or declined; read back through the orders read model)",
        settled
    );
    println!("  elapsed              {:>10.1} s", secs);

    let p99 = load.quantile(0.99);
    let api_kept_up = load.refused.is_empty() && p99 <= API_P99;
    println!(
        "health (backlog when the load stopped -> what is left of it; a part keeps up when it is through within {}s):",
        KEPT_UP.as_secs()
    );
    println!(
        "  {:<4} {:<22} {} of {} orders accepted ({accepted_rate:.0}/s), p99 {} ms",
        if api_kept_up { "ok" } else { "SLOW" },
        "command API",
        load.accepted.len(),
        load.sent,
        p99.as_millis()
    );
    let kept_up = |p: &PartHealth| p.caught_up.is_some_and(|t| t <= KEPT_UP);
    for p in &parts {
        let verdict = if kept_up(p) { "ok" } else { "BEHIND" };
        let when = p.caught_up.map_or_else(
            || format!("{} left", p.left),
            |t| format!("caught up in {:.1} s", t.as_secs_f64()),
        );
        println!(
            "  {verdict:<4} {:<22} {:>7} -> {when}",
            p.name,
            p.at_end.unwrap_or_default()
        );
    }
    for u in &undone {
        println!("  stop: {u}");
    }
    if !args.aws {
        println!("the stack stays up: `cafe stack status`, `cafe stack down`");
    }
    if missing > 0 || tap.undecodable > 0 {
        bail!("{missing} accepted orders never reached the stream");
    }
    if let Some(saga) = &saga
        && !load.accepted.is_empty()
        && saga.counts.invocations == 0
    {
        bail!("the payment function was never invoked");
    }
    if !load.accepted.is_empty() && read_back == 0 {
        bail!("no accepted order could be read back from every read model");
    }
    let behind: Vec<&str> = parts
        .iter()
        .filter(|p| !kept_up(p))
        .map(|p| p.name)
        .chain((!api_kept_up).then_some("command API"))
        .collect();
    if !behind.is_empty() {
        bail!("the pipeline did not keep up at {rate} orders/s: {}", behind.join(", "));
    }
    if !undone.is_empty() {
        bail!("the stop left work undone: {}", undone.join("; "));
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// User records on the tapped stream, up to each shard's watermark, that `application`
/// has not checkpointed past. A lease table that cannot be read counts as everything
/// behind (and is logged).
async fn backlog(
    dynamodb: &aws_sdk_dynamodb::Client,
    leases_table: &str,
    application: &str,
    tap: &load::StreamTap,
    watermarks: &[(String, String)],
) -> u64 {
    let leases = match DynamoLeaseTable::new(dynamodb.clone(), leases_table, application)
        .list()
        .await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(application, error = %e, "could not read the leases");
            Vec::new()
        }
    };
    let not_started = cafe_consumers::lease::Checkpoint::TrimHorizon;
    tap.logs()
        .filter_map(|(shard, log)| {
            let (_, watermark) = watermarks.iter().find(|(s, _)| s == shard)?;
            let checkpoint = leases
                .iter()
                .find(|l| l.shard_id == shard)
                .map_or(&not_started, |l| &l.checkpoint);
            Some(log.behind_upto(checkpoint, watermark))
        })
        .sum()
}

fn dedup(statuses: &[u16]) -> Vec<u16> {
    let mut s = statuses.to_vec();
    s.sort_unstable();
    s.dedup();
    s
}
