//! `cafe`: the one command operators and developers use.
//!
//! - `cafe stack up|down|status|env`: the local stand-ins for AWS (see `infra/local`).
//! - `cafe run [--for 60s]`: the pipeline against the local stack, until Ctrl-C or for
//!   a bounded time with a summary.
//!
//! Argument errors exit with code 2 (clap's convention); runtime failures exit 1.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use cafe_localstack::{Stack, StackConfig, UpOutcome, emulators, provision, smoke};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "cafe", version, about = "CloudCafe: event-sourced coffee-chain pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage the local stack of AWS stand-ins on 127.0.0.1.
    Stack {
        #[command(subcommand)]
        action: StackAction,
    },
    /// Bring the stack up and run the pipeline until Ctrl-C (or for a bounded time).
    Run {
        /// Run for this long, print a summary and exit (e.g. `60s`, `5m`).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Sample events published per second.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        rate: u32,
        /// Do not start the local stack: use the AWS SDK's default chain (credentials,
        /// region, and `AWS_ENDPOINT_URL_*` if set), i.e. real AWS.
        #[arg(long)]
        aws: bool,
    },
}

#[derive(Debug, Subcommand)]
enum StackAction {
    /// Start what is not running, wait for health, provision, print the status table.
    Up {
        /// Stop everything and delete all local data first.
        #[arg(long)]
        fresh: bool,
    },
    /// Stop the processes this stack started (and nothing else).
    Down,
    /// Print the status table; exits 1 if any service is unhealthy.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print `export` lines that point the AWS SDK and our binaries at the stack.
    Env,
    /// Run one embedded emulator in the foreground (used by `up`).
    #[command(hide = true)]
    Serve { emulator: Emulator },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Emulator {
    Kinesis,
    Dynamodb,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,aws=warn,hyper=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<std::process::ExitCode> {
    let cfg = StackConfig::load().context("loading configuration")?;
    let exe = std::env::current_exe().context("locating the cafe binary")?;
    let stack = Stack::new(cfg.clone(), exe);
    match cli.command {
        Command::Stack { action } => match action {
            StackAction::Up { fresh } => {
                up(&stack, fresh).await?;
                print_status(&stack, false).await
            }
            StackAction::Down => {
                for (service, pid) in stack.down().await? {
                    match pid {
                        Some(pid) => println!("stopped {:<9} (pid {pid})", service.name()),
                        None => println!("{:<17} was not running", service.name()),
                    }
                }
                Ok(std::process::ExitCode::SUCCESS)
            }
            StackAction::Status { json } => print_status(&stack, json).await,
            StackAction::Env => {
                for (k, v) in cfg.aws_env() {
                    println!("export {k}='{v}'");
                }
                Ok(std::process::ExitCode::SUCCESS)
            }
            StackAction::Serve { emulator } => {
                let shutdown = shutdown_signal();
                match emulator {
                    Emulator::Kinesis => emulators::serve_kinesis(&cfg, shutdown).await?,
                    Emulator::Dynamodb => emulators::serve_dynamodb(&cfg, shutdown).await?,
                }
                Ok(std::process::ExitCode::SUCCESS)
            }
        },
        Command::Run { duration, rate, aws } => run(&stack, duration, rate, aws).await,
    }
}

async fn up(stack: &Stack, fresh: bool) -> Result<()> {
    let outcomes = stack.up(fresh).await?;
    for (service, outcome) in outcomes {
        let what = match outcome {
            UpOutcome::Started => "started",
            UpOutcome::AlreadyRunning => "already running",
        };
        eprintln!("{:<9} {what}", service.name());
    }
    provision::provision(stack.config()).await.context("provisioning")?;
    Ok(())
}

async fn print_status(stack: &Stack, json: bool) -> Result<std::process::ExitCode> {
    let rows = stack.status().await;
    let all_healthy = rows.iter().all(|r| r.healthy);
    if json {
        let rows: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "service": r.service.name(), "replaces": r.service.replaces(),
                    "stand_in": r.service.stand_in(), "port": r.port, "pid": r.pid, "healthy": r.healthy,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<9} {:<28} {:<30} {:>6} {:>8}  healthy",
            "service", "replaces", "stand-in", "port", "pid"
        );
        for r in &rows {
            let pid = r.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
            let ok = if r.healthy { "yes" } else { "NO" };
            println!(
                "{:<9} {:<28} {:<30} {:>6} {:>8}  {ok}",
                r.service.name(),
                r.service.replaces(),
                r.service.stand_in(),
                r.port,
                pid
            );
        }
        println!("state: {}", stack.config().state_dir.display());
    }
    Ok(if all_healthy {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

async fn run(stack: &Stack, duration: Option<Duration>, rate: u32, aws: bool) -> Result<std::process::ExitCode> {
    let cfg = stack.config();
    let kinesis = if aws {
        // Exactly what production binaries do: nothing local is assumed.
        let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        aws_sdk_kinesis::Client::new(&sdk)
    } else {
        up(stack, false).await?;
        print_status(stack, false).await?;
        cafe_localstack::aws::kinesis(&cafe_localstack::aws::sdk_config(cfg).await, cfg)
    };
    let stream = &cfg.names.stream;
    let report = smoke::round_trip_with(&kinesis, stream)
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
    match duration {
        Some(d) => println!(
            "running the sample pipeline for {} at {rate} events/s",
            humantime::format_duration(d)
        ),
        None => println!("running the sample pipeline at {rate} events/s; Ctrl-C to stop"),
    }
    let stop = async move {
        match duration {
            Some(d) => tokio::select! { _ = tokio::time::sleep(d) => {}, _ = shutdown_signal() => {} },
            None => shutdown_signal().await,
        }
    };
    let s = smoke::load(&kinesis, stream, rate, stop).await.context("sample load")?;
    let secs = s.elapsed.as_secs_f64().max(f64::EPSILON);
    println!("summary:");
    println!(
        "  published      {:>10}  ({:.0} events/s)",
        s.published,
        s.published as f64 / secs
    );
    println!("  read back      {:>10}", s.read_back);
    println!("  put retries    {:>10}", s.put_failures);
    println!("  decode errors  {:>10}", s.decode_errors);
    println!("  elapsed        {:>10.1} s", secs);
    if !aws {
        println!("the stack stays up: `cafe stack status`, `cafe stack down`");
    }
    if s.read_back != s.published || s.decode_errors > 0 {
        bail!(
            "{} of {} events were not read back",
            s.published - s.read_back,
            s.published
        );
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
