//! The conformance suite every projector passes: the same generated history applied
//! plainly, again, shuffled across aggregates, into a fresh read model, and through a
//! real worker killed midway and resumed must leave the same read model.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cafe_events::EventEnvelope;
use cafe_projections::history::{self, HistoryConfig};
use cafe_projections::verify::{Buckets, Settled, Verdict, Verifiable, compare};
use cafe_projections::{Batch, Positioned, Projection, digest};

use crate::helpers::{Counting, Paced, Stream};

/// Applies `events` (one shard's) in batches of random size, as the runtime would.
pub async fn apply_in_batches<P: Projection>(p: &P, shard: &str, events: &[Positioned], seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut rest = events;
    while !rest.is_empty() {
        let n = rng.usize(1..=150).min(rest.len());
        let (now, later) = rest.split_at(n);
        p.apply(Batch {
            shard_id: shard,
            events: now,
        })
        .await
        .unwrap();
        rest = later;
    }
}

pub async fn apply_sharded<P: Projection>(p: &P, history: &[EventEnvelope], seed: u64) {
    for (i, (shard, events)) in history::sharded(history, 4).iter().enumerate() {
        apply_in_batches(p, shard, events, seed + i as u64).await;
    }
}

/// A history as one shard's records: fresh sequence numbers from 1.
pub fn positioned(history: &[EventEnvelope]) -> Vec<Positioned> {
    history
        .iter()
        .enumerate()
        .map(|(n, e)| Positioned {
            event: e.clone(),
            sequence: format!("{:056}", n + 1),
            sub: 0,
        })
        .collect()
}

/// Applies a whole history as one shard named `shard`, with fresh sequence numbers.
pub async fn apply_as<P: Projection>(p: &P, shard: &str, history: &[EventEnvelope], seed: u64) {
    apply_in_batches(p, shard, &positioned(history), seed).await;
}

pub fn assert_same(expected: &[String], actual: &[String], what: &str) {
    if expected != actual {
        let first = expected
            .iter()
            .zip(actual)
            .position(|(a, b)| a != b)
            .unwrap_or(expected.len().min(actual.len()));
        panic!(
            "{what}: read model differs ({} vs {} lines); first difference at line {first}:\n expected {:?}\n actual   {:?}",
            expected.len(),
            actual.len(),
            expected.get(first),
            actual.get(first)
        );
    }
}

/// Runs the suite; `fresh` makes an empty read model of its own each call.
pub async fn conformance<P, F, Fut>(fresh: F) -> Vec<String>
where
    P: Projection + Verifiable,
    F: Fn() -> Fut,
    Fut: Future<Output = P>,
{
    let history = history::generate(HistoryConfig::default());

    let a = fresh().await;
    apply_sharded(&a, &history, 1).await;
    let expected = a.snapshot().await.unwrap();
    assert!(expected.len() > 20, "a read model of {} lines", expected.len());

    apply_sharded(&a, &history, 2).await;
    assert_same(&expected, &a.snapshot().await.unwrap(), "applied twice");

    apply_as(&a, "replay", &history::shuffled(&history, 3), 4).await;
    assert_same(&expected, &a.snapshot().await.unwrap(), "replayed shuffled over itself");

    // Old events alone (the first half of another interleaving, under a shard name no
    // checkpoint knows): only the per-aggregate version guards stand in their way.
    let stale = history::shuffled(&history, 7);
    apply_as(&a, "stale", &stale[..stale.len() / 2], 8).await;
    assert_same(&expected, &a.snapshot().await.unwrap(), "stale events re-applied");

    let b = fresh().await;
    apply_as(&b, "shuffled", &history::shuffled(&history, 5), 6).await;
    assert_same(&expected, &b.snapshot().await.unwrap(), "shuffled into a fresh model");
    // Verification, which never loads a model, agrees with the snapshots.
    let verified = compare(&a, &b, Buckets::new(16).unwrap(), &Settled, 10).await.unwrap();
    assert_eq!(verified.verdict(), Verdict::Match, "{:?}", verified.keys);

    // Kill a real worker midway (its task aborted: no drain, no final checkpoint, a
    // write possibly half done), then let a second worker take over after failover.
    let c = Arc::new(fresh().await);
    let stream = Stream::with(&history).await;
    let applied = Arc::new(AtomicUsize::new(0));
    // Paced: a fast projector (or one that skips most events) would otherwise finish
    // the whole stream before the kill, on a lightly loaded machine.
    let counting = || {
        Paced(Counting {
            inner: c.clone(),
            applied: applied.clone(),
        })
    };
    let (_, first) = stream.spawn(c.name(), "doomed", counting());
    let third = history.len() / 3;
    cafe_localstack::testing::eventually("a third of the history applied", Duration::from_secs(60), async || {
        applied.load(Ordering::SeqCst) >= third
    })
    .await;
    first.abort();
    let _ = first.await;
    let at_kill = applied.load(Ordering::SeqCst);
    assert!(
        at_kill < history.len(),
        "the kill came after the end ({at_kill} applied)"
    );
    assert_ne!(
        digest(&expected),
        digest(&c.snapshot().await.unwrap()),
        "killed after the end"
    );

    let (stop, second) = stream.spawn(c.name(), "successor", counting());
    let want = digest(&expected);
    cafe_localstack::testing::eventually(
        "the successor finished the history",
        Duration::from_secs(90),
        async || c.snapshot().await.is_ok_and(|s| digest(&s) == want),
    )
    .await;
    stop.cancel();
    let report = second.await.unwrap();
    assert!(report.leases_taken >= 4, "{report:?}");
    expected
}
