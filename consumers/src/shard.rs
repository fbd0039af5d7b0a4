//! One held shard: read, process, park, checkpoint, until the shard ends, the lease is
//! lost, or the worker asks the shard to stop.
//!
//! Polling, the way the KCL does it but with the sleeps it is criticised for made
//! adaptive: a shard that is behind is read again at once; a caught-up shard waits the
//! idle interval (never under 200 ms: five reads per second is a shard's whole GetRecords
//! allowance, shared by every application); a throttled read backs off with full jitter;
//! an expired iterator is re-made from the last processed record.
//!
//! Stopping is cooperative: the token is looked at between steps and interrupts sleeps,
//! but a batch handed to the processor is always finished, then checkpointed. That is
//! what makes a SIGTERM or a rebalance replay nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::fanout;
use crate::lease::{Checkpoint, Lease, LeaseError, LeaseTable};
use crate::metrics::ShardLabels;
use crate::parking::{Parked, ParkingLot};
use crate::processor::{BatchContext, Processor, walk};
use crate::retrieval::{self, MAX_RECORD_BYTES, Record, read_limit};
use crate::telemetry::{
    BatchApplied, BatchDeferred, BatchOffered, BatchRetried, Checkpointed, FanoutFellBack, InternalEvent,
    ReadThrottled, RecordParked, ShardRead,
};
use crate::worker::Shared;

/// A lease this worker holds, shared by the shard's task (checkpoints) and the worker's
/// renewer. The mutex is held across the conditional write on purpose: both writers
/// bump the same fencing counter, so they must take turns or each would see the other's
/// write as a lost lease.
#[derive(Debug)]
pub(crate) struct HeldLease<L> {
    table: Arc<L>,
    lease: Mutex<Lease>,
}

impl<L: LeaseTable> HeldLease<L> {
    pub(crate) fn new(table: Arc<L>, lease: Lease) -> Self {
        HeldLease {
            table,
            lease: Mutex::new(lease),
        }
    }

    pub(crate) async fn snapshot(&self) -> Lease {
        self.lease.lock().await.clone()
    }

    pub(crate) async fn renew(&self) -> Result<Lease, LeaseError> {
        let mut lease = self.lease.lock().await;
        *lease = self.table.renew(&lease).await?;
        Ok(lease.clone())
    }

    pub(crate) async fn checkpoint(&self, to: Checkpoint) -> Result<(), LeaseError> {
        let mut lease = self.lease.lock().await;
        *lease = self.table.checkpoint(&lease, to).await?;
        Ok(())
    }

    /// Gives the lease up after the final checkpoint: to the worker that asked for it,
    /// or to nobody (a successor takes it at its next look).
    pub(crate) async fn finish(&self) -> Result<Option<String>, LeaseError> {
        let mut lease = self.lease.lock().await;
        let successor = lease.pending_owner.clone();
        *lease = self.table.hand_off(&lease).await?;
        Ok(successor)
    }
}

/// Why a shard's task ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ShardExit {
    /// Every record was processed and SHARD_END checkpointed: children may start.
    Ended,
    /// Another worker holds the lease now; nothing more may be written for it.
    Lost,
    /// Asked to stop; in-flight work finished and checkpointed.
    Stopped,
    /// The processor panicked.
    Panicked,
}

/// Full-jitter exponential backoff.
#[derive(Debug)]
pub(crate) struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(base: Duration, cap: Duration) -> Self {
        Backoff { base, cap, attempt: 0 }
    }

    pub(crate) fn next(&mut self) -> Duration {
        let ceiling = self.base.saturating_mul(1 << self.attempt.min(16)).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(fastrand::f64())
    }

    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Sleeps unless stopped first; false when stopped.
pub(crate) async fn pause(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = cancel.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

/// Failed subscriptions in a row before a shard falls back to polling.
const FANOUT_ATTEMPTS: u32 = 5;

/// The shard's task.
pub(crate) async fn run<P: Processor, L: LeaseTable, K: ParkingLot>(
    shared: Arc<Shared<P, L, K>>,
    held: Arc<HeldLease<L>>,
    cancel: CancellationToken,
) -> ShardExit {
    let lease = held.snapshot().await;
    let span = info_span!(
        "shard",
        application = %shared.cfg.application,
        stream = %shared.cfg.stream,
        shard = %lease.shard_id,
    );
    let mut reader = ShardReader {
        labels: ShardLabels {
            application: shared.cfg.application.clone(),
            shard: lease.shard_id.clone(),
        },
        shard: lease.shard_id.clone(),
        done: lease.checkpoint.clone(),
        checkpointed: lease.checkpoint,
        last_checkpoint: Instant::now(),
        shared,
        held,
        cancel,
    };
    let exit = reader.read().instrument(span.clone()).await;
    let exit = match exit {
        ShardExit::Stopped => reader.final_checkpoint().instrument(span.clone()).await,
        other => other,
    };
    reader.shared.metrics.forget_shard(&reader.labels);
    span.in_scope(|| info!(?exit, "shard task ended"));
    exit
}

struct ShardReader<P, L, K> {
    shared: Arc<Shared<P, L, K>>,
    held: Arc<HeldLease<L>>,
    cancel: CancellationToken,
    labels: ShardLabels,
    shard: String,
    /// Processed up to here (in memory).
    done: Checkpoint,
    /// Stored up to here.
    checkpointed: Checkpoint,
    last_checkpoint: Instant,
}

impl<P: Processor, L: LeaseTable, K: ParkingLot> ShardReader<P, L, K> {
    async fn read(&mut self) -> ShardExit {
        if let Some(arn) = self.shared.consumer_arn.get().cloned() {
            match self.read_fanout(&arn).await {
                Some(exit) => return exit,
                None => FanoutFellBack { shard: &self.labels }.emit(self.shared.sink()),
            }
        }
        self.read_polling().await
    }

    async fn read_polling(&mut self) -> ShardExit {
        let cfg = &self.shared.cfg.clone();
        let client = self.shared.kinesis.clone();
        let mut backoff = Backoff::new(cfg.retry_base, cfg.retry_cap);
        let mut iterator: Option<String> = None;
        let mut limit = read_limit(cfg.read_bytes_budget, MAX_RECORD_BYTES, cfg.max_records);
        loop {
            if self.cancel.is_cancelled() {
                return ShardExit::Stopped;
            }
            let it = match iterator.take() {
                Some(it) => it,
                None => {
                    match retrieval::start_iterator(&client, &cfg.stream, &self.shard, &self.done, cfg.start_timestamp)
                        .await
                    {
                        Ok(Some(it)) => it,
                        Ok(None) => return ShardExit::Ended,
                        Err(e) => {
                            warn!(error = %e, "cannot get a shard iterator; backing off");
                            if !pause(&self.cancel, backoff.next()).await {
                                return ShardExit::Stopped;
                            }
                            continue;
                        }
                    }
                }
            };
            let batch = match retrieval::get_batch(&client, &self.shard, &it, limit, &self.done).await {
                Ok(batch) => batch,
                Err(e) if e.code == "ExpiredIteratorException" => {
                    debug!("iterator expired; resuming from the last processed record");
                    continue;
                }
                Err(e) => {
                    if e.code == "ProvisionedThroughputExceededException" {
                        ReadThrottled { shard: &self.labels }.emit(self.shared.sink());
                    } else {
                        warn!(error = %e, "read failed; backing off");
                    }
                    iterator = Some(it);
                    if !pause(&self.cancel, backoff.next()).await {
                        return ShardExit::Stopped;
                    }
                    continue;
                }
            };
            backoff.reset();
            // A full call means more is waiting whatever MillisBehindLatest says (it
            // is coarse: the stand-in, for one, reports 0 for a shard read mid-way).
            let full = batch.kinesis_records >= usize::try_from(limit).unwrap_or(usize::MAX);
            if let Some(average) = batch.kinesis_bytes.checked_div(batch.kinesis_records) {
                limit = read_limit(cfg.read_bytes_budget, average, cfg.max_records);
            }
            ShardRead {
                shard: &self.labels,
                millis_behind_latest: batch.millis_behind_latest,
                records: batch.records.len(),
            }
            .emit(self.shared.sink());
            let caught_up = batch.records.is_empty() || (batch.millis_behind_latest == 0 && !full);
            iterator = batch.next_iterator.clone();
            if let Some(exit) = self.handle(batch).await {
                return exit;
            }
            if caught_up {
                if cfg.checkpoint_when_caught_up
                    && let Err(exit) = self.checkpoint().await
                {
                    return exit;
                }
                if !pause(&self.cancel, cfg.idle_poll).await {
                    return ShardExit::Stopped;
                }
            }
        }
    }

    /// Processes one batch (polled or pushed), ends the shard if the batch says so, and
    /// stores progress when due. `Some` when this shard's task is over.
    async fn handle(&mut self, batch: retrieval::Batch) -> Option<ShardExit> {
        if !batch.records.is_empty() {
            match self.process(batch.records, batch.millis_behind_latest).await {
                Ok(true) => {}
                Ok(false) => return Some(ShardExit::Stopped),
                Err(exit) => return Some(exit),
            }
        }
        if batch.next_iterator.is_none() {
            return Some(self.end().await);
        }
        if self.last_checkpoint.elapsed() >= self.shared.cfg.checkpoint_interval
            && let Err(exit) = self.checkpoint().await
        {
            return Some(exit);
        }
        None
    }

    /// Reads by enhanced fan-out; `None` when it keeps failing and polling should take
    /// over (the caller falls back).
    async fn read_fanout(&mut self, consumer_arn: &str) -> Option<ShardExit> {
        let cfg = self.shared.cfg.clone();
        let client = self.shared.kinesis.clone();
        let mut backoff = Backoff::new(cfg.retry_base, cfg.retry_cap);
        let mut subscription: Option<fanout::Subscription> = None;
        let mut continuation: Option<String> = None;
        let mut failures = 0u32;
        loop {
            if self.cancel.is_cancelled() {
                return Some(ShardExit::Stopped);
            }
            if failures >= FANOUT_ATTEMPTS {
                return None;
            }
            let sub = match &mut subscription {
                Some(sub) => sub,
                None => {
                    match fanout::subscribe(
                        &client,
                        consumer_arn,
                        &self.shard,
                        &self.done,
                        continuation.as_deref(),
                        cfg.start_timestamp,
                    )
                    .await
                    {
                        Ok(sub) => subscription.insert(sub),
                        Err(e) => {
                            failures += 1;
                            warn!(error = %e, failures, "subscribing failed; backing off");
                            if !pause(&self.cancel, backoff.next()).await {
                                return Some(ShardExit::Stopped);
                            }
                            continue;
                        }
                    }
                }
            };
            // Renewed before the service's 5-minute end, from the last processed record.
            let renew_at = tokio::time::Instant::from_std(sub.started + cfg.fan_out_resubscribe);
            let next = tokio::select! {
                () = self.cancel.cancelled() => return Some(ShardExit::Stopped),
                () = tokio::time::sleep_until(renew_at) => {
                    debug!("resubscribing before the 5-minute limit");
                    continuation = sub.continuation.clone();
                    subscription = None;
                    continue;
                }
                next = sub.next(&self.done) => next,
            };
            let batch = match next {
                Ok(Some(batch)) => batch,
                Ok(None) => {
                    debug!("the service ended the subscription; resubscribing");
                    continuation = sub.continuation.clone();
                    subscription = None;
                    continue;
                }
                Err(e) => {
                    failures += 1;
                    warn!(error = %e, failures, "subscription failed; resubscribing");
                    continuation = sub.continuation.clone();
                    subscription = None;
                    if !pause(&self.cancel, backoff.next()).await {
                        return Some(ShardExit::Stopped);
                    }
                    continue;
                }
            };
            failures = 0;
            backoff.reset();
            ShardRead {
                shard: &self.labels,
                millis_behind_latest: batch.millis_behind_latest,
                records: batch.records.len(),
            }
            .emit(self.shared.sink());
            if let Some(exit) = self.handle(batch).await {
                return Some(exit);
            }
        }
    }

    /// Offers `records` to the processor until every one is done or parked. Ok(false)
    /// when asked to stop between retries; Err when the lease was lost.
    async fn process(&mut self, mut records: Vec<Record>, millis_behind_latest: i64) -> Result<bool, ShardExit> {
        let shared = self.shared.clone();
        let mut backoff = Backoff::new(shared.cfg.retry_base, shared.cfg.retry_cap);
        while !records.is_empty() {
            let ctx = BatchContext {
                application: &shared.cfg.application,
                shard_id: &self.shard,
                millis_behind_latest,
            };
            let started = Instant::now();
            let outcomes = shared.processor.process(ctx, &records).await;
            BatchOffered {
                worker: &shared.worker_labels,
                elapsed: started.elapsed(),
            }
            .emit(shared.sink());
            let mut w = walk(&outcomes, records.len());
            for (i, reason) in std::mem::take(&mut w.park) {
                let Some(record) = records.get(i) else { continue };
                if !self.park(record, &reason).await {
                    // Stopped before the record was safely parked: the shard stays at it.
                    w.finished = i;
                    w.retry = None;
                    break;
                }
            }
            if let Some(last) = w.finished.checked_sub(1).and_then(|i| records.get(i)) {
                self.done = last.checkpoint();
                BatchApplied {
                    shard: &self.labels,
                    records: &records[..w.finished],
                }
                .emit(shared.sink());
                records.drain(..w.finished);
            }
            if records.is_empty() {
                break;
            }
            if self.cancel.is_cancelled() {
                return Ok(false);
            }
            // Back-pressure waits a short fixed pause; a failure backs off further each time.
            let wait = if w.deferred {
                BatchDeferred {
                    shard: &self.labels,
                    first: records.first(),
                    reason: w.retry.as_deref().unwrap_or(""),
                }
                .emit(shared.sink());
                backoff.reset();
                shared.cfg.defer_pause
            } else {
                BatchRetried {
                    shard: &self.labels,
                    first: records.first(),
                    reason: w.retry.as_deref().unwrap_or("stopped"),
                }
                .emit(shared.sink());
                backoff.next()
            };
            // Progress made so far is kept even if the retries go on for a long time.
            if self.done != self.checkpointed {
                self.checkpoint().await?;
            }
            if !pause(&self.cancel, wait).await {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Parks one record, retrying until it is stored; false if stopped first.
    async fn park(&self, record: &Record, reason: &str) -> bool {
        let parked = Parked {
            shard_id: self.shard.clone(),
            record: record.clone(),
            reason: reason.to_owned(),
        };
        let mut backoff = Backoff::new(self.shared.cfg.retry_base, self.shared.cfg.retry_cap);
        loop {
            match self.shared.parking.park(&self.shared.cfg.application, &parked).await {
                Ok(()) => {
                    RecordParked {
                        shard: &self.labels,
                        record,
                        reason,
                    }
                    .emit(self.shared.sink());
                    return true;
                }
                Err(e) => {
                    warn!(error = %e, "parking failed; retrying");
                    if !pause(&self.cancel, backoff.next()).await {
                        return false;
                    }
                }
            }
        }
    }

    async fn checkpoint(&mut self) -> Result<(), ShardExit> {
        if self.done == self.checkpointed {
            self.last_checkpoint = Instant::now();
            Checkpointed { shard: &self.labels }.emit(self.shared.sink());
            return Ok(());
        }
        let mut backoff = Backoff::new(self.shared.cfg.retry_base, self.shared.cfg.retry_cap);
        // Past the failover time the lease is somebody else's anyway.
        let give_up = Instant::now() + self.shared.cfg.failover;
        loop {
            match self.held.checkpoint(self.done.clone()).await {
                Ok(()) => {
                    self.checkpointed = self.done.clone();
                    self.last_checkpoint = Instant::now();
                    Checkpointed { shard: &self.labels }.emit(self.shared.sink());
                    return Ok(());
                }
                Err(LeaseError::Lost(_)) => {
                    warn!("lease lost: another worker owns this shard now; stopping without checkpointing");
                    return Err(ShardExit::Lost);
                }
                Err(e) if e.is_transient() && Instant::now() < give_up => {
                    warn!(error = %e, "checkpoint failed; retrying");
                    // Not cancellable: a final checkpoint is the point of a graceful stop.
                    tokio::time::sleep(backoff.next()).await;
                }
                Err(e) => {
                    warn!(error = %e, "checkpoint refused; giving the shard up");
                    return Err(ShardExit::Lost);
                }
            }
        }
    }

    async fn final_checkpoint(&mut self) -> ShardExit {
        match self.checkpoint().await {
            Ok(()) => ShardExit::Stopped,
            Err(exit) => exit,
        }
    }

    /// The shard is closed and every record in it processed.
    async fn end(&mut self) -> ShardExit {
        self.done = Checkpoint::ShardEnd;
        match self.checkpoint().await {
            Ok(()) => {
                info!("shard end reached and checkpointed");
                ShardExit::Ended
            }
            Err(exit) => exit,
        }
    }
}
