//! The worker: holds leases, runs one task per held shard, and keeps the set balanced.
//!
//! One loop, four timers-or-events:
//! - **renew** every failover/3: each held lease's counter is bumped. An answer that
//!   carries a handoff request stops that shard gracefully (finish, checkpoint, hand
//!   over); a refused renewal means the lease was taken from us and the shard stops at
//!   once, writing nothing more.
//! - **take** every `take_interval`: list the table, adopt leases handed to us, take
//!   what [`plan`] says, ask one overloaded worker for one lease.
//! - **discover** every `discovery_interval`, and at once when a shard of ours ends: new
//!   shards get leases, and a child whose parents just finished is taken in the same
//!   breath (no idle child waiting for the next timer, a KCL complaint).
//! - **a shard task ends**: Ended → its children are looked for; Stopped → hand the
//!   lease over or release it; Lost → forget it.
//!
//! Shutdown (the token): stop taking, let every shard finish its in-flight batch and
//! checkpoint, keep renewing meanwhile, then release (or hand over) every lease so a
//! successor starts at once instead of waiting out the failover time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::discovery::{self, leases_to_create};
use crate::lease::{Checkpoint, Lease, LeaseError, LeaseTable, Watch, plan};
use crate::metrics::{Metrics, ShardLabels, WorkerLabels};
use crate::parking::ParkingLot;
use crate::processor::Processor;
use crate::shard::{self, HeldLease, ShardExit};
use crate::telemetry::{InternalEvent, LeaseHandedOff, LeaseLost, LeaseRenewed, LeaseTaken, LeasesHeld, Sink, Totals};

/// How a worker behaves. Defaults are the KCL's where it has one.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The consumer application: one per read model; leases are per application.
    pub application: String,
    /// The stream.
    pub stream: String,
    /// This worker's id; unique per process.
    pub worker_id: String,
    /// A lease whose counter stood still this long is expired (default 10 s).
    pub failover: Duration,
    /// How often the lease table is looked at for leases to take (default 2 s).
    pub take_interval: Duration,
    /// How often ListShards runs besides shard ends (default 60 s).
    pub discovery_interval: Duration,
    /// Sleep between reads of a caught-up shard (default 1 s, at least 200 ms).
    pub idle_poll: Duration,
    /// GetRecords `Limit` ceiling (default 10,000, the service maximum).
    pub max_records: i32,
    /// Bytes one GetRecords call is aimed at (default 2 MiB); the record limit adapts to
    /// each shard's record size so memory per shard stays flat (see `retrieval::read_limit`).
    pub read_bytes_budget: usize,
    /// A shard's progress is stored at most this often, and always at shutdown, at
    /// handoff and at shard end (default 1 s). The uncheckpointed window is what a
    /// crash replays.
    pub checkpoint_interval: Duration,
    /// Also store it whenever the shard catches up, before the idle poll (default on):
    /// at most one write per idle poll, and the lease table, which outside readers such
    /// as `lag` and a replay's governor judge lag from, is then never a checkpoint
    /// interval behind a shard that keeps up.
    pub checkpoint_when_caught_up: bool,
    /// Where a brand-new application starts.
    pub initial_position: Checkpoint,
    /// The start time for `initial_position` = AT_TIMESTAMP.
    pub start_timestamp: Option<chrono::DateTime<chrono::Utc>>,
    /// Read by enhanced fan-out as this registered consumer (None: polling). A shard
    /// whose subscriptions keep failing falls back to polling.
    pub fan_out: Option<String>,
    /// A subscription is renewed after this long (the service ends it at 5 minutes).
    pub fan_out_resubscribe: Duration,
    /// First retry delay (full jitter, doubling).
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_cap: Duration,
    /// Pause before offering a deferred batch again (back-pressure: short and fixed, so
    /// the shard resumes soon after its downstream has room).
    pub defer_pause: Duration,
    /// Longest a stop waits for in-flight batches. A shard still busy then (its
    /// processor or a checkpoint stuck on a hung dependency) is abandoned: its lease is
    /// neither released nor renewed, so another worker takes it after `failover` and
    /// re-reads from the last checkpoint. A stop never turns into a hang.
    pub drain_timeout: Duration,
}

/// The floor on `idle_poll`: a shard allows 5 GetRecords per second in total.
pub const MIN_IDLE_POLL: Duration = Duration::from_millis(200);

impl WorkerConfig {
    /// Defaults for `application` on `stream`, with a unique worker id.
    pub fn new(application: impl Into<String>, stream: impl Into<String>) -> Self {
        WorkerConfig {
            application: application.into(),
            stream: stream.into(),
            worker_id: default_worker_id(),
            failover: Duration::from_secs(10),
            take_interval: Duration::from_secs(2),
            discovery_interval: Duration::from_secs(60),
            idle_poll: Duration::from_secs(1),
            max_records: 10_000,
            read_bytes_budget: 2 * 1024 * 1024,
            checkpoint_interval: Duration::from_secs(1),
            checkpoint_when_caught_up: true,
            initial_position: Checkpoint::TrimHorizon,
            start_timestamp: None,
            fan_out: None,
            fan_out_resubscribe: Duration::from_secs(270),
            retry_base: Duration::from_millis(100),
            retry_cap: Duration::from_secs(10),
            defer_pause: Duration::from_millis(250),
            drain_timeout: Duration::from_secs(15),
        }
    }
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    format!("{host}-{}-{:08x}", std::process::id(), fastrand::u32(..))
}

/// What a worker did, returned at shutdown.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WorkerReport {
    /// User records processed (done or parked).
    pub records: u64,
    /// Records parked.
    pub parked: u64,
    /// Leases taken (including handed to us).
    pub leases_taken: u64,
    /// Leases lost without a handoff.
    pub leases_lost: u64,
    /// Leases handed over on request.
    pub leases_handed_off: u64,
    /// Shards this worker saw to their end.
    pub shards_ended: u64,
    /// Shards that fell back from enhanced fan-out to polling.
    pub fanout_fallbacks: u64,
    /// Shards still busy when the stop's drain deadline passed, left to failover.
    pub shards_abandoned: Vec<String>,
}

/// What every shard task shares.
#[derive(Debug)]
pub(crate) struct Shared<P, L, K> {
    pub(crate) cfg: WorkerConfig,
    pub(crate) kinesis: aws_sdk_kinesis::Client,
    pub(crate) processor: Arc<P>,
    pub(crate) parking: Arc<K>,
    pub(crate) metrics: Metrics,
    pub(crate) worker_labels: WorkerLabels,
    pub(crate) totals: Totals,
    /// The registered fan-out consumer, once registration succeeded.
    pub(crate) consumer_arn: std::sync::OnceLock<String>,
    table: Arc<L>,
}

impl<P, L, K> Shared<P, L, K> {
    /// Where telemetry events go ([`crate::telemetry`]).
    pub(crate) fn sink(&self) -> Sink<'_> {
        Sink {
            metrics: &self.metrics,
            totals: &self.totals,
        }
    }
}

/// A consumer worker; see the module docs.
#[derive(Debug)]
pub struct Worker<P, L, K> {
    shared: Arc<Shared<P, L, K>>,
}

struct Running<L> {
    held: Arc<HeldLease<L>>,
    cancel: CancellationToken,
    /// The lease was taken from us: nothing may be written for it any more.
    lost: bool,
}

impl<P: Processor, L: LeaseTable, K: ParkingLot> Worker<P, L, K> {
    /// A worker over `table`, reading with `kinesis`, feeding `processor`.
    pub fn new(
        mut cfg: WorkerConfig,
        kinesis: aws_sdk_kinesis::Client,
        table: L,
        parking: Arc<K>,
        processor: Arc<P>,
        metrics: Metrics,
    ) -> Self {
        cfg.idle_poll = cfg.idle_poll.max(MIN_IDLE_POLL);
        let worker_labels = WorkerLabels {
            application: cfg.application.clone(),
            worker: cfg.worker_id.clone(),
        };
        Worker {
            shared: Arc::new(Shared {
                cfg,
                kinesis,
                processor,
                parking,
                metrics,
                worker_labels,
                totals: Totals::default(),
                consumer_arn: std::sync::OnceLock::new(),
                table: Arc::new(table),
            }),
        }
    }

    /// Runs until `shutdown` is cancelled, then drains (see the module docs).
    pub async fn run(self, shutdown: CancellationToken) -> WorkerReport {
        let span = info_span!(
            "worker",
            application = %self.shared.cfg.application,
            stream = %self.shared.cfg.stream,
            worker = %self.shared.cfg.worker_id,
        );
        let mut state = State {
            shared: self.shared.clone(),
            running: HashMap::new(),
            tasks: JoinSet::new(),
            watch: Watch::new(self.shared.cfg.failover),
            report: WorkerReport::default(),
            children_token: shutdown.child_token(),
        };
        state.run(shutdown).instrument(span).await
    }
}

struct State<P, L, K> {
    shared: Arc<Shared<P, L, K>>,
    running: HashMap<String, Running<L>>,
    tasks: JoinSet<(String, ShardExit)>,
    watch: Watch,
    report: WorkerReport,
    children_token: CancellationToken,
}

impl<P: Processor, L: LeaseTable, K: ParkingLot> State<P, L, K> {
    async fn run(&mut self, shutdown: CancellationToken) -> WorkerReport {
        let cfg = self.shared.cfg.clone();
        info!("worker starting");
        let mut renew = tokio::time::interval(cfg.failover / 3);
        let mut take = tokio::time::interval(cfg.take_interval);
        let mut discover = tokio::time::interval(cfg.discovery_interval);
        for t in [&mut renew, &mut take, &mut discover] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        if let Some(name) = &cfg.fan_out {
            match crate::fanout::register(&self.shared.kinesis, &cfg.stream, name).await {
                Ok(arn) => {
                    info!(consumer = %name, %arn, "reading by enhanced fan-out");
                    let _ = self.shared.consumer_arn.set(arn);
                }
                Err(e) => warn!(error = %e, "cannot register the fan-out consumer; polling instead"),
            }
        }
        // Discovery first, so the first take round sees every shard's lease.
        discover.tick().await;
        self.discover().await;
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(joined) = self.tasks.join_next() => {
                    if self.on_exit(joined).await {
                        self.discover().await;
                        self.take_round().await;
                    }
                }
                _ = renew.tick() => self.renew_all().await,
                _ = take.tick() => self.take_round().await,
                _ = discover.tick() => self.discover().await,
            }
        }
        info!(
            shards = self.running.len(),
            "worker stopping: finishing in-flight batches"
        );
        self.children_token.cancel();
        let deadline = tokio::time::sleep(cfg.drain_timeout);
        tokio::pin!(deadline);
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(joined) = self.tasks.join_next() => { self.on_exit(joined).await; }
                _ = renew.tick() => self.renew_all().await,
                () = &mut deadline => {
                    self.abandon();
                    break;
                }
            }
        }
        let t = &self.shared.totals;
        self.report.records = Totals::get(&t.records);
        self.report.parked = Totals::get(&t.parked);
        self.report.fanout_fallbacks = Totals::get(&t.fanout_fallbacks);
        self.report.leases_taken = Totals::get(&t.leases_taken);
        self.report.leases_lost = Totals::get(&t.leases_lost);
        self.report.leases_handed_off = Totals::get(&t.leases_handed_off);
        info!(report = ?self.report, "worker stopped");
        self.report.clone()
    }

    /// Gives up on the shards still draining: their tasks are aborted, their leases left
    /// to expire (checkpoints stay at the last batch that finished).
    fn abandon(&mut self) {
        self.tasks.abort_all();
        let mut shards: Vec<String> = self.running.drain().map(|(shard, _)| shard).collect();
        shards.sort();
        warn!(
            ?shards,
            drain_timeout = ?self.shared.cfg.drain_timeout,
            "stop deadline passed with batches in flight; leaving these shards to failover"
        );
        self.report.shards_abandoned = shards;
        self.set_held_gauge();
    }

    fn set_held_gauge(&self) {
        LeasesHeld {
            worker: &self.shared.worker_labels,
            held: self.running.len(),
        }
        .emit(self.shared.sink());
    }

    fn start(&mut self, lease: Lease) {
        let shard_id = lease.shard_id.clone();
        let held = Arc::new(HeldLease::new(self.shared.table.clone(), lease));
        let cancel = self.children_token.child_token();
        let task = std::panic::AssertUnwindSafe(shard::run(self.shared.clone(), held.clone(), cancel.clone()));
        let id = shard_id.clone();
        self.tasks.spawn(async move {
            let exit = futures::FutureExt::catch_unwind(task)
                .await
                .unwrap_or(ShardExit::Panicked);
            (id, exit)
        });
        LeaseTaken {
            worker: &self.shared.worker_labels,
            shard: &shard_id,
        }
        .emit(self.shared.sink());
        self.running.insert(
            shard_id,
            Running {
                held,
                cancel,
                lost: false,
            },
        );
        self.set_held_gauge();
    }

    fn mark_lost(&mut self, shard_id: &str) {
        if let Some(r) = self.running.get_mut(shard_id)
            && !r.lost
        {
            r.lost = true;
            r.cancel.cancel();
            self.count_lost(shard_id);
        }
    }

    fn count_lost(&self, shard_id: &str) {
        LeaseLost {
            worker: &self.shared.worker_labels,
            shard: shard_id,
        }
        .emit(self.shared.sink());
    }

    /// Handles a finished shard task; true when a shard ended (look for its children).
    async fn on_exit(&mut self, joined: Result<(String, ShardExit), tokio::task::JoinError>) -> bool {
        let (shard_id, exit) = match joined {
            Ok(pair) => pair,
            Err(e) => {
                // Shard tasks catch their panics (below) and are aborted only past the
                // drain deadline, after which nothing joins them.
                warn!(error = %e, "a shard task failed to join");
                return false;
            }
        };
        let Some(r) = self.running.remove(&shard_id) else {
            return false;
        };
        self.set_held_gauge();
        match exit {
            ShardExit::Lost => {
                if !r.lost {
                    self.count_lost(&shard_id);
                }
                false
            }
            ShardExit::Ended => {
                self.report.shards_ended += 1;
                // The finished lease stays in the table (children look for it); nobody
                // needs to own it.
                if let Err(e) = r.held.finish().await {
                    debug!(shard = %shard_id, error = %e, "releasing a finished lease");
                }
                true
            }
            ShardExit::Panicked => {
                // A bug in the processor. The lease is neither released nor renewed: it
                // expires and is retried after the failover time, not in a hot loop.
                warn!(shard = %shard_id, "the processor panicked; the lease will expire and be retried");
                false
            }
            ShardExit::Stopped if r.lost => false,
            ShardExit::Stopped => {
                match r.held.finish().await {
                    Ok(Some(successor)) => LeaseHandedOff {
                        worker: &self.shared.worker_labels,
                        shard: &shard_id,
                        successor: &successor,
                    }
                    .emit(self.shared.sink()),
                    Ok(None) => info!(shard = %shard_id, "lease released"),
                    Err(e) => warn!(shard = %shard_id, error = %e, "could not release the lease; it will expire"),
                }
                false
            }
        }
    }

    async fn renew_all(&mut self) {
        let renewals = self.running.iter().filter(|(_, r)| !r.lost).map(|(shard, r)| {
            let (shard, held) = (shard.clone(), r.held.clone());
            async move { (shard, held.renew().await) }
        });
        for (shard, result) in futures::future::join_all(renewals).await {
            if result.is_ok() {
                LeaseRenewed {
                    shard: &ShardLabels {
                        application: self.shared.cfg.application.clone(),
                        shard: shard.clone(),
                    },
                }
                .emit(self.shared.sink());
            }
            match result {
                Ok(lease) if lease.pending_owner.is_some() => {
                    if let Some(r) = self.running.get(&shard)
                        && !r.cancel.is_cancelled()
                    {
                        info!(%shard, to = ?lease.pending_owner, "handoff requested: finishing the shard");
                        r.cancel.cancel();
                    }
                }
                Ok(_) => {}
                Err(LeaseError::Lost(_)) => self.mark_lost(&shard),
                Err(e) => warn!(%shard, error = %e, "renewal failed; retrying at the next tick"),
            }
        }
    }

    async fn take_round(&mut self) {
        if self.children_token.is_cancelled() {
            return;
        }
        let leases = match self.shared.table.list().await {
            Ok(leases) => leases,
            Err(e) => {
                warn!(error = %e, "cannot list leases; trying again later");
                return;
            }
        };
        let now = Instant::now();
        self.watch.observe(&leases, now);
        let me = self.shared.cfg.worker_id.clone();
        for lease in &leases {
            let ours = lease.is_owned_by(&me);
            match self.running.get(&lease.shard_id) {
                // Taken from us while we were not looking.
                Some(r) if !ours && !r.lost => self.mark_lost(&lease.shard_id.clone()),
                // Handed to us by its previous owner.
                None if ours && !lease.is_finished() => {
                    info!(shard = %lease.shard_id, "adopting a lease handed to this worker");
                    self.start(lease.clone());
                }
                _ => {}
            }
        }
        let p = plan(&leases, &self.watch, &me, now);
        for shard in p.take {
            if self.running.contains_key(&shard) {
                continue;
            }
            let Some(seen) = leases.iter().find(|l| l.shard_id == shard) else {
                continue;
            };
            match self.shared.table.take(seen, &me).await {
                Ok(lease) => {
                    info!(%shard, previous = ?seen.owner, "lease taken");
                    self.start(lease);
                }
                Err(LeaseError::Lost(_)) => debug!(%shard, "another worker took it first"),
                Err(e) => warn!(%shard, error = %e, "taking a lease failed"),
            }
        }
        if let Some(shard) = p.steal
            && let Some(seen) = leases.iter().find(|l| l.shard_id == shard)
        {
            match self.shared.table.request_handoff(seen, &me).await {
                Ok(_) => info!(%shard, from = ?seen.owner, "asked for a lease to rebalance"),
                Err(e) => debug!(%shard, error = %e, "handoff request not placed"),
            }
        }
    }

    async fn discover(&mut self) {
        let cfg = &self.shared.cfg;
        let shards = match discovery::list_shards(&self.shared.kinesis, &cfg.stream).await {
            Ok(shards) => shards,
            Err(e) => {
                warn!(error = %e, "shard discovery failed; trying again later");
                return;
            }
        };
        let existing = match self.shared.table.list().await {
            Ok(leases) => leases,
            Err(e) => {
                warn!(error = %e, "cannot list leases for discovery");
                return;
            }
        };
        for lease in leases_to_create(&shards, &existing, &cfg.initial_position) {
            match self.shared.table.create(&lease).await {
                Ok(true) => info!(shard = %lease.shard_id, parents = ?lease.parent_shard_ids, "lease created"),
                Ok(false) => {}
                Err(e) => warn!(shard = %lease.shard_id, error = %e, "creating a lease failed"),
            }
        }
    }
}
