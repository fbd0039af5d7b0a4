//! Which leases a worker should take next: pure, so every rule is unit-tested.
//!
//! The rules (KCL's, minus its known sore spots):
//! 1. Only live leases count: a finished shard needs nobody, and a child whose parents
//!    are not finished cannot start, so holding either would skew the balance.
//! 2. Each worker aims at `ceil(live leases / workers)`, workers being the owners of
//!    unexpired leases plus itself.
//! 3. Available leases (unowned or expired) are taken first, as many as the target
//!    allows.
//! 4. Only when none is available, and only one per round, a worker below target
//!    steals from the most loaded worker, and only if that worker is *above* target:
//!    stealing from a worker at target would just move the imbalance and make leases
//!    ping-pong. A steal is a request ([`Plan::steal`] → `request_handoff`): the owner
//!    checkpoints and hands the lease over, so a rebalance reprocesses nothing (the
//!    "duplicates after lease theft" KCL users report).

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use super::{Checkpoint, Lease, Watch};

/// What to take this round.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Unowned or expired leases to take.
    pub take: Vec<String>,
    /// A lease to steal from an overloaded worker.
    pub steal: Option<String>,
}

/// Whether a lease is processable now: not finished, and every parent finished (or
/// gone from the table, i.e. finished and cleaned up long ago).
fn is_live(lease: &Lease, finished: &HashSet<&str>, known: &HashSet<&str>) -> bool {
    lease.checkpoint != Checkpoint::ShardEnd
        && lease
            .parent_shard_ids
            .iter()
            .all(|p| finished.contains(p.as_str()) || !known.contains(p.as_str()))
}

/// The plan for `me` given the table as listed at `now`.
pub fn plan(leases: &[Lease], watch: &Watch, me: &str, now: Instant) -> Plan {
    let finished: HashSet<&str> = leases
        .iter()
        .filter(|l| l.is_finished())
        .map(|l| l.shard_id.as_str())
        .collect();
    let known: HashSet<&str> = leases.iter().map(|l| l.shard_id.as_str()).collect();
    let live: Vec<&Lease> = leases.iter().filter(|l| is_live(l, &finished, &known)).collect();
    if live.is_empty() {
        return Plan::default();
    }

    let mut load: BTreeMap<&str, usize> = BTreeMap::new();
    load.insert(me, 0);
    let mut available = Vec::new();
    for l in &live {
        match &l.owner {
            // A lease being handed over already counts for the worker that asked for
            // it, so neither side asks again while the handoff is under way.
            Some(owner) if !watch.is_available(l, now) => {
                *load.entry(l.pending_owner.as_deref().unwrap_or(owner)).or_default() += 1;
            }
            _ => available.push(l.shard_id.clone()),
        }
    }
    let target = live.len().div_ceil(load.len());
    let mine = load.get(me).copied().unwrap_or(0);
    if mine >= target {
        return Plan::default();
    }
    if !available.is_empty() {
        // Spread the workers starting together over different leases: begin at an
        // offset derived from the worker id instead of all racing for the first one.
        let offset = me
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b)))
            % available.len();
        available.rotate_left(offset);
        available.truncate(target - mine);
        return Plan {
            take: available,
            steal: None,
        };
    }
    let Some((busiest, &count)) = load.iter().filter(|(w, _)| **w != me).max_by_key(|(_, c)| **c) else {
        return Plan::default();
    };
    if count <= target {
        return Plan::default();
    }
    let steal = live
        .iter()
        .find(|l| l.owner.as_deref() == Some(*busiest) && l.pending_owner.is_none())
        .map(|l| l.shard_id.clone());
    Plan {
        take: Vec::new(),
        steal,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn lease(shard: &str, owner: Option<&str>) -> Lease {
        Lease {
            owner: owner.map(str::to_owned),
            counter: 1,
            ..Lease::new(shard, Checkpoint::TrimHorizon, vec![])
        }
    }

    fn fresh_watch(leases: &[Lease], now: Instant) -> Watch {
        let mut w = Watch::new(Duration::from_secs(10));
        w.observe(leases, now);
        w
    }

    /// Runs plans for each worker in turn, applying them, until nobody wants more.
    fn settle(mut leases: Vec<Lease>, workers: &[&str]) -> Vec<Lease> {
        let now = Instant::now();
        for _ in 0..20 {
            let mut changed = false;
            for w in workers {
                let watch = fresh_watch(&leases, now);
                let p = plan(&leases, &watch, w, now);
                for key in p.take.iter().chain(p.steal.iter()) {
                    if let Some(l) = leases.iter_mut().find(|l| &l.shard_id == key) {
                        l.owner = Some((*w).to_owned());
                        l.counter += 1;
                        changed = true;
                    }
                }
            }
            if !changed {
                return leases;
            }
        }
        panic!("leases never settled: {leases:?}");
    }

    fn counts(leases: &[Lease], workers: &[&str]) -> Vec<usize> {
        workers
            .iter()
            .map(|w| leases.iter().filter(|l| l.is_owned_by(w)).count())
            .collect()
    }

    #[test]
    fn three_workers_share_eight_shards_within_one() {
        let leases: Vec<Lease> = (0..8).map(|i| lease(&format!("shard-{i}"), None)).collect();
        let workers = ["w-a", "w-b", "w-c"];
        // Workers appear one by one, as in a rolling deploy.
        let after_a = settle(leases, &workers[..1]);
        assert_eq!(counts(&after_a, &workers[..1]), vec![8]);
        let after_b = settle(after_a, &workers[..2]);
        let after_c = settle(after_b, &workers);
        let c = counts(&after_c, &workers);
        assert_eq!(c.iter().sum::<usize>(), 8, "{c:?}");
        assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1, "{c:?}");
    }

    #[test]
    fn stealing_takes_one_lease_per_round_and_only_from_a_worker_above_target() {
        let now = Instant::now();
        let leases: Vec<Lease> = (0..4).map(|i| lease(&format!("s-{i}"), Some("w-a"))).collect();
        let watch = fresh_watch(&leases, now);
        let p = plan(&leases, &watch, "w-b", now);
        assert!(p.take.is_empty());
        assert!(p.steal.is_some(), "w-a holds 4, target is 2");

        let balanced = vec![
            lease("s-0", Some("w-a")),
            lease("s-1", Some("w-a")),
            lease("s-2", Some("w-b")),
        ];
        let watch = fresh_watch(&balanced, now);
        assert_eq!(
            plan(&balanced, &watch, "w-b", now),
            Plan::default(),
            "2 vs 1 is balanced"
        );
    }

    #[test]
    fn a_requested_handoff_counts_for_the_asker_and_is_not_asked_for_twice() {
        let now = Instant::now();
        let mut leases: Vec<Lease> = (0..4).map(|i| lease(&format!("s-{i}"), Some("w-a"))).collect();
        leases[0].pending_owner = Some("w-b".into());
        let watch = fresh_watch(&leases, now);
        // w-b has one coming and the target is 2: it asks for one more, not s-0 again.
        let p = plan(&leases, &watch, "w-b", now);
        assert!(p.steal.is_some() && p.steal.as_deref() != Some("s-0"), "{p:?}");
        leases[1].pending_owner = Some("w-b".into());
        let watch = fresh_watch(&leases, now);
        assert_eq!(
            plan(&leases, &watch, "w-b", now),
            Plan::default(),
            "two on the way: at target"
        );
    }

    #[test]
    fn expired_leases_are_taken_before_anything_is_stolen() {
        let t0 = Instant::now();
        let leases = vec![lease("s-0", Some("w-dead")), lease("s-1", Some("w-dead"))];
        let watch = fresh_watch(&leases, t0);
        assert_eq!(
            plan(&leases, &watch, "w-b", t0).take.len(),
            0,
            "not expired yet: only a steal"
        );
        let later = t0 + Duration::from_secs(10);
        let p = plan(&leases, &watch, "w-b", later);
        assert_eq!(p.take.len(), 2, "the dead worker no longer counts: {p:?}");
        assert_eq!(p.steal, None);
    }

    #[test]
    fn children_wait_for_every_parent_and_finished_shards_are_left_alone() {
        let now = Instant::now();
        let mut parent_a = lease("p-a", None);
        let parent_b = lease("p-b", None);
        let child = Lease::new("c", Checkpoint::TrimHorizon, vec!["p-a".into(), "p-b".into()]);
        let leases = vec![parent_a.clone(), parent_b.clone(), child.clone()];
        let watch = fresh_watch(&leases, now);
        let p = plan(&leases, &watch, "w", now);
        assert!(!p.take.contains(&"c".to_owned()), "parents unfinished: {p:?}");

        parent_a.checkpoint = Checkpoint::ShardEnd;
        let leases = vec![parent_a.clone(), parent_b, child.clone()];
        let p = plan(&leases, &fresh_watch(&leases, now), "w", now);
        assert!(!p.take.contains(&"c".to_owned()), "one parent still unfinished: {p:?}");

        let mut parent_b = lease("p-b", None);
        parent_b.checkpoint = Checkpoint::ShardEnd;
        let leases = vec![parent_a, parent_b, child];
        let p = plan(&leases, &fresh_watch(&leases, now), "w", now);
        assert_eq!(p.take, vec!["c".to_owned()], "only the child is live");
    }
}
