//! `cafe`: the one command operators and developers use.
//!
//! - `cafe stack up|down|status|env`: the local stand-ins for AWS (see `infra/local`).
//! - `cafe run [--for 60s]`: the pipeline against the local stack (API, relay, a load of
//!   real HTTP orders, a tap on the stream), until Ctrl-C or for a bounded time.
//! - `cafe api`: the command API and the outbox relay alone, until SIGTERM.
//! - `cafe consume`: one consumer worker (leases, checkpoints, /metrics) until SIGTERM.
//! - `cafe analytics <report>`: warehouse reports (sales by store and hour, top items,
//!   loyalty tiers, basket size) as a table or `--json`.
//!
//! Argument errors exit with code 2 (clap's convention); runtime failures exit 1.

use std::time::Duration;

use std::net::SocketAddr;

use anyhow::{Context, Result};
use cafe_app::{load, payments, pipeline, read_side};
use cafe_localstack::{Stack, StackConfig, UpOutcome, emulators, provision};
use cafe_producers::service::ServiceConfig;
use clap::{Parser, Subcommand, ValueEnum};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc settings the binary runs with unless the environment says otherwise. With
/// mimalloc's defaults a consumer worker sat at 105–143 MiB resident for ~40 MiB of live
/// data: its arenas are committed eagerly, the kernel backs them with transparent huge
/// pages, and freed pages are returned after a second. Committing on demand, no THP and
/// returning freed pages after 100 ms keep `cafe bench consumer`'s worker under 100 MiB
/// at the same throughput (README). Returning them at once would save more but cost a
/// third of the throughput (measured with MIMALLOC_PURGE_DELAY=0).
const ALLOCATOR_ENV: [(&str, &str); 3] = [
    ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
    ("MIMALLOC_ALLOW_THP", "0"),
    ("MIMALLOC_PURGE_DELAY", "100"),
];

/// mimalloc reads its settings from the environment when the process starts, before
/// `main`; setting them later is too late for the arenas it has already reserved. So a
/// process started without them replaces itself (exec: same pid, same arguments) with
/// one that has them. A setting the caller gave wins; if exec fails, it runs as it is.
fn with_allocator_settings() {
    use std::os::unix::process::CommandExt;
    if ALLOCATOR_ENV.iter().all(|(k, _)| std::env::var_os(k).is_some()) {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let mut again = std::process::Command::new(exe);
    again.args(std::env::args_os().skip(1));
    for (k, v) in ALLOCATOR_ENV {
        if std::env::var_os(k).is_none() {
            again.env(k, v);
        }
    }
    // Only returns on failure.
    let _ = again.exec();
}

mod analytics;
mod bench;
mod bench_consumer;
mod bench_lambda;
mod bench_payments;
mod bench_pipeline;
mod bench_projections;
mod bench_replay;
mod consume;
mod lag;
mod replay;
mod run;

#[derive(Debug, Parser)]
#[command(name = "cafe", version, about = "CloudCafe: event-sourced coffee-chain pipeline")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log lines (on stderr) as JSON objects, one per line, with their span fields
    /// (stream, shard, sequence, event), or as text for a person; `auto` is text on a
    /// terminal and JSON otherwise.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Auto,
    Json,
    Pretty,
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
        /// Orders placed per second (open loop: a fixed arrival rate).
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        rate: u32,
        /// Do not start the local stack: use the AWS SDK's default chain (credentials,
        /// region, and `AWS_ENDPOINT_URL_*` if set), i.e. real AWS.
        #[arg(long)]
        aws: bool,
        /// Where the command API listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Publish the consumer metrics to CloudWatch this often (with --aws: every 60s
        /// unless given; locally off unless given: moto is the stand-in).
        #[arg(long, value_parser = positive_duration)]
        cloudwatch_every: Option<Duration>,
    },
    /// Benchmarks that print figures (never pass/fail).
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Run one consumer worker on the stream until SIGTERM or Ctrl-C (then drain,
    /// checkpoint and release its leases).
    Consume(consume::ConsumeArgs),
    /// Sample the live consumer applications' lag in time (the age of the oldest record
    /// each one's checkpoints have not passed, per shard) and print p99 and max.
    Lag(lag::LagArgs),
    /// Print an analytics report from the warehouse facts.
    Analytics(analytics::AnalyticsArgs),
    /// Estimate the monthly AWS bill of the Terraform deployment, per service, at a
    /// workload (default: the seed's 5 million orders a day with a 10× morning peak).
    Cost {
        /// Orders a day.
        #[arg(long, default_value_t = 5_000_000.0, value_parser = positive_number)]
        orders_per_day: f64,
        /// The morning peak as a multiple of the average rate (sizes shards and capacity).
        #[arg(long, default_value_t = 10.0, value_parser = positive_number)]
        peak: f64,
    },
    /// Rebuild read models into shadow copies from the event store, verify them
    /// against the live ones, and drop them.
    Replay(replay::ReplayArgs),
    /// Inject a fault into the running pipeline under load, time its detection and
    /// recovery, and check that nothing was lost (exit 1 if an invariant breaks).
    Chaos {
        /// The experiment, or `all` for every one in turn.
        #[arg(value_parser = chaos_name)]
        name: ChaosName,
        /// Orders per second of the load.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        rate: u32,
        /// Load before the fault.
        #[arg(long, default_value = "5s", value_parser = positive_duration)]
        warm_up: Duration,
        /// How long a stopped service stays down, or a throttle stays on.
        #[arg(long, default_value = "5s", value_parser = positive_duration)]
        outage: Duration,
        /// The share of requests kinesis-throttle and dynamodb-throttle refuse (0 to 1).
        #[arg(long, default_value_t = 0.2, value_parser = share)]
        throttle: f64,
        /// Load after the fault.
        #[arg(long, default_value = "10s", value_parser = positive_duration)]
        after: Duration,
        /// Records a poison or duplicates experiment puts on the stream.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        records: u32,
        /// Workers consumer-kill kills with SIGKILL (worker-restart restarts with
        /// SIGTERM), one after another.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1_000))]
        kills: u32,
        /// Lease failover time of consumer-kill's workers.
        #[arg(long, default_value = "3s", value_parser = positive_duration)]
        failover: Duration,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a bearer token for a local caller, signed by the local stack's key (kept
    /// under the state dir, created on first use).
    Token {
        /// What the caller is.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(cafe_producers::auth::ROLE_NAMES))]
        role: String,
        /// Who: a customer id for a customer, a person's id otherwise.
        #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
        sub: String,
        /// The store a staff token is for.
        #[arg(long, required_if_eq("role", "staff"), value_parser = clap::builder::NonEmptyStringValueParser::new())]
        store: Option<String>,
        /// How long the token is valid.
        #[arg(long, default_value = "1h", value_parser = cafe_app::positive_duration)]
        valid: Duration,
    },
    /// Run one of the seed's stress stories against the pipeline, print its figures,
    /// and check that nothing was lost (exit 1 if an invariant breaks).
    Scenario {
        /// The story.
        #[arg(value_enum)]
        name: cafe_app::scenario::Scenario,
        #[command(flatten)]
        opts: cafe_app::scenario::ScenarioOptions,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The CloudWatch dashboard and alarms, generated from the metric catalogue.
    Cloudwatch {
        #[command(subcommand)]
        action: CloudwatchAction,
    },
    /// Serve the command API and run the outbox relay until SIGTERM or Ctrl-C.
    Api {
        /// Where the command API listens (port 0 picks a free one; the address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Use the AWS SDK's default chain instead of the local stack's endpoints.
        #[arg(long)]
        aws: bool,
    },
    /// Run the outbox relay alone until SIGTERM or Ctrl-C: publish events whose
    /// publish failed after their append (what the relay service does in AWS).
    Relay {
        /// Use the AWS SDK's default chain; the names must then come from the
        /// environment (`CAFE_EVENTS_TABLE`, `CAFE_STREAM`, as Terraform hands them).
        #[arg(long)]
        aws: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchWhat {
    /// Consumer throughput (no-op processor, separate worker process) beside the raw
    /// GetRecords read rate of the same stream, the worker's RSS, and the failover time
    /// after a kill -9.
    Consumer {
        /// Shards of the benchmark's stream.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10))]
        shards: u32,
        /// Events put on the stream beforehand.
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u32).range(1..=5_000_000))]
        events: u32,
        /// The workers' failover time for the kill -9 measurement.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        failover: Duration,
    },
    /// Events/s of each projector on a generated history, and PostgreSQL's against a raw
    /// COPY of the same rows.
    Projections {
        /// Orders in the generated history (about 7 events each, across all aggregates).
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        orders: u32,
        /// Orders in the PostgreSQL phase's own history: enough that each trial of the
        /// projector and of the raw COPY lasts seconds.
        #[arg(long, default_value_t = 150_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        postgres_orders: u32,
        /// Events per batch. The runtime hands over one GetRecords call's worth, about 2
        /// MiB (thousands of events) while a projector catches up, which is when its speed
        /// matters; batches are small only when it is caught up.
        #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        batch: u32,
        /// Only these read models (comma-separated; default: all).
        #[arg(long, value_delimiter = ',')]
        only: Vec<cafe_projections::catalog::ReadModel>,
        /// PostgreSQL projector and COPY-ceiling runs (alternating; medians compared).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
        trials: u32,
    },
    /// A rebuild of the orders read model from the stream (a generated history,
    /// published KPL-aggregated) beside a raw GetRecords read and a raw COPY of the same
    /// rows, and from the event store beside a raw parallel Scan; the rebuild process's
    /// peak memory.
    Replay {
        /// Events on the stream.
        #[arg(long, default_value_t = 10_000_000, value_parser = clap::value_parser!(u64).range(1..=50_000_000))]
        events: u64,
        /// Events in the event store.
        #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..=20_000_000))]
        store_events: u64,
        /// Shards of the benchmark's stream.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=10))]
        shards: u32,
        /// Only one half.
        #[arg(long, value_enum)]
        only: Option<bench_replay::Part>,
    },
    /// The payment function's cold start under the Lambda emulator: spawn → first answer,
    /// beside a warm invocation, and its peak memory.
    ColdStart {
        /// The function binary (default: `cargo lambda build --release`'s bootstrap).
        #[arg(long, value_parser = existing_file)]
        binary: Option<std::path::PathBuf>,
        /// Measured runs (after one warm-up run).
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        runs: u32,
    },
    /// Payments/s of the payment function's handler, the AWS calls it makes per payment,
    /// beside the stand-ins' ceiling for the same calls.
    Payments {
        /// Payments processed (as many more orders are placed for the ceiling).
        #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u32).range(10..=200_000))]
        payments: u32,
        /// Invocations of 10 messages in flight (the emulator runs one per function
        /// process; AWS runs one per concurrent instance).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
        invocations: u16,
    },
    /// The whole pipeline (API, relay, every projector, the saga) under open-loop steps
    /// of a fixed order rate: per read model the end-to-end latency p50/p99/max, CPU
    /// per process, and the knee (the highest rate with every p99 within a second).
    Pipeline {
        /// Order rates of the steps, in order.
        #[arg(long, value_delimiter = ',', default_value = "100,200,400,580,800", value_parser = clap::value_parser!(u32).range(1..=100_000))]
        rates: Vec<u32>,
        /// Length of each step.
        #[arg(long = "for", default_value = "30s", value_parser = positive_duration)]
        duration: Duration,
        /// How the projectors read (both: one after the other).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "polling,fan-out")]
        mode: Vec<bench_pipeline::Mode>,
        /// Polling: wait between reads of a caught-up shard (the runtime's default 1s).
        #[arg(long, value_parser = positive_duration)]
        idle_poll: Option<Duration>,
        /// Leave the payment function out (the payment-requests consumer still fills its
        /// queue up to the bound, then waits): the read side alone on the machine.
        #[arg(long)]
        without_saga: bool,
    },
    /// POST /v1/orders throughput and latency beside the stand-ins' raw ceilings, and the
    /// aggregation ratio of a restock storm.
    Api {
        /// Length of each phase.
        #[arg(long = "for", default_value = "15s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Concurrent clients (closed loop). By Little's law, offering 3,000 orders/s at
        /// the ~40 ms a loaded pipeline takes needs ~120 requests in flight; 64 leaves
        /// the machine partly idle (README has both figures).
        #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u16).range(1..=4096))]
        concurrency: u16,
    },
}

#[derive(Debug, Subcommand)]
enum CloudwatchAction {
    /// Print the dashboard body, or write `dashboard.json` and `alarms.json` into a
    /// directory (Terraform reads them from `infra/cloudwatch`).
    Render {
        /// Write the files here instead of printing the dashboard.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Put the dashboard and the alarms into CloudWatch (moto locally; AWS with --aws).
    Apply {
        /// Use the AWS SDK's default chain instead of the local stack.
        #[arg(long)]
        aws: bool,
        /// The HTTP API's id, for the API widgets.
        #[arg(long, default_value = "local")]
        api_id: String,
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
    with_allocator_settings();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,aws=warn,hyper=warn,cafe_consumers=warn,tokio_postgres::connection=warn".into());
    let json = match cli.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        // The span fields go with every line, so a log search by shard or sequence
        // finds the batch's lines.
        logs.json().with_current_span(true).with_span_list(true).init();
    } else {
        logs.init();
    }
    // A configuration mistake is bad input: said before anything starts, exit code 2.
    let cfg = match StackConfig::load() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("error: loading configuration: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if let Err(e) = cafe_localstack::faults::Faults::from_env() {
        eprintln!("error: loading configuration: {e}");
        return std::process::ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli, cfg)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli, cfg: StackConfig) -> Result<std::process::ExitCode> {
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
                        Some(pid) => println!("stopped {:<10} (pid {pid})", service.name()),
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
        Command::Run {
            duration,
            rate,
            aws,
            listen,
            cloudwatch_every,
        } => {
            run::run(
                &stack,
                run::RunArgs {
                    duration,
                    rate,
                    aws,
                    listen,
                    cloudwatch_every: cloudwatch_every.or(aws.then_some(Duration::from_secs(60))),
                },
            )
            .await
        }
        Command::Api { listen, aws } => api(&cfg, listen, aws).await,
        Command::Relay { aws } => {
            if let Some(refused) = aws.then(|| deployed(cafe_settings::units::RELAY)).flatten() {
                return Ok(refused);
            }
            println!(
                "relay publishing pending events of {} to {}",
                cfg.names.events_table, cfg.names.stream
            );
            let stats = pipeline::relay_alone(&cfg, aws, shutdown_signal()).await?;
            println!("relay stopped; it republished {} events", stats.published);
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Cloudwatch { action } => {
            let apps = cafe_app::dashboard::applications();
            match action {
                CloudwatchAction::Render { out: None } => {
                    print!("{}", cafe_app::observability::render(&cfg.names, &apps)[0].1);
                }
                CloudwatchAction::Render { out: Some(dir) } => {
                    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                    for (file, contents) in cafe_app::observability::render(&cfg.names, &apps) {
                        let path = dir.join(file);
                        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
                        println!("wrote {}", path.display());
                    }
                }
                CloudwatchAction::Apply { aws, api_id } => {
                    if !aws {
                        up(&stack, false).await?;
                    }
                    let clients = pipeline::Clients::new(&cfg, aws).await;
                    let applied =
                        cafe_app::observability::apply(&clients.cloudwatch, &cfg.names, &apps, &api_id).await?;
                    println!(
                        "dashboard {} and {} alarms put",
                        applied.dashboard,
                        applied.alarms.len()
                    );
                }
            }
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Analytics(args) => {
            analytics::run(&cfg, args).await?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Replay(args) => {
            let stop = tokio_util::sync::CancellationToken::new();
            let on_signal = stop.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                eprintln!("stopping: finishing the pages in flight and checkpointing");
                on_signal.cancel();
            });
            replay::run(&cfg, args, stop).await
        }
        Command::Lag(args) => lag::run(&cfg, args).await,
        Command::Cost { orders_per_day, peak } => {
            use cafe_app::cost;
            let work = cost::Workload {
                orders_per_day,
                peak_factor: peak,
                ..cost::Workload::seed()
            };
            let estimate = cost::estimate(&work, &cost::Prices::default(), &cost::Deployment::production());
            println!(
                "Monthly AWS cost, us-east-1 list prices, {orders_per_day:.0} orders a day, {peak}× peak \
                 (infra/terraform/examples/production.tfvars):\n"
            );
            print!("{}", estimate.table());
            println!(
                "\nSized for the peak: {:.0} Kinesis shards, Aurora up to {:.0} ACU.",
                estimate.shards, estimate.peak_acu
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Chaos {
            name,
            rate,
            warm_up,
            outage,
            throttle,
            after,
            records,
            kills,
            failover,
            json,
        } => {
            up(&stack, false).await?;
            let opts = cafe_app::chaos::ChaosOptions {
                rate,
                warm_up,
                outage,
                throttle,
                after,
                records: records as usize,
                kills: kills as usize,
                failover,
                ..cafe_app::chaos::ChaosOptions::default()
            };
            let experiments = match name {
                ChaosName::All => cafe_app::chaos::Experiment::ALL.to_vec(),
                ChaosName::One(e) => vec![e],
            };
            let mut outcomes = Vec::new();
            for e in experiments {
                let outcome = cafe_app::chaos::run(&stack, e, &opts).await?;
                if !json {
                    cafe_app::chaos::print(&outcome);
                }
                outcomes.push(outcome);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&outcomes)?);
            }
            Ok(if outcomes.iter().all(cafe_app::chaos::Outcome::passed) {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            })
        }
        Command::Token {
            role,
            sub,
            store,
            valid,
        } => {
            println!("{}", cafe_app::token::mint(&cfg, &role, &sub, store.as_deref(), valid)?);
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Scenario { name, opts, json } => {
            up(&stack, false).await?;
            let report = cafe_app::scenario::run(&stack, name, &opts).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                cafe_app::scenario::print(&report);
            }
            Ok(if report.passed() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            })
        }
        Command::Consume(args) => {
            if let Some(refused) = args.aws.then(|| args.sink.unit().and_then(deployed)).flatten() {
                return Ok(refused);
            }
            consume::run(&cfg, args, shutdown_signal()).await?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Bench {
            what:
                BenchWhat::Projections {
                    orders,
                    postgres_orders,
                    batch,
                    only,
                    trials,
                },
        } => {
            up(&stack, false).await?;
            bench_projections::projections(
                &cfg,
                orders as usize,
                postgres_orders as usize,
                batch as usize,
                &only,
                trials as usize,
            )
            .await?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Bench {
            what:
                BenchWhat::Consumer {
                    shards,
                    events,
                    failover,
                },
        } => {
            up(&stack, false).await?;
            bench_consumer::consumer(&cfg, shards, events, failover).await?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Bench {
            what:
                BenchWhat::Replay {
                    events,
                    store_events,
                    shards,
                    only,
                },
        } => {
            up(&stack, false).await?;
            bench_replay::replay(&cfg, events, store_events, shards, only).await?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Bench {
            what: BenchWhat::ColdStart { binary, runs },
        } => {
            up(&stack, false).await?;
            bench_lambda::cold_start(&cfg, binary, runs).await?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Bench {
            what: BenchWhat::Payments { payments, invocations },
        } => {
            up(&stack, false).await?;
            bench_payments::payments(&cfg, payments as usize, usize::from(invocations)).await?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Bench {
            what:
                BenchWhat::Pipeline {
                    rates,
                    duration,
                    mode,
                    idle_poll,
                    without_saga,
                },
        } => {
            up(&stack, false).await?;
            bench_pipeline::pipeline(&cfg, &stack, &rates, duration, &mode, idle_poll, !without_saga).await?;
            Ok(std::process::ExitCode::SUCCESS)
        }
        Command::Bench {
            what: BenchWhat::Api { duration, concurrency },
        } => {
            up(&stack, false).await?;
            bench::api(&cfg, duration, usize::from(concurrency)).await?;
            Ok(std::process::ExitCode::SUCCESS)
        }
    }
}

pub(crate) async fn up(stack: &Stack, fresh: bool) -> Result<()> {
    let outcomes = stack.up(fresh).await?;
    for (service, outcome) in outcomes {
        let what = match outcome {
            UpOutcome::Started => "started",
            UpOutcome::AlreadyRunning => "already running",
        };
        eprintln!("{:<10} {what}", service.name());
    }
    provision::provision(stack.config()).await.context("provisioning")?;
    Ok(())
}

pub(crate) async fn print_status(stack: &Stack, json: bool) -> Result<std::process::ExitCode> {
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
            "{:<10} {:<28} {:<30} {:>6} {:>8}  healthy",
            "service", "replaces", "stand-in", "port", "pid"
        );
        for r in &rows {
            let pid = r.pid.map_or_else(|| "-".to_owned(), |p| p.to_string());
            let ok = if r.healthy { "yes" } else { "NO" };
            println!(
                "{:<10} {:<28} {:<30} {:>6} {:>8}  {ok}",
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

/// The command service's settings from the environment (fault injection for the crash
/// test).
pub(crate) fn service_config() -> Result<ServiceConfig> {
    cafe_app::app::service_config_from_env()
}

async fn api(cfg: &StackConfig, listen: SocketAddr, aws: bool) -> Result<std::process::ExitCode> {
    let mut settings = cafe_app::Settings::local(cfg.clone());
    settings.aws = aws;
    settings.listen = listen;
    settings.service = service_config()?;
    settings.faults = cafe_localstack::faults::FaultInjector::from_env()?;
    settings.projectors = false;
    settings.saga = false;
    let app = cafe_app::Application::build(settings).await?;
    println!("listening on http://{}", app.addr());
    let stopped = app
        .run_until(
            async {
                shutdown_signal().await;
                eprintln!("draining: finishing requests in flight and the relay's pass");
            },
            run::STOP_DEADLINE,
        )
        .await?;
    match stopped.relay {
        Some(relay) => {
            eprintln!("stopped; the relay republished {} events", relay.published);
            Ok(std::process::ExitCode::SUCCESS)
        }
        None => {
            eprintln!(
                "stopped after {}s with requests or the relay's pass unfinished",
                run::STOP_DEADLINE.as_secs()
            );
            Ok(std::process::ExitCode::FAILURE)
        }
    }
}

/// A duration argument that must be longer than zero (exit code 2 otherwise).
/// `cafe chaos`'s argument: one experiment or all of them.
#[derive(Debug, Clone, Copy)]
enum ChaosName {
    All,
    One(cafe_app::chaos::Experiment),
}

fn chaos_name(s: &str) -> Result<ChaosName, String> {
    use clap::ValueEnum;
    if s == "all" {
        return Ok(ChaosName::All);
    }
    cafe_app::chaos::Experiment::from_str(s, false)
        .map(ChaosName::One)
        .map_err(|_| {
            let names: Vec<&str> = cafe_app::chaos::Experiment::ALL.iter().map(|e| e.name()).collect();
            format!(
                "no experiment is called {s:?}; the experiments are all, {}",
                names.join(", ")
            )
        })
}

/// A share of requests: a number from 0 to 1.
fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if (0.0..=1.0).contains(&x) => Ok(x),
        Ok(x) => Err(format!("must be between 0 and 1, not {x}")),
        Err(e) => Err(e.to_string()),
    }
}

pub(crate) use cafe_app::positive_duration;

/// A deployed service takes its names from its deployment, never the defaults: exit 2
/// naming what its unit needs and the environment lacks (None: all there).
fn deployed(unit: cafe_settings::Unit) -> Option<std::process::ExitCode> {
    let e = unit.names_from(|k| std::env::var(k).ok()).err()?;
    eprintln!("error: {e} (the {} service's settings)", unit.name);
    Some(std::process::ExitCode::from(2))
}

/// A number above zero, as typed.
fn positive_number(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        Ok(_) => Err("must be a number above zero".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// A path argument that must name a file (a typo is an argument error, exit code 2).
fn existing_file(s: &str) -> Result<std::path::PathBuf, String> {
    let path = std::path::PathBuf::from(s);
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!("{s} is not a file"))
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
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
