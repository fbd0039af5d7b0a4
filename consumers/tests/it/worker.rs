//! The worker loop in-process against the local stack: processing contract, rebalancing
//! by handoff, resharding order. (Crashes and signals need real processes: cli/tests.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use cafe_consumers::WorkerConfig;
use cafe_consumers::lease::{Checkpoint, LeaseTable};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Collector, Seen, fixture};

fn keyed(key: &str, range: std::ops::Range<u64>) -> Vec<(String, u64)> {
    range.map(|n| (key.to_owned(), n)).collect()
}

/// A record the processor can never handle is parked with its reason and bytes; a
/// record that fails transiently is retried until it succeeds; nothing is skipped or
/// reordered, and the checkpoint ends past the last record.
#[tokio::test]
async fn poison_is_parked_transient_failures_are_retried_and_the_shard_moves_on() {
    let fx = fixture(1).await;
    let mut records = keyed("k", 0..10);
    fx.put(&records).await;
    fx.kinesis
        .put_record()
        .stream_name(&fx.stream)
        .partition_key("k")
        .data(aws_sdk_kinesis::primitives::Blob::new("poison: not an envelope"))
        .send()
        .await
        .unwrap();
    let rest = keyed("k", 10..30);
    fx.put(&rest).await;
    records.extend(rest);

    let collector = Collector::new("w");
    collector.flaky.lock().unwrap().insert("k:20".into(), 3);
    let (stop, worker) = fx.spawn(fx.config("poison", "w"), collector.clone());
    fx.eventually("all 30 good records processed", Duration::from_secs(30), async || {
        collector.seen().len() >= 30
    })
    .await;
    stop.cancel();
    let report = worker.await.unwrap();

    let seen: Vec<(String, u64)> = collector.seen().into_iter().map(|s| (s.key, s.n)).collect();
    assert_eq!(
        seen, records,
        "every good record once, in order, the flaky one after its retries"
    );
    assert_eq!(report.parked, 1);
    assert_eq!(report.records, 31, "30 done + 1 parked");

    let parked = fx.parking().list("poison").await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(&parked[0].record.data[..], b"poison: not an envelope");
    assert!(parked[0].reason.contains("cannot decode"), "{:?}", parked[0].reason);

    let leases = fx.leases("poison").list().await.unwrap();
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].owner, None, "released at shutdown");
    let last = fx
        .kinesis
        .get_shard_iterator()
        .stream_name(&fx.stream)
        .shard_id(&leases[0].shard_id)
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap();
    let all = fx
        .kinesis
        .get_records()
        .shard_iterator(last.shard_iterator().unwrap())
        .send()
        .await
        .unwrap();
    let last_sequence = all.records().last().unwrap().sequence_number().to_owned();
    assert_eq!(
        leases[0].checkpoint,
        Checkpoint::Sequence {
            sequence: last_sequence,
            sub: 0
        },
        "checkpointed past everything at shutdown"
    );
}

/// A worker that joins later gets its share by asking, and the owner hands leases over
/// after its final checkpoint: with a producer running throughout, every record is
/// processed exactly once.
#[tokio::test]
async fn rebalancing_by_handoff_replays_nothing() {
    let fx = fixture(4).await;
    let stop_producing = CancellationToken::new();
    let producer = fx.produce(8, stop_producing.clone());

    // No periodic checkpoints: only the handoff's own final checkpoint saves the
    // successor from replaying.
    let config = |worker: &str| WorkerConfig {
        checkpoint_interval: Duration::from_secs(3600),
        checkpoint_when_caught_up: false,
        ..fx.config("rebalance", worker)
    };
    let a = Collector::new("a");
    let (stop_a, worker_a) = fx.spawn(config("a"), a.clone());
    let leases = fx.leases("rebalance");
    fx.eventually("a holds all four shards", Duration::from_secs(20), async || {
        let l = leases.list().await.unwrap();
        l.len() == 4 && l.iter().all(|l| l.is_owned_by("a"))
    })
    .await;

    let b = Collector::new("b");
    let (stop_b, worker_b) = fx.spawn(config("b"), b.clone());
    fx.eventually("two shards each", Duration::from_secs(30), async || {
        let l = leases.list().await.unwrap();
        l.iter().filter(|l| l.is_owned_by("a")).count() == 2 && l.iter().filter(|l| l.is_owned_by("b")).count() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop_producing.cancel();
    let sent = producer.await.unwrap();
    fx.eventually("everything processed", Duration::from_secs(30), async || {
        a.seen().len() + b.seen().len() >= sent.len()
    })
    .await;
    stop_a.cancel();
    stop_b.cancel();
    let (ra, rb) = (worker_a.await.unwrap(), worker_b.await.unwrap());

    let all: Vec<Seen> = a.seen().into_iter().chain(b.seen()).collect();
    let unique: HashSet<(String, u64)> = all.iter().map(|s| (s.key.clone(), s.n)).collect();
    assert_eq!(unique.len(), sent.len(), "every record processed");
    assert_eq!(all.len(), sent.len(), "and none twice");
    assert_eq!(ra.leases_handed_off, 2, "{ra:?}");
    assert_eq!(ra.leases_lost + rb.leases_lost, 0, "nothing was taken by force");
    assert!(!b.seen().is_empty(), "b processed its share");
}

/// Split one shard and merge two while producing: per partition key, records are
/// processed in the order they were put, across parents and children (a child's first
/// record never before its parent's last), and nothing is lost.
#[tokio::test]
async fn split_and_merge_keep_per_key_order() {
    let fx = fixture(2).await;
    let stop_producing = CancellationToken::new();
    let producer = fx.produce(16, stop_producing.clone());
    let (x, y) = (Collector::new("x"), Collector::new("y"));
    let (stop_x, worker_x) = fx.spawn(fx.config("reshard", "x"), x.clone());
    let (stop_y, worker_y) = fx.spawn(fx.config("reshard", "y"), y.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Split the first shard at the middle of its hash range.
    let shards = fx
        .kinesis
        .list_shards()
        .stream_name(&fx.stream)
        .send()
        .await
        .unwrap()
        .shards()
        .to_vec();
    let first = &shards[0];
    let range = first.hash_key_range().unwrap();
    let (lo, hi): (u128, u128) = (
        range.starting_hash_key().parse().unwrap(),
        range.ending_hash_key().parse().unwrap(),
    );
    fx.kinesis
        .split_shard()
        .stream_name(&fx.stream)
        .shard_to_split(first.shard_id())
        .new_starting_hash_key((lo + (hi - lo) / 2).to_string())
        .send()
        .await
        .unwrap();
    cafe_localstack::provision::wait_for_stream_active(&fx.kinesis, &fx.stream)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Merge the split's upper child with the (adjacent) second original shard.
    // Open shards: no ending sequence number.
    let open = fx
        .kinesis
        .list_shards()
        .stream_name(&fx.stream)
        .send()
        .await
        .unwrap()
        .shards()
        .iter()
        .filter(|s| s.sequence_number_range().unwrap().ending_sequence_number().is_none())
        .cloned()
        .collect::<Vec<_>>();
    let mut open: Vec<_> = open
        .iter()
        .map(|s| {
            let start: u128 = s.hash_key_range().unwrap().starting_hash_key().parse().unwrap();
            (start, s.shard_id().to_owned())
        })
        .collect();
    open.sort();
    assert_eq!(open.len(), 3, "two children and the untouched shard: {open:?}");
    fx.kinesis
        .merge_shards()
        .stream_name(&fx.stream)
        .shard_to_merge(&open[1].1)
        .adjacent_shard_to_merge(&open[2].1)
        .send()
        .await
        .unwrap();
    cafe_localstack::provision::wait_for_stream_active(&fx.kinesis, &fx.stream)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop_producing.cancel();
    let sent = producer.await.unwrap();

    fx.eventually("everything processed", Duration::from_secs(60), async || {
        let seen: HashSet<(String, u64)> = x.seen().into_iter().chain(y.seen()).map(|s| (s.key, s.n)).collect();
        seen.len() >= sent.len()
    })
    .await;
    stop_x.cancel();
    stop_y.cancel();
    let (rx, ry) = (worker_x.await.unwrap(), worker_y.await.unwrap());
    assert_eq!(
        rx.shards_ended + ry.shards_ended,
        3,
        "the split parent and both merge parents ended"
    );

    // Per key, the order of first processing is the order of putting. Both workers'
    // records interleave in time, so order is judged per key, within one global log
    // sorted by when each worker saw them: a child's records come after its parent
    // ended, which is after the parent's last record was processed.
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut first_seen: HashMap<(String, u64), usize> = HashMap::new();
    let merged = merge_in_time(&x, &y);
    for (i, s) in merged.iter().enumerate() {
        if first_seen.insert((s.key.clone(), s.n), i).is_none() {
            by_key.entry(s.key.clone()).or_default().push(s.n);
        }
    }
    for (key, ns) in &by_key {
        let expected: Vec<u64> = (0..ns.len() as u64).collect();
        assert_eq!(ns, &expected, "key {key}: processed out of order or with a gap");
    }
    let leases = fx.leases("reshard").list().await.unwrap();
    assert_eq!(leases.len(), 5, "2 original + 2 children + 1 merged");
}

/// Both collectors' logs in one, ordered by when they were recorded.
fn merge_in_time(x: &Collector, y: &Collector) -> Vec<Seen> {
    let mut all: Vec<Seen> = x.seen().into_iter().chain(y.seen()).collect();
    all.sort_by_key(|s| s.at);
    all
}

/// The Prometheus endpoint serves the runtime's metrics under their one set of names.
#[tokio::test]
async fn metrics_are_served_in_the_prometheus_text_format() {
    use tower::ServiceExt;

    let fx = fixture(1).await;
    fx.put(&keyed("m", 0..7)).await;
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = cafe_consumers::metrics::Metrics::register(&mut registry);
    let collector = Collector::new("w");
    let worker = cafe_consumers::Worker::new(
        fx.config("metrics", "w"),
        fx.kinesis.clone(),
        fx.leases("metrics"),
        std::sync::Arc::new(fx.parking()),
        collector.clone(),
        metrics,
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(worker.run(stop.clone()));
    fx.eventually("7 records", Duration::from_secs(20), async || {
        collector.seen().len() == 7
    })
    .await;
    let router = cafe_consumers::metrics::router(std::sync::Arc::new(registry));
    let response = router
        .oneshot(
            axum::http::Request::get("/metrics")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    let shard = fx.leases("metrics").list().await.unwrap()[0].shard_id.clone();
    assert!(
        text.contains(&format!(
            "cafe_consumer_records_total{{application=\"metrics\",shard=\"{shard}\"}} 7"
        )),
        "{text}"
    );
    for name in [
        "cafe_consumer_leases_held",
        "cafe_consumer_leases_taken_total",
        "cafe_consumer_batch_seconds_bucket",
        "cafe_consumer_millis_behind_latest",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    stop.cancel();
    running.await.unwrap();
}

/// A processor stuck on a dependency that never answers (a database stopped with
/// SIGSTOP accepts connections and never replies).
#[derive(Debug, Default)]
struct Hung {
    entered: std::sync::atomic::AtomicBool,
}

impl cafe_consumers::Processor for Hung {
    async fn process(
        &self,
        _: cafe_consumers::BatchContext<'_>,
        _: &[cafe_consumers::Record],
    ) -> Vec<cafe_consumers::Outcome> {
        self.entered.store(true, std::sync::atomic::Ordering::SeqCst);
        std::future::pending().await
    }
}

/// A stop with a batch stuck on a hung dependency ends by its drain deadline, names the
/// shard it left behind and leaves its lease to failover (not released, so no other
/// worker is told the shard is free while the stuck batch might still write).
#[tokio::test]
async fn a_stop_with_a_hung_dependency_ends_by_its_deadline_and_names_what_it_left() {
    let fx = fixture(1).await;
    fx.put(&keyed("k", 0..5)).await;
    let hung = std::sync::Arc::new(Hung::default());
    let drain_timeout = Duration::from_secs(2);
    let (stop, worker) = fx.spawn(
        WorkerConfig {
            drain_timeout,
            ..fx.config("hung", "w")
        },
        hung.clone(),
    );
    fx.eventually("the processor got its batch", Duration::from_secs(30), async || {
        hung.entered.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    let asked = std::time::Instant::now();
    stop.cancel();
    let report = tokio::time::timeout(drain_timeout + Duration::from_secs(5), worker)
        .await
        .expect("the stop must end by its deadline")
        .unwrap();
    assert!(asked.elapsed() >= drain_timeout, "it waited for the batch first");
    let leases = fx.leases("hung").list().await.unwrap();
    assert_eq!(report.shards_abandoned, vec![leases[0].shard_id.clone()]);
    assert_eq!(leases[0].owner.as_deref(), Some("w"), "left to expire, not released");
    assert_eq!(
        leases[0].checkpoint,
        Checkpoint::TrimHorizon,
        "nothing was checkpointed"
    );
}

/// A shard that catches up stores its progress before it sleeps, whatever the interval:
/// outside readers of the lease table (`lag`, a replay's governor) see a keeping-up
/// shard as keeping up. Off, nothing is stored until the interval passes.
#[tokio::test]
async fn a_caught_up_shard_checkpoints_before_its_idle_poll() {
    let fx = fixture(1).await;
    fx.put(&keyed("k", 0..5)).await;
    for (app, on) in [("eager", true), ("lazy", false)] {
        let seen = Collector::new(app);
        let (stop, worker) = fx.spawn(
            WorkerConfig {
                checkpoint_interval: Duration::from_secs(3600),
                checkpoint_when_caught_up: on,
                ..fx.config(app, "w")
            },
            seen.clone(),
        );
        fx.eventually("all five processed", Duration::from_secs(20), async || {
            seen.seen().len() == 5
        })
        .await;
        // Two idle polls of the fixture's config.
        tokio::time::sleep(fx.config(app, "w").idle_poll * 2 + Duration::from_millis(300)).await;
        let stored = fx.leases(app).list().await.unwrap()[0].checkpoint.clone();
        assert_eq!(matches!(stored, Checkpoint::Sequence { .. }), on, "{app}: {stored:?}");
        stop.cancel();
        worker.await.unwrap();
    }
}
