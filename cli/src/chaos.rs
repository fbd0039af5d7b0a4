//! `cafe chaos NAME`: a fault injected into the running pipeline under load, its
//! detection and recovery timed, and the invariants checked once it is over.
//!
//! Every experiment runs the same frame: the application in-process (API, relay,
//! projectors, saga), an open-loop order load, the fault after a warm-up, the load
//! kept on through the fault and after it, then the pipeline left to go quiet and the
//! [`crate::invariants`] checked with what the experiment did on purpose (the poison
//! it injected) told apart from damage.
//!
//! `consumer-kill` has a frame of its own: the consumers run as separate `cafe consume`
//! processes (so they can be killed with SIGKILL), and their progress is read from
//! their checkpoints instead of the in-process metrics.
//!
//! - **Detected**: the first sign the affected consumers saw the fault (a batch retried,
//!   a record parked, a shard two seconds behind), measured from the injection.
//! - **Recovered**: the affected consumers caught up again (projection lag under a
//!   second on every shard) while the load still runs, measured from the end of the
//!   fault (a service back up; a flushed cache rebuilt and swapped in), and only once
//!   they met it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cafe_consumers::metrics::Metrics;
use cafe_localstack::Service;
use cafe_localstack::faults::{FaultInjector, Faults};
use cafe_localstack::lambda::MappingStats;
use cafe_localstack::supervisor::Stack;
use cafe_projections::catalog::ReadModel;
use cafe_replay::Params;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::invariants::{self, Expected, Verdicts};
use crate::{Application, Settings, load};

/// The experiments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Experiment {
    /// Undecodable records put on the stream among the real ones: every consumer
    /// parks exactly them and moves on.
    Poison,
    /// Records already on the stream put on it once more: every projection absorbs
    /// them (idempotent by aggregate and version).
    Duplicates,
    /// ElastiCache flushed (the cache model's keys deleted): found by verification,
    /// repaired by a rebuild swapped in under traffic.
    RedisFlush,
    /// The Aurora stand-in (PostgreSQL) stopped and started again.
    PostgresRestart,
    /// The MemoryDB / ElastiCache stand-in (Redis) stopped and started again.
    MemorydbRestart,
    /// The DocumentDB stand-in stopped and started again.
    DocdbRestart,
    /// A share (`--throttle`) of the pipeline's Kinesis data requests answered with
    /// the service's throttling error for `--outage`, in the SDK clients it really
    /// uses: the SDK retries, what is left reaches our code.
    KinesisThrottle,
    /// The same for its DynamoDB item requests (event store, outbox, leases,
    /// checkpoints, the DynamoDB read models).
    DynamodbThrottle,
    /// kill -9 of projector workers running as their own processes, one read model
    /// after another (`--kills` times), each replaced at once by a new process that
    /// takes the dead one's leases after the failover time.
    ConsumerKill,
    /// kill -9 of the API, running as its own process, while appends wait before
    /// their publish; started again after `--outage`. A relay must republish what the
    /// dead process appended, and every order it had accepted must be in the store.
    ApiKill,
    /// A rolling restart: each consumer worker (own process) in turn sent SIGTERM,
    /// left to drain, checkpoint and release its leases, and replaced (`--kills`
    /// restarts).
    WorkerRestart,
    /// The payments mapping holds each batch past its visibility timeout before
    /// invoking the function (AWS's does while the function is throttled) for
    /// `--outage`: the messages of a batch still on its way are delivered again by
    /// another poller, and every payment must still be decided exactly once.
    SqsRedelivery,
}

impl Experiment {
    /// Every experiment, in the order `cafe chaos all` runs them.
    pub const ALL: [Experiment; 12] = [
        Experiment::Poison,
        Experiment::Duplicates,
        Experiment::RedisFlush,
        Experiment::PostgresRestart,
        Experiment::MemorydbRestart,
        Experiment::DocdbRestart,
        Experiment::KinesisThrottle,
        Experiment::DynamodbThrottle,
        Experiment::ConsumerKill,
        Experiment::ApiKill,
        Experiment::WorkerRestart,
        Experiment::SqsRedelivery,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Experiment::Poison => "poison",
            Experiment::Duplicates => "duplicates",
            Experiment::RedisFlush => "redis-flush",
            Experiment::PostgresRestart => "postgres-restart",
            Experiment::MemorydbRestart => "memorydb-restart",
            Experiment::DocdbRestart => "docdb-restart",
            Experiment::KinesisThrottle => "kinesis-throttle",
            Experiment::DynamodbThrottle => "dynamodb-throttle",
            Experiment::ConsumerKill => "consumer-kill",
            Experiment::ApiKill => "api-kill",
            Experiment::WorkerRestart => "worker-restart",
            Experiment::SqsRedelivery => "sqs-redelivery",
        }
    }

    /// Whether the consumers themselves show the fault (a park, a retry, lag): then
    /// recovery is timed once they have. Not a Redis restart: its client queues
    /// commands and reconnects, so a short outage raises no error and, with the batch
    /// waiting inside the store call, no visible lag either.
    fn shows_in_consumers(self) -> bool {
        matches!(
            self,
            Experiment::Poison | Experiment::PostgresRestart | Experiment::DocdbRestart
        ) || self.is_throttle()
    }

    /// Throttling: the SDK's retries may absorb all of it, so a sign is looked for
    /// only during the fault and shortly after, not waited for.
    fn is_throttle(self) -> bool {
        matches!(self, Experiment::KinesisThrottle | Experiment::DynamodbThrottle)
    }

    /// The consumer applications the fault reaches (whose detection and recovery are
    /// timed).
    fn affected(self) -> Vec<String> {
        let models: &[ReadModel] = match self {
            // Every consumer reads the stream and keeps its leases in DynamoDB.
            Experiment::KinesisThrottle | Experiment::DynamodbThrottle => return crate::dashboard::applications(),
            Experiment::Poison
            | Experiment::Duplicates
            | Experiment::ConsumerKill
            | Experiment::ApiKill
            | Experiment::WorkerRestart => &ReadModel::ALL,
            Experiment::RedisFlush => &[ReadModel::Cache],
            // Aurora and the warehouse share the one PostgreSQL here.
            Experiment::PostgresRestart => &[ReadModel::Orders, ReadModel::Analytics],
            Experiment::MemorydbRestart => &[ReadModel::Cache, ReadModel::Inventory],
            Experiment::DocdbRestart => &[ReadModel::Documents],
            // Held batches fill the queue to its bound, which holds back the consumer
            // that feeds it.
            Experiment::SqsRedelivery => return vec![cafe_lambda_payment::requests::APPLICATION.to_owned()],
        };
        models.iter().map(|m| m.name().to_owned()).collect()
    }
}

/// How hard and how long.
#[derive(Debug, Clone)]
pub struct ChaosOptions {
    /// Orders per second of the load.
    pub rate: u32,
    /// Load before the fault.
    pub warm_up: Duration,
    /// How long a stopped service stays down, or a throttle stays on.
    pub outage: Duration,
    /// The share of requests a throttle experiment refuses.
    pub throttle: f64,
    /// Load after the fault ends.
    pub after: Duration,
    /// Records a poison or duplicates experiment puts on the stream.
    pub records: usize,
    /// Workers `consumer-kill` kills, one after another.
    pub kills: usize,
    /// The lease failover time of the workers `consumer-kill` runs.
    pub failover: Duration,
    /// Longest wait for recovery and for the pipeline to go quiet.
    pub patience: Duration,
}

impl Default for ChaosOptions {
    fn default() -> Self {
        ChaosOptions {
            rate: 50,
            warm_up: Duration::from_secs(5),
            outage: Duration::from_secs(5),
            throttle: 0.2,
            after: Duration::from_secs(10),
            records: 20,
            kills: 3,
            failover: Duration::from_secs(3),
            patience: Duration::from_secs(120),
        }
    }
}

/// What an experiment did and found.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Which.
    pub experiment: Experiment,
    /// The fault, in words.
    pub fault: String,
    /// From the injection to the first sign (None: nothing to see, or never seen).
    pub detected_after: Option<Duration>,
    /// From the end of the fault to the affected consumers caught up (None: never).
    pub recovered_after: Option<Duration>,
    /// Orders the API accepted from the injection to recovery (the traffic the fault
    /// met); None where the API is not this process's to count (`api-kill`).
    pub orders_during: Option<u64>,
    /// Per stopped worker of `consumer-kill` and `worker-restart`: its application,
    /// detection and recovery.
    pub rounds: Vec<Round>,
    /// Orders the API accepted over the whole experiment.
    pub orders_accepted: usize,
    /// Orders it refused (a 503 under a fault is allowed; nothing accepted is lost).
    pub orders_refused: usize,
    /// The invariants afterwards.
    pub verdicts: Verdicts,
}

impl Outcome {
    /// Whether the experiment passed: recovered, and every invariant holds.
    pub fn passed(&self) -> bool {
        self.recovered_after.is_some() && self.verdicts.hold()
    }
}

/// One stopped worker of `consumer-kill` or `worker-restart`.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// The consumer application whose worker was stopped.
    pub application: String,
    /// From the kill to its lag passing two seconds (None for a restart: a drained
    /// worker hands over without a failover wait).
    pub detected_after: Option<Duration>,
    /// From the stop to its lag back under a second (a new worker took the lease and
    /// caught up; for a restart, once the replacement holds every lease).
    pub recovered_after: Option<Duration>,
}

/// What the fault did, for the frame.
struct Injected {
    fault: String,
    /// When the fault ended (a service back, a repair done).
    ended: Instant,
    /// Detection the injection itself observed (verification finding the damage).
    detected_after: Option<Duration>,
    /// Records every consumer must park on purpose, and the reason they give.
    poison: Option<(usize, &'static str)>,
}

/// Runs one experiment on `stack` (which must be up).
pub async fn run(stack: &Stack, experiment: Experiment, opts: &ChaosOptions) -> Result<Outcome> {
    if matches!(experiment, Experiment::ConsumerKill | Experiment::WorkerRestart) {
        return worker_rounds(stack, experiment, opts).await;
    }
    if experiment == Experiment::ApiKill {
        return api_kill(stack, opts).await;
    }
    let cfg = stack.config().clone();
    let mut settings = Settings::local(cfg.clone());
    // Only the throttles wrap the clients; every other experiment runs the SDK's own
    // HTTP client untouched, as production does.
    let faults = if experiment.is_throttle() {
        FaultInjector::armed(Faults::default())
    } else {
        FaultInjector::off()
    };
    settings.faults = faults.clone();
    // The lag monitor is not part of what is tested; its reads would only add load.
    settings.monitor = None;
    settings.worker_id = format!("chaos-{}-{}", experiment.name(), std::process::id());
    let running = Application::build(settings).await?.start().await?;
    let clients = running.clients().clone();
    let before = Expected::before(&cfg, &clients).await?;
    let (stop_load, load) = start_load(&running, opts).await?;

    let metrics = running.consumer_metrics().clone();
    let affected = experiment.affected();
    let accepted_at_injection = accepted(&running);
    let at_injection = Counters::read(&metrics, &affected);
    let injected_at = Instant::now();
    let stop_watching = CancellationToken::new();
    let watcher = experiment.shows_in_consumers().then(|| {
        tokio::spawn(first_sign(
            metrics.clone(),
            affected.clone(),
            at_injection,
            stop_watching.clone(),
        ))
    });
    let injected = inject(stack, &running, &faults, experiment, opts).await;
    let injected = match injected {
        Ok(i) => i,
        Err(e) => {
            stop_watching.cancel();
            stop_load.cancel();
            let _ = load.await;
            let _ = running.stop(Duration::from_secs(20)).await;
            return Err(e.context(format!("injecting {}", experiment.name())));
        }
    };
    // A fault the consumers must meet first (poison still on its way to them, a
    // restart they may not have hit yet) is waited for, so "caught up" is not measured
    // before they even saw it.
    let seen = match watcher {
        Some(watcher) => {
            let look = if experiment.is_throttle() {
                Duration::from_secs(2)
            } else {
                opts.patience
            };
            let seen = tokio::time::timeout(look, watcher).await;
            stop_watching.cancel();
            match seen {
                Ok(seen) => seen.context("the detection watcher")?,
                Err(_) => None,
            }
        }
        None => None,
    };
    let mut recovered_at = caught_up(&metrics, &affected, opts.patience).await;
    // The function's backlog waits in its queue, which no consumer's lag shows.
    if experiment == Experiment::SqsRedelivery
        && recovered_at.is_some()
        && let Some(mapping) = running.saga_mapping()
    {
        recovered_at = saga_caught_up(&mapping, opts.patience).await;
    }
    let recovered_after = recovered_at.map(|at| at.saturating_duration_since(injected.ended));
    let detected_after = injected
        .detected_after
        .or(seen.map(|at| at.saturating_duration_since(injected_at)));
    let orders_during = Some(accepted(&running) - accepted_at_injection);
    tokio::time::sleep(opts.after).await;
    stop_load.cancel();
    let report = load.await.context("the load task")?;
    running.quiet(opts.patience).await?;
    let stopped = running.stop(Duration::from_secs(30)).await?;
    if !stopped.undone.is_empty() {
        bail!("the pipeline did not stop cleanly: {:?}", stopped.undone);
    }
    let expected = match &injected.poison {
        Some((count, reason)) => before.with_poison(&crate::dashboard::applications(), *count, reason),
        None => before,
    };
    let verdicts = invariants::check(&cfg, &clients, &expected).await?;
    Ok(Outcome {
        experiment,
        fault: injected.fault,
        detected_after,
        recovered_after,
        orders_during,
        rounds: Vec::new(),
        orders_accepted: report.accepted.len(),
        orders_refused: report.refused.len(),
        verdicts,
    })
}

/// Publishes the menu, starts the open-loop order load and lets it warm up; cancel the
/// token to stop it, and the task answers what it sent.
async fn start_load(
    running: &crate::Running,
    opts: &ChaosOptions,
) -> Result<(CancellationToken, tokio::task::JoinHandle<load::LoadReport>)> {
    let base = format!("http://{}", running.addr());
    let http = load::client(running.config())?;
    load::seed_menu(&http, &base).await.context("publishing the menu")?;
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (stop, rate) = (stop.clone(), opts.rate);
        async move { load::orders(&http, &base, rate, 256, stop.cancelled_owned()).await }
    });
    tokio::time::sleep(opts.warm_up).await;
    Ok((stop, task))
}

/// Orders the API accepted so far.
fn accepted(running: &crate::Running) -> u64 {
    running.http_metrics().count("/v1/orders", "POST", 201)
}

/// The affected applications' shards, summed: retries, parks, and whether one is two
/// seconds behind (a driver that waits for its server instead of failing shows only
/// that).
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    retries: u64,
    parked: u64,
    behind: bool,
}

impl Counters {
    fn read(metrics: &Metrics, apps: &[String]) -> Counters {
        metrics
            .snapshot()
            .shards
            .iter()
            .filter(|s| apps.contains(&s.application))
            .fold(Counters::default(), |c, s| Counters {
                retries: c.retries + s.retries,
                parked: c.parked + s.parked,
                behind: c.behind || s.projection_lag_seconds.is_some_and(|l| l > 2.0),
            })
    }
}

/// When the affected consumers first showed the fault after `then`: a retried batch, a
/// parked record, a shard behind; polled every 20 ms until `stop`.
async fn first_sign(metrics: Metrics, apps: Vec<String>, then: Counters, stop: CancellationToken) -> Option<Instant> {
    while !stop.is_cancelled() {
        let now = Counters::read(&metrics, &apps);
        if now.retries > then.retries || now.parked > then.parked || now.behind {
            return Some(Instant::now());
        }
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    None
}

/// When the payment function is back to fresh messages: the oldest message of a
/// receive under a second old (None after `patience`).
async fn saga_caught_up(mapping: &MappingStats, patience: Duration) -> Option<Instant> {
    let started = Instant::now();
    while started.elapsed() < patience {
        if mapping.oldest_age_ms.load(std::sync::atomic::Ordering::Relaxed) < 1000 {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// When every affected shard's projection lag is under a second (None after `patience`).
async fn caught_up(metrics: &Metrics, apps: &[String], patience: Duration) -> Option<Instant> {
    let started = Instant::now();
    while started.elapsed() < patience {
        let s = metrics.snapshot();
        let shards: Vec<_> = s.shards.iter().filter(|x| apps.contains(&x.application)).collect();
        if !shards.is_empty() && shards.iter().all(|x| x.projection_lag_seconds.is_some_and(|l| l < 1.0)) {
            return Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn inject(
    stack: &Stack,
    running: &crate::Running,
    faults: &FaultInjector,
    experiment: Experiment,
    opts: &ChaosOptions,
) -> Result<Injected> {
    let cfg = stack.config();
    let clients = running.clients();
    match experiment {
        Experiment::Poison => {
            let entries = (0..opts.records)
                .map(|i| {
                    aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                        .partition_key(format!("poison-{i}"))
                        .data(aws_sdk_kinesis::primitives::Blob::new(format!(
                            "chaos poison {i}: not an envelope"
                        )))
                        .build()
                })
                .collect::<Result<Vec<_>, _>>()?;
            put_all(&clients.kinesis, &cfg.names.stream, entries).await?;
            Ok(Injected {
                fault: format!("{} undecodable records put on the stream", opts.records),
                ended: Instant::now(),
                detected_after: None,
                poison: Some((opts.records, "undecodable envelope")),
            })
        }
        Experiment::Duplicates => {
            let again = recent_records(&clients.kinesis, &cfg.names.stream, opts.records).await?;
            let n = again.len();
            put_all(&clients.kinesis, &cfg.names.stream, again).await?;
            Ok(Injected {
                fault: format!("{n} records already on the stream put on it again"),
                ended: Instant::now(),
                detected_after: None,
                poison: None,
            })
        }
        Experiment::RedisFlush => {
            let started = Instant::now();
            // The copy that serves (a swap may have moved it), deleted the way the
            // catalog deletes any copy.
            let at = crate::read_side::endpoints(cfg, clients)?;
            let serving = crate::read_side::pointers(cfg, clients).get(ReadModel::Cache).await?;
            let flushed = at.cache(&serving).await?.delete_all().await?;
            // Found the way an operator finds it: a rebuild compared with the live copy.
            let replayer = crate::read_side::replayer(cfg, clients)?;
            let meta = replayer.create(Params::full_rebuild(&[ReadModel::Cache]), None).await?;
            replayer
                .run(&meta.id, CancellationToken::new(), false, Duration::from_secs(3600))
                .await?;
            let buckets = cafe_projections::verify::Buckets::new(256)?;
            let reports = replayer.verify(&meta.id, buckets, 5).await?;
            let detected = reports
                .iter()
                .any(|(_, r)| r.verdict() == cafe_projections::verify::Verdict::Differs)
                .then(|| started.elapsed());
            // The live copy is damaged, so the verification refuses the swap: forced,
            // which is the repair.
            replayer.swap(&meta.id, true).await?;
            Ok(Injected {
                fault: format!("{flushed} cache keys deleted; rebuilt and swapped in"),
                ended: Instant::now(),
                detected_after: detected,
                poison: None,
            })
        }
        Experiment::KinesisThrottle | Experiment::DynamodbThrottle => {
            let (seen, throttled) = (faults.counts().seen(), faults.counts().throttled());
            let (service, on) = if experiment == Experiment::KinesisThrottle {
                (
                    "Kinesis data",
                    Faults {
                        kinesis_throttle: opts.throttle,
                        ..Faults::default()
                    },
                )
            } else {
                (
                    "DynamoDB item",
                    Faults {
                        dynamodb_throttle: opts.throttle,
                        ..Faults::default()
                    },
                )
            };
            faults.set(on);
            tokio::time::sleep(opts.outage).await;
            faults.set(Faults::default());
            let seen = faults.counts().seen() - seen;
            let throttled = faults.counts().throttled() - throttled;
            Ok(Injected {
                fault: format!(
                    "{:.0} % of {service} requests throttled for {}: {throttled} of {seen} refused",
                    opts.throttle * 100.0,
                    humantime::format_duration(opts.outage)
                ),
                ended: Instant::now(),
                detected_after: None,
                poison: None,
            })
        }
        Experiment::SqsRedelivery => {
            let mapping = running
                .saga_mapping()
                .context("sqs-redelivery needs the payment saga running")?;
            let before = mapping.counts();
            let delay = crate::payments::VISIBILITY_TIMEOUT + Duration::from_secs(1);
            faults.set(Faults {
                invoke_delay_ms: u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                ..Faults::default()
            });
            let started = Instant::now();
            // The first message delivered again: a batch received at the end of the
            // window shows it a visibility timeout later, so the look goes on past it.
            let look = opts.outage + delay + crate::payments::VISIBILITY_TIMEOUT;
            let (mut detected, mut off_at) = (None, None);
            let ended = loop {
                let now = started.elapsed();
                if detected.is_none() && mapping.counts().redelivered > before.redelivered {
                    detected = Some(now);
                }
                if off_at.is_none() && now >= opts.outage {
                    faults.set(Faults::default());
                    off_at = Some(Instant::now());
                }
                match off_at {
                    Some(at) if detected.is_some() || now >= look => break at,
                    _ => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            let after = mapping.counts();
            Ok(Injected {
                fault: format!(
                    "payment batches held {} before invoking (visibility timeout {}) for {}: {} batches held, {} messages delivered again by the end",
                    humantime::format_duration(delay),
                    humantime::format_duration(crate::payments::VISIBILITY_TIMEOUT),
                    humantime::format_duration(opts.outage),
                    after.held - before.held,
                    after.redelivered - before.redelivered,
                ),
                ended,
                detected_after: detected,
                poison: None,
            })
        }
        Experiment::ConsumerKill | Experiment::WorkerRestart | Experiment::ApiKill => {
            bail!("{} runs its own frame", experiment.name())
        }
        Experiment::PostgresRestart | Experiment::MemorydbRestart | Experiment::DocdbRestart => {
            // MemoryDB's first shard with the cache's Redis: the inventory's cluster
            // client loses half its slots while the other shard keeps serving.
            let services: &[Service] = match experiment {
                Experiment::PostgresRestart => &[Service::Postgres],
                Experiment::MemorydbRestart => &[Service::Redis, Service::MemoryDb],
                _ => &[Service::Mongo],
            };
            for &service in services {
                stack.stop_one(service).await?;
            }
            tokio::time::sleep(opts.outage).await;
            stack.up_only(services).await?;
            let names: Vec<&str> = services.iter().map(|s| s.name()).collect();
            Ok(Injected {
                fault: format!(
                    "{} stopped for {}",
                    names.join(" and "),
                    humantime::format_duration(opts.outage)
                ),
                ended: Instant::now(),
                detected_after: None,
                poison: None,
            })
        }
    }
}

/// Puts `entries` on the stream, 500 to a call, until every one is accepted.
async fn put_all(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    entries: Vec<aws_sdk_kinesis::types::PutRecordsRequestEntry>,
) -> Result<()> {
    for chunk in entries.chunks(500) {
        let mut left = chunk.to_vec();
        for _ in 0..10 {
            let out = kinesis
                .put_records()
                .stream_name(stream)
                .set_records(Some(left.clone()))
                .send()
                .await
                .context("PutRecords")?;
            left = out
                .records()
                .iter()
                .zip(left)
                .filter(|(r, _)| r.error_code().is_some())
                .map(|(_, e)| e)
                .collect();
            if left.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !left.is_empty() {
            bail!("{} records not accepted after 10 attempts", left.len());
        }
    }
    Ok(())
}

/// Up to `n` records from the start of every shard, as entries to put again (their
/// partition keys kept, so each lands on its shard again after the original).
async fn recent_records(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    n: usize,
) -> Result<Vec<aws_sdk_kinesis::types::PutRecordsRequestEntry>> {
    let mut out = Vec::new();
    let shards = load::shard_iterators(kinesis, stream, aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon).await?;
    for (_, iterator) in shards {
        let Some(iterator) = iterator else { continue };
        let records = kinesis
            .get_records()
            .shard_iterator(iterator)
            .limit(i32::try_from(n).unwrap_or(i32::MAX))
            .send()
            .await
            .context("GetRecords")?;
        for r in records.records() {
            out.push(
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .partition_key(r.partition_key())
                    .data(r.data().clone())
                    .build()?,
            );
        }
    }
    out.truncate(n);
    Ok(out)
}

/// The experiment's table row, for people.
pub fn print(o: &Outcome) {
    let secs = |d: Option<Duration>| d.map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
    println!("chaos {}: {}", o.experiment.name(), o.fault);
    println!(
        "  detected after {}, recovered after {}, {} orders accepted meanwhile; {} orders accepted, {} refused in all",
        secs(o.detected_after),
        secs(o.recovered_after),
        o.orders_during.map_or("-".to_owned(), |n| n.to_string()),
        o.orders_accepted,
        o.orders_refused
    );
    let stop = if o.experiment == Experiment::WorkerRestart {
        "SIGTERM"
    } else {
        "kill -9"
    };
    for r in &o.rounds {
        println!(
            "    {stop} {:<16} detected after {}, recovered after {}",
            r.application,
            secs(r.detected_after),
            secs(r.recovered_after)
        );
    }
    print!("{}", o.verdicts);
    println!("  {}", if o.passed() { "PASSED" } else { "FAILED" });
}

/// The consumers as their own processes: one `cafe consume` per read model and one for
/// the payment requests.
struct Workers {
    exe: std::path::PathBuf,
    log_dir: std::path::PathBuf,
    failover: Duration,
    running: BTreeMap<String, tokio::process::Child>,
    /// Every process started, for the "none left behind" check.
    started: Vec<u32>,
}

impl Workers {
    fn start(stack: &Stack, failover: Duration) -> Result<Workers> {
        let log_dir = stack.config().log_dir();
        std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        let mut w = Workers {
            exe: stack.exe().to_owned(),
            log_dir,
            failover,
            running: BTreeMap::new(),
            started: Vec::new(),
        };
        for app in crate::dashboard::applications() {
            w.spawn(&app)?;
        }
        Ok(w)
    }

    /// Starts a worker for `application`; its worker id (unique per process started).
    fn spawn(&mut self, application: &str) -> Result<String> {
        let sink = if application == cafe_lambda_payment::requests::APPLICATION {
            "payment-requests".to_owned()
        } else {
            format!("projector:{application}")
        };
        // Each worker's log is kept (`<log dir>/chaos-<application>-<n>.log`): a failed
        // invariant is diagnosed from what the killed worker and its replacement did.
        let n = self.started.len();
        let path = self.log_dir.join(format!("chaos-{application}-{n}.log"));
        let worker_id = format!("chaos-{application}-{}-{n}", std::process::id());
        let log = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let child = tokio::process::Command::new(&self.exe)
            .args(["consume", "--application", application, "--sink", &sink])
            .args(["--worker-id", &worker_id])
            .args(["--failover", &humantime::format_duration(self.failover).to_string()])
            .args(["--idle-poll", "200ms", "--checkpoint-interval", "200ms"])
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().context("duplicating the log file")?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting a {application} worker"))?;
        if let Some(pid) = child.id() {
            self.started.push(pid);
        }
        self.running.insert(application.to_owned(), child);
        Ok(worker_id)
    }

    /// kill -9 of `application`'s worker, reaped.
    async fn kill(&mut self, application: &str) -> Result<()> {
        let mut child = self
            .running
            .remove(application)
            .with_context(|| format!("no {application} worker runs"))?;
        child.start_kill().context("kill -9")?;
        child.wait().await.context("reaping the killed worker")?;
        Ok(())
    }

    /// SIGTERM to `application`'s worker, given `deadline` to drain, checkpoint,
    /// release its leases and exit; whether it exited successfully.
    async fn terminate(&mut self, application: &str, deadline: Duration) -> Result<bool> {
        let mut child = self
            .running
            .remove(application)
            .with_context(|| format!("no {application} worker runs"))?;
        sigterm(&child);
        drained(&mut child, &format!("the {application} worker"), deadline).await
    }

    /// SIGTERM to every worker, each given `deadline` to drain and exit.
    async fn stop(&mut self, deadline: Duration) -> Result<()> {
        for child in self.running.values() {
            sigterm(child);
        }
        for (app, mut child) in std::mem::take(&mut self.running) {
            drained(&mut child, &format!("the {app} worker"), deadline).await?;
        }
        Ok(())
    }
}

fn sigterm(child: &tokio::process::Child) {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
}

/// Waits for `child` (already signalled) to exit, at most `deadline`; whether it
/// exited successfully. Not exiting in time is an error: a drain that hangs is the
/// failure these experiments look for.
async fn drained(child: &mut tokio::process::Child, what: &str, deadline: Duration) -> Result<bool> {
    match tokio::time::timeout(deadline, child.wait()).await {
        Ok(status) => Ok(status.with_context(|| format!("waiting for {what}"))?.success()),
        Err(_) => bail!("{what} did not drain within {}", humantime::format_duration(deadline)),
    }
}

/// Polls until `worker` holds every lease of `application` and its lag is under a
/// second, at most `patience`; when it did. A graceful handoff leaves the shards
/// unheld for a moment, and unheld shards show no lag, so lag alone would call a
/// restart recovered before the replacement even started.
async fn taken_over(
    probe: &cafe_consumers::lag::LagProbe,
    application: &str,
    worker: &str,
    patience: Duration,
) -> Result<Option<Instant>> {
    let started = Instant::now();
    while started.elapsed() < patience {
        let samples = probe.samples().await?;
        let shards = samples
            .iter()
            .find(|(app, _)| app == application)
            .map(|(_, shards)| shards.as_slice())
            .unwrap_or_default();
        // A closed shard's lease (after a reshard) stays unheld for good.
        let open: Vec<_> = shards
            .iter()
            .filter(|(_, s)| !matches!(s.checkpoint, cafe_consumers::lease::Checkpoint::ShardEnd))
            .collect();
        let held = !open.is_empty()
            && open
                .iter()
                .all(|(_, s)| s.owner.as_deref() == Some(worker) && s.lag < Duration::from_secs(1));
        if held {
            return Ok(Some(Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(None)
}

/// `application`'s worst shard lag from its checkpoints.
async fn lag_of(probe: &cafe_consumers::lag::LagProbe, application: &str) -> Result<Duration> {
    Ok(probe
        .per_application()
        .await?
        .into_iter()
        .find(|(app, _)| app == application)
        .map_or(Duration::ZERO, |(_, lag)| lag))
}

/// Polls until `done` holds for `application`'s lag, at most `patience`; when it did.
async fn lag_until(
    probe: &cafe_consumers::lag::LagProbe,
    application: &str,
    patience: Duration,
    done: impl Fn(Duration) -> bool,
) -> Result<Option<Instant>> {
    let started = Instant::now();
    while started.elapsed() < patience {
        if done(lag_of(probe, application).await?) {
            return Ok(Some(Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(None)
}

/// `consumer-kill` and `worker-restart`: the consumers as their own processes, one
/// stopped and replaced per round while the load runs.
async fn worker_rounds(stack: &Stack, experiment: Experiment, opts: &ChaosOptions) -> Result<Outcome> {
    let cfg = stack.config().clone();
    let mut settings = Settings::local(cfg.clone());
    settings.monitor = None;
    // The consumers run as their own processes, to be stopped.
    settings.projectors = false;
    settings.worker_id = format!("chaos-{}-{}", experiment.name(), std::process::id());
    let running = Application::build(settings).await?.start().await?;
    let clients = running.clients().clone();
    let before = Expected::before(&cfg, &clients).await?;
    let mut workers = Workers::start(stack, opts.failover)?;
    let (stop_load, load) = start_load(&running, opts).await?;
    let probe = crate::read_side::lag_probe(&cfg, &clients, crate::dashboard::applications());
    let accepted_before = accepted(&running);
    let applications = crate::dashboard::applications();
    let mut rounds = Vec::new();
    let mut unclean = Vec::new();
    for k in 0..opts.kills {
        let app = match experiment {
            // The projectors: the payment-requests consumer's output is a queue, not a
            // read model the checker can compare with a rebuild.
            Experiment::ConsumerKill => ReadModel::ALL[k % ReadModel::ALL.len()].name().to_owned(),
            _ => applications[k % applications.len()].clone(),
        };
        // Each stop meets a worker that is caught up and busy, so mid-batch under load.
        lag_until(&probe, &app, opts.patience, |lag| lag < Duration::from_secs(1)).await?;
        let stopped = Instant::now();
        let (detected, recovered) = if experiment == Experiment::ConsumerKill {
            workers.kill(&app).await?;
            workers.spawn(&app)?;
            let detected = lag_until(&probe, &app, opts.patience, |lag| lag > Duration::from_secs(2)).await?;
            let recovered = lag_until(&probe, &app, opts.patience, |lag| lag < Duration::from_secs(1)).await?;
            (detected, recovered)
        } else {
            // A drained worker hands over without a failover wait: nothing to detect.
            if !workers.terminate(&app, Duration::from_secs(30)).await? {
                unclean.push(app.clone());
            }
            let replacement = workers.spawn(&app)?;
            (None, taken_over(&probe, &app, &replacement, opts.patience).await?)
        };
        rounds.push(Round {
            application: app,
            detected_after: detected.map(|t| t.saturating_duration_since(stopped)),
            recovered_after: recovered.map(|t| t.saturating_duration_since(stopped)),
        });
    }
    let orders_during = Some(accepted(&running) - accepted_before);
    tokio::time::sleep(opts.after).await;
    stop_load.cancel();
    let report = load.await.context("the load task")?;
    running.quiet(opts.patience).await?;
    workers.stop(Duration::from_secs(30)).await?;
    let stopped = running.stop(Duration::from_secs(30)).await?;
    if !stopped.undone.is_empty() {
        bail!("the pipeline did not stop cleanly: {:?}", stopped.undone);
    }
    let expected = Expected {
        processes: workers.started.clone(),
        ..before
    };
    let mut verdicts = invariants::check(&cfg, &clients, &expected).await?;
    if experiment == Experiment::WorkerRestart {
        verdicts.checks.push(invariants::Check {
            name: "SIGTERM drains cleanly",
            holds: unclean.is_empty(),
            detail: if unclean.is_empty() {
                format!("all {} workers sent SIGTERM exited successfully", rounds.len())
            } else {
                format!("exited with failure after SIGTERM: {}", unclean.join(", "))
            },
        });
    }
    let worst = |f: fn(&Round) -> Option<Duration>| -> Option<Duration> {
        rounds
            .iter()
            .map(f)
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().max())
    };
    let fault = if experiment == Experiment::ConsumerKill {
        format!(
            "{} projector workers killed with SIGKILL under load, one after another, each replaced (failover {})",
            opts.kills,
            humantime::format_duration(opts.failover)
        )
    } else {
        format!(
            "{} consumer workers restarted with SIGTERM under load, one after another (rolling)",
            opts.kills
        )
    };
    Ok(Outcome {
        experiment,
        fault,
        detected_after: worst(|r| r.detected_after),
        recovered_after: worst(|r| r.recovered_after),
        orders_during,
        rounds,
        orders_accepted: report.accepted.len(),
        orders_refused: report.refused.len(),
        verdicts,
    })
}

/// The API as its own `cafe api` process, each append held back before its publish
/// (`CAFE_FAULT_PAUSE_AFTER_APPEND_MS`) so a kill lands between the two.
struct ApiProcess {
    child: tokio::process::Child,
    base: String,
}

impl ApiProcess {
    async fn start(stack: &Stack, addr: std::net::SocketAddr, pause: Duration, n: usize) -> Result<ApiProcess> {
        use tokio::io::AsyncBufReadExt;
        let log_dir = stack.config().log_dir();
        std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
        let path = log_dir.join(format!("chaos-api-{n}.log"));
        let log = std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        let mut child = tokio::process::Command::new(stack.exe())
            .args(["api", "--listen", &addr.to_string()])
            .env(
                cafe_settings::vars::FAULT_PAUSE_AFTER_APPEND_MS,
                pause.as_millis().to_string(),
            )
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting cafe api")?;
        let stdout = child.stdout.take().context("the API's stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        // It prints its address once it listens.
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("cafe api did not start listening within 30 s")?
            .context("reading cafe api's stdout")?
            .with_context(|| format!("cafe api exited before listening (log: {})", path.display()))?;
        let base = line
            .trim()
            .strip_prefix("listening on ")
            .with_context(|| format!("unexpected first line from cafe api: {line:?}"))?
            .to_owned();
        // Kept open and read: a closed pipe would fail the process's next print.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(ApiProcess { child, base })
    }
}

/// Events appended at least `age` ago and still marked pending (not yet on the stream).
async fn pending_for(
    cfg: &cafe_localstack::StackConfig,
    clients: &crate::pipeline::Clients,
    age: Duration,
) -> Result<usize> {
    use cafe_producers::store::EventStore;
    Ok(invariants::store(cfg, clients)
        .pending(age, 10_000)
        .await
        .context("reading the pending markers")?
        .len())
}

/// `api-kill`: the API killed with SIGKILL under load while appends wait before their
/// publish, started again after `--outage`; its relay must republish what the dead
/// process appended and never published.
async fn api_kill(stack: &Stack, opts: &ChaosOptions) -> Result<Outcome> {
    let cfg = stack.config().clone();
    let mut settings = Settings::local(cfg.clone());
    settings.monitor = None;
    settings.worker_id = format!("chaos-api-kill-{}", std::process::id());
    // The consumers and the saga run here; the load goes to the API process, not to
    // this application's own server.
    let running = Application::build(settings).await?.start().await?;
    let clients = running.clients().clone();
    let before = Expected::before(&cfg, &clients).await?;
    let addr = {
        let probe = std::net::TcpListener::bind(("127.0.0.1", 0)).context("finding a free port")?;
        probe.local_addr()?
    };
    let pause = Duration::from_millis(500);
    let mut started = Vec::new();
    let api = ApiProcess::start(stack, addr, pause, 0).await?;
    started.extend(api.child.id());
    let http = load::client(&cfg)?;
    load::seed_menu(&http, &api.base).await.context("publishing the menu")?;
    let stop_load = CancellationToken::new();
    let load = tokio::spawn({
        let (stop, rate, base, http) = (stop_load.clone(), opts.rate, api.base.clone(), http.clone());
        async move { load::orders(&http, &base, rate, 256, stop.cancelled_owned()).await }
    });
    tokio::time::sleep(opts.warm_up).await;

    let mut child = api.child;
    let killed = Instant::now();
    child.start_kill().context("kill -9 of the API")?;
    child.wait().await.context("reaping the killed API")?;
    // Appended by the dead process and never published (nothing else appends now).
    let stranded = pending_for(&cfg, &clients, Duration::ZERO).await?;
    tokio::time::sleep(opts.outage).await;
    let again = ApiProcess::start(stack, addr, pause, 1).await?;
    started.extend(again.child.id());
    let back = Instant::now();
    // Recovered: nothing appended before the kill is still pending, and the consumers
    // have caught up with what the relay republished.
    let mut republished = false;
    while !republished && back.elapsed() < opts.patience {
        republished = pending_for(&cfg, &clients, killed.elapsed()).await? == 0;
        if !republished {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let caught = if republished {
        caught_up(
            running.consumer_metrics(),
            &Experiment::ApiKill.affected(),
            opts.patience,
        )
        .await
    } else {
        None
    };
    tokio::time::sleep(opts.after).await;
    stop_load.cancel();
    let report = load.await.context("the load task")?;
    let mut child = again.child;
    sigterm(&child);
    if !drained(&mut child, "the restarted API", Duration::from_secs(30)).await? {
        bail!("the restarted API exited with a failure after SIGTERM");
    }
    running.quiet(opts.patience).await?;
    let stopped = running.stop(Duration::from_secs(30)).await?;
    if !stopped.undone.is_empty() {
        bail!("the pipeline did not stop cleanly: {:?}", stopped.undone);
    }
    let expected = Expected {
        processes: started,
        accepted: report.accepted.iter().cloned().collect(),
        ..before
    };
    let verdicts = invariants::check(&cfg, &clients, &expected).await?;
    Ok(Outcome {
        experiment: Experiment::ApiKill,
        fault: format!(
            "the API process killed with SIGKILL under load ({stranded} events appended and not yet on the stream at the kill), restarted after {}",
            humantime::format_duration(opts.outage)
        ),
        detected_after: None,
        recovered_after: caught.map(|t| t.saturating_duration_since(back)),
        orders_during: None,
        rounds: Vec::new(),
        orders_accepted: report.accepted.len(),
        orders_refused: report.refused.len(),
        verdicts,
    })
}
