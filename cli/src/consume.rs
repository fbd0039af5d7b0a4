//! `cafe consume`: one consumer worker as its own process, with a built-in sink.
//!
//! The projectors (issue 5) embed the same worker with their own processors; this
//! command is for operators (tail the stream into a file, watch lag on /metrics) and for
//! the multi-process tests and benchmark, which need workers they can SIGTERM and kill.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use cafe_consumers::cloudwatch::{CloudWatchConfig, CloudWatchPublisher};
use cafe_consumers::lease::{Checkpoint, DynamoLeaseTable};
use cafe_consumers::metrics::{self, Metrics};
use cafe_consumers::parking::DynamoParkingLot;
use cafe_consumers::{BatchContext, Outcome, Processor, Record, Worker, WorkerConfig};
use cafe_localstack::StackConfig;
use cafe_projections::Projector;
use cafe_projections::catalog::ReadModel;
use cafe_projections::serving::{Following, LiveSide};
use tokio_util::sync::CancellationToken;

use crate::pipeline::Clients;

/// Where processed records go.
#[derive(Debug, Clone)]
pub enum Sink {
    /// Nowhere: measures the runtime itself.
    Discard,
    /// One JSON line per user record appended to a file.
    Jsonl(PathBuf),
    /// The saga's first step: a payment request on SQS `payments` per `OrderPlaced`
    /// (how it runs as its own service, e.g. on ECS).
    PaymentRequests,
    /// One read model's projector, following the serving pointers like the main job's
    /// (how a projector runs as its own service; what `cafe chaos consumer-kill` kills).
    Projector(ReadModel),
}

impl std::str::FromStr for Sink {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "discard" => Ok(Sink::Discard),
            None if s == "payment-requests" => Ok(Sink::PaymentRequests),
            Some(("jsonl", path)) if !path.is_empty() => Ok(Sink::Jsonl(PathBuf::from(path))),
            Some(("projector", model)) => model.parse().map(Sink::Projector).map_err(|e| format!("{e}")),
            _ => Err(format!(
                "expected `discard`, `jsonl:<path>`, `payment-requests` or `projector:<read model>`, got {s:?}"
            )),
        }
    }
}

impl Sink {
    /// The deployed unit that runs this sink (none for the operators' sinks).
    pub fn unit(&self) -> Option<cafe_settings::Unit> {
        match self {
            Sink::PaymentRequests => cafe_settings::Unit::worker("payment-requests"),
            Sink::Projector(model) => cafe_settings::Unit::worker(&format!("projector:{}", model.name())),
            Sink::Discard | Sink::Jsonl(_) => None,
        }
    }
}

/// Where a brand-new application starts, as typed on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Start {
    /// The oldest record in the stream.
    TrimHorizon,
    /// Only records put after the start.
    Latest,
    /// Records at or after `--start-timestamp`.
    AtTimestamp,
}

/// Options of `cafe consume`.
#[derive(Debug, clap::Args)]
pub struct ConsumeArgs {
    /// The consumer application (leases and checkpoints are per application).
    #[arg(long)]
    pub application: String,
    /// The stream (default: the configured events stream).
    #[arg(long)]
    pub stream: Option<String>,
    /// `discard`, `jsonl:<path>`, `payment-requests` (to SQS `payments`) or
    /// `projector:<read model>` (orders, active_orders, documents, cache, inventory, analytics).
    #[arg(long, default_value = "discard")]
    pub sink: Sink,
    /// This worker's id (default: host, pid and a random suffix).
    #[arg(long)]
    pub worker_id: Option<String>,
    /// A lease not renewed for this long is taken over.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub failover: Duration,
    /// Sleep between reads of a caught-up shard (at least 200 ms).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub idle_poll: Duration,
    /// How often new shards are looked for (besides shard ends).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub discovery_interval: Duration,
    /// Store progress at most this often (always at shutdown and handoff).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub checkpoint_interval: Duration,
    /// Where a brand-new application starts.
    #[arg(long, value_enum, default_value = "trim-horizon")]
    pub start: Start,
    /// Start time for `--start at-timestamp` (RFC 3339).
    #[arg(long, required_if_eq("start", "at-timestamp"))]
    pub start_timestamp: Option<chrono::DateTime<chrono::Utc>>,
    /// Read by enhanced fan-out as this registered consumer (registered if missing)
    /// instead of polling.
    #[arg(long)]
    pub fan_out: Option<String>,
    /// Serve Prometheus metrics at http://<addr>/metrics (port 0 picks one; printed).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    /// Use the AWS SDK's default chain instead of the local stack's endpoints.
    #[arg(long)]
    pub aws: bool,
    /// Publish the worker's metrics to CloudWatch this often (with --aws: every 60s
    /// unless given, which is what the ECS services scale and alarm on; locally off
    /// unless given: moto is the stand-in).
    #[arg(long, value_parser = crate::positive_duration)]
    pub cloudwatch_every: Option<Duration>,
}

/// Writes each record as a JSON line; one write per batch, so a batch reaches the file
/// (the OS) before its checkpoint can be stored.
#[derive(Debug)]
struct JsonlSink {
    worker: String,
    file: Mutex<std::fs::File>,
}

impl Processor for JsonlSink {
    async fn process(&self, ctx: BatchContext<'_>, records: &[Record]) -> Vec<Outcome> {
        let now = chrono::Utc::now().timestamp_millis();
        let mut out = String::new();
        for r in records {
            let line = serde_json::json!({
                "worker": self.worker,
                "shard": ctx.shard_id,
                "sequence": r.sequence,
                "sub": r.sub,
                "partition_key": r.partition_key,
                "data": String::from_utf8_lossy(&r.data),
                "at_ms": now,
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
        let written = match self.file.lock() {
            Ok(mut f) => f.write_all(out.as_bytes()).map_err(|e| e.to_string()),
            Err(_) => Err("the sink's lock is poisoned".to_owned()),
        };
        match written {
            Ok(()) => vec![Outcome::Done; records.len()],
            Err(why) => vec![Outcome::Retry(why); records.len()],
        }
    }
}

/// Counts and drops.
#[derive(Debug)]
struct DiscardSink;

impl Processor for DiscardSink {
    async fn process(&self, _ctx: BatchContext<'_>, records: &[Record]) -> Vec<Outcome> {
        vec![Outcome::Done; records.len()]
    }
}

/// Runs one worker until SIGTERM or Ctrl-C, then drains and prints its report.
pub async fn run(cfg: &StackConfig, args: ConsumeArgs, shutdown: impl Future<Output = ()>) -> Result<()> {
    let initial_position = match args.start {
        Start::AtTimestamp => Checkpoint::AtTimestamp,
        Start::Latest => Checkpoint::Latest,
        Start::TrimHorizon => Checkpoint::TrimHorizon,
    };
    let faults = cafe_localstack::faults::FaultInjector::from_env()?;
    let (clients, recording) = crate::pipeline::Recording::hook(Clients::new(cfg, args.aws).await);
    let clients = clients.with_faults(&faults);
    let mut worker_cfg = WorkerConfig::new(
        args.application.clone(),
        args.stream.clone().unwrap_or_else(|| cfg.names.stream.clone()),
    );
    if let Some(id) = &args.worker_id {
        worker_cfg.worker_id.clone_from(id);
    }
    worker_cfg.failover = args.failover;
    worker_cfg.idle_poll = args.idle_poll;
    worker_cfg.discovery_interval = args.discovery_interval;
    worker_cfg.checkpoint_interval = args.checkpoint_interval;
    worker_cfg.take_interval = (args.failover / 5).max(Duration::from_millis(200));
    worker_cfg.initial_position = initial_position;
    worker_cfg.start_timestamp = args.start_timestamp;
    worker_cfg.fan_out.clone_from(&args.fan_out);

    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let registry = Arc::new(registry);
    let stop = CancellationToken::new();
    let metrics_server = match args.metrics_listen {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the metrics endpoint to {addr}"))?;
            println!("metrics on http://{}/metrics", listener.local_addr()?);
            let router = metrics::router(registry.clone());
            let stopped = stop.clone();
            Some(tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stopped.cancelled().await })
                    .await
            }))
        }
        None => None,
    };

    let cloudwatch = args
        .cloudwatch_every
        .or(args.aws.then_some(Duration::from_secs(60)))
        .map(|every| {
            let cw = CloudWatchConfig {
                every,
                ..CloudWatchConfig::new(&cfg.names.metrics_namespace, &worker_cfg.stream)
            };
            let publisher = CloudWatchPublisher::new(clients.cloudwatch.clone(), cw, metrics.clone());
            tokio::spawn(publisher.run(stop.clone()))
        });

    let leases = DynamoLeaseTable::new(
        clients.dynamodb.clone(),
        &cfg.names.leases_table,
        &worker_cfg.application,
    );
    let parking = Arc::new(DynamoParkingLot::new(clients.dynamodb.clone(), &cfg.names.parked_table));
    println!(
        "worker {} consuming {} as {}",
        worker_cfg.worker_id, worker_cfg.stream, worker_cfg.application
    );
    let worker_id = worker_cfg.worker_id.clone();
    let parts = (worker_cfg, clients.kinesis.clone(), leases, parking, metrics);
    let report = match &args.sink {
        Sink::Discard => drive(parts, Arc::new(DiscardSink), &stop, shutdown).await,
        Sink::PaymentRequests => {
            let queue = crate::payments::queue_url(&clients.sqs, &cfg.names.payments_queue).await?;
            let sink = cafe_lambda_payment::requests::PaymentRequests::new(clients.sqs.clone(), queue);
            drive(parts, Arc::new(sink), &stop, shutdown).await
        }
        Sink::Projector(model) => {
            let at = crate::read_side::endpoints(cfg, &clients)?;
            let live = LiveSide::Serving(crate::read_side::pointers(cfg, &clients));
            let projection = Following::connect(*model, at, live)
                .await
                .with_context(|| format!("connecting the {model} read model ({})", model.store()))?;
            drive(parts, Arc::new(Projector::new(projection)), &stop, shutdown).await
        }
        Sink::Jsonl(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?;
            let sink = JsonlSink {
                worker: worker_id,
                file: Mutex::new(file),
            };
            drive(parts, Arc::new(sink), &stop, shutdown).await
        }
    };
    stop.cancel();
    if let Some(publisher) = cloudwatch {
        // Its last send: the final interval's figures.
        publisher.await.context("CloudWatch publisher task")?;
    }
    if let Some(recording) = recording {
        recording.write()?;
    }
    if let Some(server) = metrics_server {
        server.await.context("metrics server task")?.context("metrics server")?;
    }
    println!(
        "stopped: {} records ({} parked); leases taken {}, handed off {}, lost {}; shards ended {}",
        report.records,
        report.parked,
        report.leases_taken,
        report.leases_handed_off,
        report.leases_lost,
        report.shards_ended
    );
    if !report.shards_abandoned.is_empty() {
        anyhow::bail!(
            "the drain deadline passed with shards {:?} still busy; left to failover from their last checkpoint",
            report.shards_abandoned
        );
    }
    Ok(())
}

/// Everything a worker needs but its processor.
type Parts = (
    WorkerConfig,
    aws_sdk_kinesis::Client,
    DynamoLeaseTable,
    Arc<DynamoParkingLot>,
    Metrics,
);

/// Runs a worker with `processor` until `shutdown`, then drains it.
async fn drive<P: Processor>(
    (cfg, kinesis, leases, parking, metrics): Parts,
    processor: Arc<P>,
    stop: &CancellationToken,
    shutdown: impl Future<Output = ()>,
) -> cafe_consumers::WorkerReport {
    let worker = Worker::new(cfg, kinesis, leases, parking, processor, metrics);
    let token = stop.child_token();
    let trigger = token.clone();
    let running = tokio::spawn(worker.run(token));
    shutdown.await;
    eprintln!("draining: finishing in-flight batches, checkpointing, releasing leases");
    trigger.cancel();
    running.await.unwrap_or_default()
}
