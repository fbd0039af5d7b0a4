//! `cafe lag`: the live consumer applications' lag in time, sampled for a while, and its
//! p99 and maximum per application: what a replay's governor holds to its objective,
//! read without a replay (the baseline its figures compare with).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use cafe_consumers::lag::{LagProbe, p99};
use cafe_localstack::StackConfig;
use cafe_projections::catalog::ReadModel;
use clap::Args;

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
    #[arg(long, default_value = "1s", value_parser = positive_duration)]
    every: Duration,
    /// How long to sample.
    #[arg(long = "for", default_value = "10s", value_parser = positive_duration)]
    duration: Duration,
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than zero".to_owned()),
        Err(e) => Err(e.to_string()),
    }
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
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); applications.len()];
    let started = Instant::now();
    let mut tick = tokio::time::interval(args.every);
    while started.elapsed() < args.duration {
        tick.tick().await;
        for (i, (_, lag)) in probe.per_application().await?.into_iter().enumerate() {
            if let Some(s) = samples.get_mut(i) {
                s.push(lag);
            }
        }
    }
    println!(
        "{:<18} {:>8} {:>10} {:>10}",
        "application", "samples", "p99 ms", "max ms"
    );
    for (app, s) in applications.iter().zip(&samples) {
        let max = s.iter().max().copied().unwrap_or_default();
        println!(
            "{app:<18} {:>8} {:>10} {:>10}",
            s.len(),
            p99(s).as_millis(),
            max.as_millis()
        );
    }
    Ok(ExitCode::SUCCESS)
}
