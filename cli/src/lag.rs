//! `cafe lag`: the live consumer applications' lag in time, sampled for a while: per
//! application its p99 and maximum (what a replay's governor holds to its objective,
//! read without a replay: the baseline its figures compare with) and a Burrow-style
//! status per shard and rolled up (`cafe_consumers::status`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use std::io::{IsTerminal, Write};

use anyhow::{Context, Result};
use cafe_app::dashboard::Dashboard;
use cafe_consumers::lag::p99;
use cafe_consumers::monitor::MonitorConfig;
use cafe_consumers::status::{Rollup, Rules, Sample, roll_up};
use cafe_localstack::StackConfig;
use clap::{Args, Subcommand};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Clients;

#[derive(Debug, Args)]
pub struct LagArgs {
    #[command(subcommand)]
    action: Option<LagAction>,
    /// Reach the AWS services the SDK's default chain names instead of the local stack.
    #[arg(long)]
    aws: bool,
    /// Applications to watch (comma-separated; default: every read model's projector and
    /// the payment-requests consumer).
    #[arg(long, value_delimiter = ',')]
    application: Vec<String>,
    /// How often to sample.
    #[arg(long, global = true, default_value = "1s", value_parser = crate::positive_duration)]
    every: Duration,
    /// How long to sample.
    #[arg(long = "for", default_value = "10s", value_parser = crate::positive_duration)]
    duration: Duration,
    /// A shard whose checkpoint stands still this long while records wait (and its
    /// owner renews) is STALL.
    #[arg(long, global = true, default_value = "30s", value_parser = crate::positive_duration)]
    stall_after: Duration,
    /// A shard whose owner's lease counter stands still this long is DEAD (the
    /// workers' failover time).
    #[arg(long, global = true, default_value = "10s", value_parser = crate::positive_duration)]
    dead_after: Duration,
    /// Print JSON: per application its status, lag p99 and maximum, and each shard's
    /// status.
    #[arg(long, conflicts_with = "watch")]
    json: bool,
    /// Refresh a table in place every `--every` until Ctrl-C: per application its
    /// status, lag, MillisBehindLatest, events/s, end-to-end p99 and parked records.
    #[arg(long)]
    watch: bool,
    /// With --watch: also a line per shard.
    #[arg(long, requires = "watch")]
    shards: bool,
    /// With --watch: read a running pipeline's `/v1/lag` (e.g. http://127.0.0.1:8080),
    /// which adds what only its workers know (events/s, MillisBehindLatest, end-to-end
    /// latency), instead of sampling the stream and the lease table from here.
    #[arg(long, requires = "watch")]
    from: Option<String>,
}

#[derive(Debug, Subcommand)]
enum LagAction {
    /// Serve the lag dashboard (`/dashboard`, `/v1/lag`) on its own, for consumers
    /// that run elsewhere, until Ctrl-C.
    Serve {
        /// Where to listen (port 0 picks a free one; the address is printed).
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: std::net::SocketAddr,
        /// Reach the AWS services the SDK's default chain names instead of the local stack.
        #[arg(long)]
        aws: bool,
    },
}

/// One application's figures.
#[derive(Debug, Serialize)]
struct AppLag {
    application: String,
    samples: usize,
    p99_ms: u64,
    max_ms: u64,
    #[serde(flatten)]
    rollup: Rollup,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn monitor_config(args: &LagArgs) -> MonitorConfig {
    MonitorConfig {
        every: args.every,
        rules: Rules {
            stall_after: args.stall_after,
            dead_after: args.dead_after,
        },
        ..MonitorConfig::default()
    }
}

/// The lag monitor (and replays reader) run from here, until `stop`.
async fn local_dashboard(cfg: &StackConfig, args: &LagArgs, aws: bool, stop: &CancellationToken) -> Dashboard {
    let clients = Clients::new(cfg, aws).await;
    Dashboard::start(
        cfg,
        &clients,
        applications(args),
        None,
        monitor_config(args),
        stop.clone(),
    )
}

/// `cafe lag serve`: the dashboard alone.
async fn serve(cfg: &StackConfig, args: &LagArgs, listen: std::net::SocketAddr, aws: bool) -> Result<ExitCode> {
    let stop = CancellationToken::new();
    let dashboard = local_dashboard(cfg, args, aws, &stop).await;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    println!("lag dashboard on http://{addr}/dashboard (data: http://{addr}/v1/lag)");
    axum::serve(listener, dashboard.router())
        .with_graceful_shutdown(crate::shutdown_signal())
        .await?;
    stop.cancel();
    Ok(ExitCode::SUCCESS)
}

/// `cafe lag --watch`: the table, refreshed in place (a block per refresh when not on a
/// terminal).
async fn watch(cfg: &StackConfig, args: &LagArgs) -> Result<ExitCode> {
    let stop = CancellationToken::new();
    let local = match &args.from {
        Some(_) => None,
        None => Some(local_dashboard(cfg, args, args.aws, &stop).await),
    };
    let http = crate::load::client(cfg)?;
    let tty = std::io::stdout().is_terminal();
    let mut tick = tokio::time::interval(args.every);
    let signal = crate::shutdown_signal();
    tokio::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            _ = tick.tick() => {}
        }
        let page = match (&local, &args.from) {
            (Some(d), _) => d.page(),
            (None, Some(base)) => match crate::load::get_bytes(&http, base.trim_end_matches('/'), "/v1/lag").await {
                Ok((200, body)) => serde_json::from_slice(&body).context("reading /v1/lag")?,
                Ok((status, _)) => anyhow::bail!("{base}/v1/lag answered {status}"),
                Err(e) => return Err(e.context(format!("reaching {base}"))),
            },
            (None, None) => unreachable!("one of the two is set"),
        };
        if page.lag.at.is_none() {
            continue; // the first look is still under way
        }
        let text = cafe_app::dashboard::table(&page, args.shards);
        let mut out = std::io::stdout().lock();
        let written = if tty {
            write!(out, "\x1b[H\x1b[2J{text}")
        } else {
            writeln!(out, "{text}")
        };
        // A closed pipe (`| head`) ends the watch quietly.
        if written.and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    stop.cancel();
    Ok(ExitCode::SUCCESS)
}

fn applications(args: &LagArgs) -> Vec<String> {
    if args.application.is_empty() {
        cafe_app::dashboard::applications()
    } else {
        args.application.clone()
    }
}

pub async fn run(cfg: &StackConfig, args: LagArgs) -> Result<ExitCode> {
    if let Some(LagAction::Serve { listen, aws }) = args.action {
        return serve(cfg, &args, listen, aws).await;
    }
    if args.watch {
        return watch(cfg, &args).await;
    }
    let clients = Clients::new(cfg, args.aws).await;
    let applications = applications(&args);
    let probe = cafe_app::read_side::lag_probe(cfg, &clients, applications.clone());
    // Per application: the worst held shard's lag at each look, and each shard's window.
    let mut worst: Vec<Vec<Duration>> = vec![Vec::new(); applications.len()];
    let mut windows: Vec<BTreeMap<String, Vec<Sample>>> = vec![BTreeMap::new(); applications.len()];
    let started = Instant::now();
    let mut tick = tokio::time::interval(args.every);
    while started.elapsed() < args.duration {
        tick.tick().await;
        for (i, (_, shards)) in probe.samples().await?.into_iter().enumerate() {
            let held = shards.iter().filter(|(_, s)| s.owner.is_some()).map(|(_, s)| s.lag);
            if let Some(w) = worst.get_mut(i) {
                w.push(held.max().unwrap_or_default());
            }
            if let Some(w) = windows.get_mut(i) {
                for (shard, sample) in shards {
                    w.entry(shard).or_default().push(sample);
                }
            }
        }
    }
    let rules = Rules {
        stall_after: args.stall_after,
        dead_after: args.dead_after,
    };
    let report: Vec<AppLag> = applications
        .iter()
        .zip(worst.iter().zip(&windows))
        .map(|(app, (w, shards))| AppLag {
            application: app.clone(),
            samples: w.len(),
            p99_ms: millis(p99(w)),
            max_ms: millis(w.iter().max().copied().unwrap_or_default()),
            rollup: roll_up(shards.iter().map(|(k, v)| (k.as_str(), v.as_slice())), &rules),
        })
        .collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<18} {:<7} {:>8} {:>10} {:>10}  shards",
        "application", "status", "samples", "p99 ms", "max ms"
    );
    for a in &report {
        let shards: Vec<String> = a
            .rollup
            .shards
            .iter()
            .map(|(shard, status)| format!("{}={status:?}", shard.trim_start_matches("shardId-")))
            .collect();
        println!(
            "{:<18} {:<7} {:>8} {:>10} {:>10}  {}",
            a.application,
            format!("{:?}", a.rollup.status).to_uppercase(),
            a.samples,
            a.p99_ms,
            a.max_ms,
            shards.join(" ").to_uppercase()
        );
    }
    Ok(ExitCode::SUCCESS)
}
