//! `cold-start-avalanche`: Black Friday. A burst of orders leaves payment requests
//! waiting while the payment function has no instance at all; then `--concurrency`
//! instances start at once, every one cold, and work the backlog off. The queue holds
//! at most the payment-requests consumer's in-flight bound (500); the rest of the
//! backlog waits in the stream, as the consumer's lag, and follows as the queue drains.
//!
//! What AWS would show, measured here: each instance's init duration (the function
//! reports its own, [`cafe_consumers::emf::INIT_DURATION`], read back from its EMF
//! lines in its log, as CloudWatch would read them), how long invocations took (the
//! first ones wait for an instance to finish its init), how old the messages were when
//! the function got them (AWS/SQS's ApproximateAgeOfOldestMessage), and what failed.
//! On two cores, many instances initialising at once compete for the CPU, so the init
//! durations spread with `--concurrency`, as the seed's story expects of 10K cold starts.
//!
//! Where it differs from AWS: the mapping here runs one poller per instance (plus one)
//! from the start, where AWS's adds concurrency gradually as the backlog persists.

use std::io::{BufRead, Seek};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent};
use cafe_consumers::emf;
use cafe_localstack::StackConfig;
use cafe_localstack::faults::FaultInjector;
use cafe_localstack::lambda::{EmulatorInvoker, Invoke, InvokeError};

use cafe_lambda_payment::requests::{self, DEFAULT_IN_FLIGHT_BOUND};

use super::{ScenarioOptions, Table, batch, ms, order, per_second};
use crate::Running;
use crate::invariants::Check;
use crate::load::{self, Http};
use crate::payments::{self, FUNCTION, INVOKE_TIMEOUT, Saga};

/// The story's own check, reported with the invariants.
pub const DRAINED: &str = "the backlog drained after the cold starts";

/// What the invocations looked like from the mapping's side.
#[derive(Debug, Default)]
struct Seen {
    /// How long each invocation took, answer or not.
    durations: Vec<Duration>,
    /// How long each message had waited on the queue when its batch was invoked.
    ages: Vec<Duration>,
}

/// An invoker that times every invocation and the age of every message in it.
#[derive(Debug, Clone)]
struct Watched<I> {
    inner: I,
    seen: Arc<Mutex<Seen>>,
}

impl<I: Invoke> Invoke for Watched<I> {
    async fn invoke(&self, event: &SqsEvent) -> Result<SqsBatchResponse, InvokeError> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let ages: Vec<Duration> = event
            .records
            .iter()
            .filter_map(|m| m.attributes.get("SentTimestamp")?.parse::<i64>().ok())
            .map(|sent| Duration::from_millis(u64::try_from(now_ms - sent).unwrap_or(0)))
            .collect();
        let started = Instant::now();
        let answer = self.inner.invoke(event).await;
        let took = started.elapsed();
        if let Ok(mut seen) = self.seen.lock() {
            seen.durations.push(took);
            seen.ages.extend(ages);
        }
        answer
    }
}

/// p50 / p99 / max of `values`, in milliseconds.
fn spread(values: &[Duration]) -> String {
    format!(
        "{} / {} / {}",
        ms(load::quantile(values, 0.5)),
        ms(load::quantile(values, 0.99)),
        ms(load::quantile(values, 1.0))
    )
}

/// The init durations the function's instances reported in their log since `offset`.
fn init_durations(log: &std::path::Path, offset: u64) -> Result<Vec<Duration>> {
    let mut file = std::fs::File::open(log).with_context(|| format!("opening {}", log.display()))?;
    file.seek(std::io::SeekFrom::Start(offset))?;
    let mut inits = Vec::new();
    for line in std::io::BufReader::new(file).lines() {
        let line = line.with_context(|| format!("reading {}", log.display()))?;
        for ms in emf::values(&line, emf::INIT_DURATION).unwrap_or_default() {
            inits.push(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
        }
    }
    Ok(inits)
}

/// Runs the story on `running` (whose own saga must not run: the instances here are
/// the function's only ones), adding its figures to `table`; answers its own check.
pub(super) async fn run(
    running: &Running,
    cfg: &StackConfig,
    http: &Http,
    base: &str,
    run_tag: &str,
    opts: &ScenarioOptions,
    table: &mut Table,
) -> Result<Check> {
    let clients = running.clients().clone();
    let sqs = &clients.sqs;
    let queue = payments::queue_url(sqs, &cfg.names.payments_queue).await?;

    // The burst, with no function instance: its payment requests wait on the queue.
    let (report, took) = batch(http, base, opts, u64::from(opts.orders), |n| order(run_tag, "a", n)).await;
    table.add(
        "burst",
        format!(
            "{} orders at {}/s, no function instance running",
            opts.orders, opts.rate
        ),
    );
    table.outcome("orders", &report);
    table.add("orders accepted", per_second(report.accepted.len(), took));
    // Every request on the queue, or as many as the consumer's bound lets in.
    let expected = (report.accepted.len() as u64).min(DEFAULT_IN_FLIGHT_BOUND);
    let waited = Instant::now();
    let queued = loop {
        let (visible, _) = payments::counts(sqs, &queue).await?;
        if visible >= expected {
            break visible;
        }
        if waited.elapsed() > opts.patience {
            bail!("{visible} payment requests reached the queue, {expected} expected");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let consumer = crate::read_side::lag_probe(cfg, &clients, vec![requests::APPLICATION.to_owned()]);
    let consumer_at_tip = async || -> Result<bool> {
        let lags = consumer.per_application().await.context("reading the consumer's lag")?;
        Ok(!lags.is_empty() && lags.iter().all(|(_, lag)| lag.is_zero()))
    };

    // Every instance at once, cold.
    let log = cfg.log_dir().join(format!("{FUNCTION}.log"));
    let offset = std::fs::metadata(&log).map_or(0, |m| m.len());
    let seen = Arc::new(Mutex::new(Seen::default()));
    let invoker = Watched {
        inner: EmulatorInvoker::new(cfg, FUNCTION, INVOKE_TIMEOUT),
        seen: seen.clone(),
    };
    let instances = opts.concurrency as usize;
    let started = Instant::now();
    let saga = Saga::start_with(cfg, sqs, &FaultInjector::off(), instances, invoker).await?;
    // Taken up: no request waits for a first receive any more, in the stream or on
    // the queue (the cold starts' own figure); drained: none left at all (the
    // gateway's transient failures, retried after the visibility timeout, included).
    let (mut taken_up, mut drained) = (None, None);
    while started.elapsed() < opts.patience {
        let (visible, in_flight) = payments::counts(sqs, &queue).await?;
        if visible == 0 && consumer_at_tip().await? {
            taken_up.get_or_insert(started.elapsed());
            if in_flight == 0 {
                drained = Some(started.elapsed());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = saga.stop(cfg, sqs).await;
    let inits = init_durations(&log, offset)?;
    let seen = std::mem::take(&mut *seen.lock().map_err(|_| anyhow::anyhow!("the invoker's figures"))?);

    let backlog = report.accepted.len() as u64;
    table.add(
        "payment requests waiting (on the queue / in the stream)",
        format!(
            "{backlog} ({queued} / {}: the consumer's bound is {DEFAULT_IN_FLIGHT_BOUND})",
            backlog.saturating_sub(queued)
        ),
    );
    table.add("instances started at once, cold", instances.to_string());
    table.add(
        "init duration p50 / p99 / max",
        format!(
            "{} (reported by {} of {instances} instances: one that got no invocation reports none)",
            spread(&inits),
            inits.len()
        ),
    );
    table.add(
        "invocation duration p50 / p99 / max",
        format!("{} ({} invocations)", spread(&seen.durations), seen.durations.len()),
    );
    table.add("message age at invocation p50 / p99 / max", spread(&seen.ages));
    let after = |at: Option<Duration>, rate: bool| {
        at.map_or("not within the patience".to_owned(), |d| {
            let mut s = format!("{:.1} s after the instances started", d.as_secs_f64());
            if rate {
                s.push_str(&format!(" ({})", per_second(backlog as usize, d)));
            }
            s
        })
    };
    table.add("backlog taken up (every request received once)", after(taken_up, true));
    table.add("backlog drained (retries included)", after(drained, false));
    table.add(
        "failed invocations / messages reported failed / dead-lettered",
        format!(
            "{} / {} / {}",
            stopped.counts.failed_invocations, stopped.counts.reported_failures, stopped.dead_letters
        ),
    );
    Ok(Check {
        name: DRAINED,
        holds: drained.is_some() && stopped.waiting == 0,
        detail: format!(
            "{backlog} requests waiting before; {} still on the queue after",
            stopped.waiting
        ),
    })
}
