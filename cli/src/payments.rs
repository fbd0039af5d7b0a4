//! Wiring of the payment saga on the local stack: the payment function as a process
//! under the Lambda emulator, and the SQS event source mapping that feeds it. The
//! consumer that enqueues requests runs with the projectors ([`crate::read_side`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cafe_localstack::StackConfig;
use cafe_localstack::faults::FaultInjector;
use cafe_localstack::lambda::{
    EmulatorInvoker, EventSourceMapping, Invoke, MappingConfig, MappingCounts, MappingStats, spawn_function,
};
use cafe_settings::units::PAYMENT_FUNCTION;
use cafe_settings::vars;
use tokio::sync::watch;

/// The function's name: its binary's, which is what the emulator knows it by.
pub const FUNCTION: &str = "cafe-lambda-payment";

/// The simulated gateway's rules in a local run, so a run shows every outcome: one
/// customer of the load is always declined, one fails once and is retried.
const GATEWAY_RULES: [(&str, &str); 2] = [(vars::GATEWAY_BLOCKED, "cust-7"), (vars::GATEWAY_FLAKY, "cust-11:1")];

/// The payments mapping's visibility timeout: short, so a failed payment comes back
/// within a local run.
pub const VISIBILITY_TIMEOUT: Duration = Duration::from_secs(5);

/// The function's timeout: an invocation without an answer by then counts as failed.
pub const INVOKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often the queues' depths are read for the metrics: AWS/SQS publishes its
/// own once a minute; a local run wants to see a backlog form within seconds.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// The running saga.
#[derive(Debug)]
pub struct Saga {
    /// One process per instance the emulator runs at once.
    functions: Vec<tokio::process::Child>,
    mapping: tokio::task::JoinHandle<()>,
    sampler: tokio::task::JoinHandle<()>,
    gauges: Arc<SagaGauges>,
    stop: watch::Sender<bool>,
}

/// The saga's figures for the metrics: the mapping's counters, and the queues' depths
/// as last sampled.
#[derive(Debug)]
pub struct SagaGauges {
    stats: Arc<MappingStats>,
    queue_depth: AtomicU64,
    dlq_depth: AtomicU64,
}

impl SagaGauges {
    /// Over a mapping's counters, with no depth read yet.
    pub fn new(stats: Arc<MappingStats>) -> SagaGauges {
        SagaGauges {
            stats,
            queue_depth: AtomicU64::new(0),
            dlq_depth: AtomicU64::new(0),
        }
    }

    /// The values in [`crate::app_metrics::PAYMENT_CATALOG`]'s order.
    pub fn values(&self) -> [u64; 7] {
        let c = self.stats.counts();
        [
            c.invocations,
            c.failed_invocations,
            c.deleted,
            c.reported_failures,
            self.queue_depth.load(Ordering::Relaxed),
            self.stats.oldest_age_ms.load(Ordering::Relaxed) / 1000,
            self.dlq_depth.load(Ordering::Relaxed),
        ]
    }

    /// Reads both queues' depths once; a queue that cannot be read keeps its last value
    /// (and says so in the log).
    pub async fn sample(&self, sqs: &aws_sdk_sqs::Client, queue: &str, dlq: &str) {
        for (url, gauge) in [(queue, &self.queue_depth), (dlq, &self.dlq_depth)] {
            match depth(sqs, url).await {
                Ok(n) => gauge.store(n, Ordering::Relaxed),
                Err(e) => tracing::warn!(queue = url, error = %e, "could not read the queue depth"),
            }
        }
    }
}

/// What the mapping did.
#[derive(Debug)]
pub struct SagaReport {
    /// What the event source mapping did.
    pub counts: MappingCounts,
    /// Messages in the DLQ now.
    pub dead_letters: u64,
    /// Payment requests still on the queue (a backlog the next run works off).
    pub waiting: u64,
}

/// The function's binary, beside the running one; a test binary runs from Cargo's
/// `deps/`, one level below the binaries, so the application embedded in a test finds
/// the same function `cafe run` does.
fn function_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the cafe binary")?;
    let binary = exe.with_file_name(FUNCTION);
    let in_deps = exe.parent().filter(|dir| dir.ends_with("deps"));
    let binary = match in_deps.and_then(Path::parent) {
        Some(dir) if !binary.is_file() => dir.join(FUNCTION),
        _ => binary,
    };
    if !binary.is_file() {
        bail!(
            "{} is missing: build it with `cargo build -p {FUNCTION}` (infra/local/dev.sh run does)",
            binary.display()
        );
    }
    Ok(binary)
}

/// The queue's URL.
pub async fn queue_url(sqs: &aws_sdk_sqs::Client, name: &str) -> Result<String> {
    sqs.get_queue_url()
        .queue_name(name)
        .send()
        .await
        .with_context(|| format!("looking up queue {name}"))?
        .queue_url
        .with_context(|| format!("queue {name} has no URL"))
}

/// The function's configuration as its deployment sets it: the names its unit lists,
/// the stack's.
pub fn function_env(cfg: &StackConfig) -> Vec<(String, String)> {
    cfg.names.env(PAYMENT_FUNCTION.names)
}

impl Saga {
    /// Starts the function's instances (`lambda_concurrency`) and the mapping (which
    /// reads its injected fault, if any, from `faults`).
    pub async fn start(cfg: &StackConfig, sqs: &aws_sdk_sqs::Client, faults: &FaultInjector) -> Result<Saga> {
        let invoker = EmulatorInvoker::new(cfg, FUNCTION, INVOKE_TIMEOUT);
        Saga::start_with(cfg, sqs, faults, cfg.lambda_concurrency.max(1) as usize, invoker).await
    }

    /// Starts `instances` function processes at once, all cold, and the mapping,
    /// invoking through `invoker` (the emulator's Invoke API, or something around it
    /// that watches the invocations).
    pub async fn start_with<I: Invoke>(
        cfg: &StackConfig,
        sqs: &aws_sdk_sqs::Client,
        faults: &FaultInjector,
        instances: usize,
        invoker: I,
    ) -> Result<Saga> {
        let names = &cfg.names;
        let mut env = function_env(cfg);
        env.extend(GATEWAY_RULES.map(|(k, v)| (k.to_owned(), v.to_owned())));
        env.push((
            vars::GATEWAY_LEDGER.to_owned(),
            cfg.gateway_ledger().to_string_lossy().into_owned(),
        ));
        env.push((
            "RUST_LOG".to_owned(),
            std::env::var("RUST_LOG").unwrap_or_else(|_| "info,aws=warn".to_owned()),
        ));
        let instances = instances.max(1);
        let binary = function_binary()?;
        let functions = (0..instances)
            .map(|_| spawn_function(cfg, &binary, FUNCTION, &env).with_context(|| format!("starting {FUNCTION}")))
            .collect::<Result<Vec<_>>>()?;
        let queue = queue_url(sqs, &names.payments_queue).await?;
        let mapping = EventSourceMapping::new(
            sqs.clone(),
            &queue,
            invoker,
            MappingConfig {
                visibility_timeout: VISIBILITY_TIMEOUT,
                // One poller more than there are instances, as AWS's pollers (five at
                // least) outnumber a small function's concurrency: the next batch fills
                // while the function runs, and a message whose visibility runs out
                // mid-batch has a poller to deliver it again.
                pollers: instances + 1,
                ..MappingConfig::default()
            },
        )
        .await
        .context("setting up the payments event source mapping")?
        .with_faults(faults.clone());
        let gauges = Arc::new(SagaGauges::new(mapping.stats()));
        let (stop, stopped) = watch::channel(false);
        let dlq = queue_url(sqs, &names.payments_dlq).await?;
        let sampler = tokio::spawn({
            let (gauges, sqs, queue, mut stopped) = (gauges.clone(), sqs.clone(), queue.clone(), stopped.clone());
            async move {
                while !*stopped.borrow() {
                    gauges.sample(&sqs, &queue, &dlq).await;
                    tokio::select! {
                        _ = stopped.wait_for(|stop| *stop) => break,
                        () = tokio::time::sleep(SAMPLE_EVERY) => {}
                    }
                }
            }
        });
        let mapping = tokio::spawn(mapping.run(stopped));
        Ok(Saga {
            functions,
            mapping,
            sampler,
            gauges,
            stop,
        })
    }

    /// The saga's figures, for the process's metrics.
    pub fn gauges(&self) -> Arc<SagaGauges> {
        self.gauges.clone()
    }

    /// The event source mapping's counters.
    pub fn mapping(&self) -> Arc<MappingStats> {
        self.gauges.stats.clone()
    }

    /// Stops polling, lets the invocation in flight finish, then stops the function.
    pub async fn stop(mut self, cfg: &StackConfig, sqs: &aws_sdk_sqs::Client) -> SagaReport {
        let _ = self.stop.send(true);
        if let Err(e) = self.mapping.await {
            tracing::error!(error = %e, "payments event source mapping task failed");
        }
        if let Err(e) = self.sampler.await {
            tracing::error!(error = %e, "payments queue sampler task failed");
        }
        for function in &mut self.functions {
            let _ = function.kill().await;
        }
        // The summary still prints if a queue cannot be read, but says so in the log.
        let depth_of = async |name: &str| {
            let read = async { depth(sqs, &queue_url(sqs, name).await?).await };
            read.await.unwrap_or_else(|e| {
                tracing::warn!(queue = name, error = %e, "could not read the queue depth; reporting 0");
                0
            })
        };
        SagaReport {
            counts: self.gauges.stats.counts(),
            dead_letters: depth_of(&cfg.names.payments_dlq).await,
            waiting: depth_of(&cfg.names.payments_queue).await,
        }
    }
}

/// Visible plus in-flight messages of a queue.
pub async fn depth(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<u64> {
    let (visible, in_flight) = counts(sqs, url).await?;
    Ok(visible + in_flight)
}

/// Messages waiting to be received (the queue's backlog), and messages received and not
/// yet deleted (being processed, or failed and waiting out their visibility timeout).
pub async fn counts(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<(u64, u64)> {
    cafe_lambda_payment::requests::queue_counts(sqs, url)
        .await
        .map_err(anyhow::Error::msg)
}
