//! `cafe lag`: the live consumer applications' lag in time, sampled for a while: per
//! application its p99 and maximum (what a replay's governor holds to its objective,
//! read without a replay: the baseline its figures compare with) and a Burrow-style
//! status per shard and rolled up (`cafe_consumers::status`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use cafe_consumers::lag::{LagProbe, p99};
use cafe_consumers::status::{Rollup, Rules, Sample, roll_up};
use cafe_localstack::StackConfig;
use cafe_projections::catalog::ReadModel;
use clap::Args;
use serde::Serialize;

use crate::pipeline::Clients;

#[derive(Debug, Args)]
pub struct LagArgs {
    /// Reach the AWS services the SDK's default chain names instead of the local stack.
    #[arg(long)]
    aws: bool,
    /// Applications to watch (comma-separated; default: every read model's projector and
    /// the payment-requests consumer).
    #[arg(long, value_delimiter = ',')]
    application: Vec<String>,
    /// How often to sample.
    #[arg(long, default_value = "1s", value_parser = crate::positive_duration)]
    every: Duration,
    /// How long to sample.
    #[arg(long = "for", default_value = "10s", value_parser = crate::positive_duration)]
    duration: Duration,
    /// A shard whose checkpoint stands still this long while records wait (and its
    /// owner renews) is STALL.
    #[arg(long, default_value = "30s", value_parser = crate::positive_duration)]
    stall_after: Duration,
    /// A shard whose owner's lease counter stands still this long is DEAD (the
    /// workers' failover time).
    #[arg(long, default_value = "10s", value_parser = crate::positive_duration)]
    dead_after: Duration,
    /// Print JSON: per application its status, lag p99 and maximum, and each shard's
    /// status.
    #[arg(long)]
    json: bool,
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

pub async fn run(cfg: &StackConfig, args: LagArgs) -> Result<ExitCode> {
    let clients = Clients::new(cfg, args.aws).await;
    let applications = if args.application.is_empty() {
        let mut apps: Vec<String> = ReadModel::ALL.iter().map(|m| m.name().to_owned()).collect();
        apps.push(cafe_lambda_payment::requests::APPLICATION.to_owned());
        apps
    } else {
        args.application
    };
    let probe = LagProbe {
        kinesis: clients.kinesis.clone(),
        stream: cfg.names.stream.clone(),
        dynamodb: clients.dynamodb.clone(),
        leases_table: cfg.names.leases_table.clone(),
        applications: applications.clone(),
    };
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
