//! Every status the lag monitor can give, driven with a real worker (or a stand-in
//! owner), real checkpoints in the lease table and real records on the stream: IDLE,
//! OK, WARN, STALL, STOP, REWIND, DEAD, each judged per shard and rolled up per
//! application.

use std::sync::Arc;
use std::time::Duration;

use cafe_consumers::lag::LagProbe;
use cafe_consumers::lease::{Checkpoint, LeaseTable};
use cafe_consumers::monitor::{ApplicationReport, LagMonitor, MonitorConfig};
use cafe_consumers::status::{Rules, Status};
use cafe_consumers::{BatchContext, Outcome, Processor, Record};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Collector, Fixture, fixture};

const EVERY: Duration = Duration::from_millis(300);

fn monitor(f: &Fixture, app: &str) -> LagMonitor {
    LagMonitor::new(
        LagProbe {
            kinesis: f.kinesis.clone(),
            stream: f.stream.clone(),
            dynamodb: f.dynamodb.clone(),
            leases_table: f.leases_table.clone(),
            applications: vec![app.to_owned()],
        },
        MonitorConfig {
            every: EVERY,
            rules: Rules {
                stall_after: Duration::from_secs(3),
                dead_after: Duration::from_secs(4),
            },
            ..MonitorConfig::default()
        },
    )
}

/// Looks until the application shows `want` (returns its report) or `limit` passes.
async fn until(m: &mut LagMonitor, want: Status, limit: Duration) -> ApplicationReport {
    until_with(m, want, limit, |_| true).await
}

/// Looks until the application shows `want` and `also` holds of its report.
async fn until_with(
    m: &mut LagMonitor,
    want: Status,
    limit: Duration,
    also: impl Fn(&ApplicationReport) -> bool,
) -> ApplicationReport {
    let deadline = std::time::Instant::now() + limit;
    loop {
        m.look().await;
        let report = m.view().report();
        let app = report.applications[0].clone();
        if app.status == want && also(&app) {
            return app;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "wanted {want:?} within {limit:?}; last {app:#?} (error {:?})",
            report.error
        );
        tokio::time::sleep(EVERY).await;
    }
}

/// The roll-up of a one-shard application is its shard: status, and lags that agree.
fn rolled_up(app: &ApplicationReport, want: Status) {
    assert_eq!(app.status, want);
    assert_eq!(app.shards.len(), 1);
    assert_eq!(app.shards[0].status, want);
    assert_eq!(app.lag_ms, app.shards[0].lag_ms);
    assert_eq!(app.total_lag_ms, app.shards[0].lag_ms);
}

/// Applies each record after `pause`: slower than the producer, so the checkpoint
/// advances while the lag grows.
#[derive(Debug)]
struct Slow(Duration);

impl Processor for Slow {
    async fn process(&self, _: BatchContext<'_>, records: &[Record]) -> Vec<Outcome> {
        tokio::time::sleep(self.0 * u32::try_from(records.len()).unwrap_or(1)).await;
        vec![Outcome::Done; records.len()]
    }
}

/// Never finishes a batch (a store that accepts connections and never answers).
#[derive(Debug)]
struct Hung;

impl Processor for Hung {
    async fn process(&self, _: BatchContext<'_>, _: &[Record]) -> Vec<Outcome> {
        futures::future::pending::<()>().await;
        Vec::new()
    }
}

async fn put(f: &Fixture, from: u64, n: u64) {
    let records: Vec<(String, u64)> = (from..from + n).map(|i| ("k".to_owned(), i)).collect();
    f.put(&records).await;
}

#[tokio::test]
async fn idle_then_ok_under_a_load_the_worker_keeps_up_with() {
    let f = fixture(1).await;
    let app = "status-ok";
    let (stop, worker) = f.spawn(f.config(app, "w1"), Collector::new("w1"));
    let mut m = monitor(&f, app);
    // Nothing on the stream, the owner renews: idle.
    let owned_by = |w: &'static str| move |a: &ApplicationReport| a.shards[0].owner.as_deref() == Some(w);
    let idle = until_with(&mut m, Status::Idle, Duration::from_secs(20), owned_by("w1")).await;
    rolled_up(&idle, Status::Idle);
    // Records arrive and are applied: at some look nothing waits, so OK.
    let producing = CancellationToken::new();
    let producer = f.produce(2, producing.clone());
    // OK once the checkpoint has moved past records (the window holds the IDLE looks
    // before, with a checkpoint that had not moved).
    let applied = |a: &ApplicationReport| a.shards[0].checkpoint != "TRIM_HORIZON";
    let ok = until_with(&mut m, Status::Ok, Duration::from_secs(20), applied).await;
    rolled_up(&ok, Status::Ok);
    assert_eq!(ok.shards[0].owner.as_deref(), Some("w1"));
    producing.cancel();
    producer.await.unwrap();
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn warn_while_the_checkpoint_advances_slower_than_records_arrive() {
    let f = fixture(1).await;
    let app = "status-warn";
    let cfg = cafe_consumers::WorkerConfig {
        max_records: 1,
        ..f.config(app, "w1")
    };
    let (stop, worker) = f.spawn(cfg, Arc::new(Slow(Duration::from_millis(250))));
    let producing = CancellationToken::new();
    // Ten records a second (two keys every 50 ms is forty; one key every 100 ms is ten).
    let producer = {
        let (f, stop) = (f.clone(), producing.clone());
        tokio::spawn(async move {
            // Events with their own occurred_at, which the lag is measured by (the
            // stand-in rounds arrival times to the second: a sawtooth that would hide
            // the growth).
            let mut n = 0;
            while !stop.is_cancelled() {
                let e = cafe_events::samples::restocked(1, n).unwrap();
                cafe_localstack::testing::put_raw(&f.kinesis, &f.stream, &[(e.partition_key(), e.encode())]).await;
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut m = monitor(&f, app);
    let warn = until(&mut m, Status::Warn, Duration::from_secs(30)).await;
    rolled_up(&warn, Status::Warn);
    assert!(warn.lag_ms > 0);
    // WARN, not a stall in the making: it holds for longer than the stall rule's 3 s,
    // because the checkpoint keeps moving, while the lag keeps growing.
    let (first_checkpoint, first_lag) = (warn.shards[0].checkpoint.clone(), warn.lag_ms);
    let held_since = std::time::Instant::now();
    let mut last = warn;
    while held_since.elapsed() < Duration::from_secs(4) {
        tokio::time::sleep(EVERY).await;
        m.look().await;
        last = m.view().report().applications[0].clone();
        assert_eq!(last.status, Status::Warn, "{last:#?}");
    }
    assert_ne!(last.shards[0].checkpoint, first_checkpoint, "the checkpoint advanced");
    assert!(last.lag_ms > first_lag, "the lag grew: {first_lag} -> {}", last.lag_ms);
    producing.cancel();
    producer.await.unwrap();
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn stall_when_the_processor_hangs_while_its_owner_renews() {
    let f = fixture(1).await;
    let app = "status-stall";
    let mut cfg = f.config(app, "w1");
    cfg.drain_timeout = Duration::from_millis(500);
    let (stop, worker) = f.spawn(cfg, Arc::new(Hung));
    put(&f, 0, 5).await;
    let mut m = monitor(&f, app);
    let stall = until(&mut m, Status::Stall, Duration::from_secs(30)).await;
    rolled_up(&stall, Status::Stall);
    assert!(stall.lag_ms > 0);
    // Heartbeats keep coming: a stall, not a dead owner.
    assert!(stall.shards[0].heartbeat_age_ms < 4_000, "{stall:?}");
    stop.cancel();
    worker.await.unwrap();
}

#[tokio::test]
async fn stop_when_records_wait_and_nobody_owns_the_shard() {
    let f = fixture(1).await;
    let app = "status-stop";
    let (stop, worker) = f.spawn(f.config(app, "w1"), Collector::new("w1"));
    put(&f, 0, 3).await;
    let mut m = monitor(&f, app);
    let owned = |a: &ApplicationReport| a.shards[0].owner.as_deref() == Some("w1");
    until_with(&mut m, Status::Idle, Duration::from_secs(20), owned).await;
    // The worker stops and releases its lease; records keep arriving.
    stop.cancel();
    worker.await.unwrap();
    put(&f, 3, 3).await;
    let stopped = until(&mut m, Status::Stop, Duration::from_secs(20)).await;
    rolled_up(&stopped, Status::Stop);
    assert_eq!(stopped.shards[0].owner, None);
}

#[tokio::test]
async fn rewind_when_the_checkpoint_moves_back_and_dead_when_the_owner_stops_renewing() {
    let f = fixture(1).await;
    let app = "status-rewind";
    let (stop, worker) = f.spawn(f.config(app, "w1"), Collector::new("w1"));
    put(&f, 0, 5).await;
    let mut m = monitor(&f, app);
    let applied =
        |a: &ApplicationReport| a.shards[0].owner.as_deref() == Some("w1") && a.shards[0].checkpoint != "TRIM_HORIZON";
    until_with(&mut m, Status::Idle, Duration::from_secs(20), applied).await;
    stop.cancel();
    worker.await.unwrap();
    // An operator's owner takes the released lease and sets the checkpoint back to
    // the start (as a mistaken reset would).
    let leases = f.leases(app);
    let lease = leases.list().await.unwrap().remove(0);
    let mine = leases.take(&lease, "operator").await.unwrap();
    let back = leases.checkpoint(&mine, Checkpoint::TrimHorizon).await.unwrap();
    let rewind = until(&mut m, Status::Rewind, Duration::from_secs(10)).await;
    rolled_up(&rewind, Status::Rewind);
    // The operator's owner never renews: once the rewind has left the window, its
    // standing heartbeat makes the shard DEAD (records wait behind the old checkpoint).
    let dead = until(&mut m, Status::Dead, Duration::from_secs(20)).await;
    rolled_up(&dead, Status::Dead);
    assert_eq!(dead.shards[0].owner.as_deref(), Some("operator"));
    assert!(dead.shards[0].heartbeat_age_ms >= 4_000, "{dead:?}");
    let _ = back;
}
