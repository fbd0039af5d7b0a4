//! Expiry as one worker sees it.
//!
//! Clocks of different machines are not compared: a lease is expired when *this*
//! worker has seen its counter stand still for the failover time. An owner that is
//! alive bumps the counter at every renewal (a third of the failover time), so its
//! leases never stand still that long.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Lease;

/// Remembers when each lease's counter last moved.
#[derive(Debug)]
pub struct Watch {
    failover: Duration,
    seen: HashMap<String, (u64, Instant)>,
}

impl Watch {
    /// A watch expiring leases after `failover` without a counter change.
    pub fn new(failover: Duration) -> Watch {
        Watch {
            failover,
            seen: HashMap::new(),
        }
    }

    /// Records a fresh listing made at `now`. A lease seen for the first time counts as
    /// having just moved, so a worker that starts never steals on its first look.
    pub fn observe(&mut self, leases: &[Lease], now: Instant) {
        self.seen.retain(|k, _| leases.iter().any(|l| &l.shard_id == k));
        for l in leases {
            match self.seen.get_mut(&l.shard_id) {
                Some((counter, _)) if *counter == l.counter => {}
                Some(entry) => *entry = (l.counter, now),
                None => {
                    self.seen.insert(l.shard_id.clone(), (l.counter, now));
                }
            }
        }
    }

    /// Whether a lease can be taken without stealing: nobody owns it, or its owner has
    /// not renewed it for the failover time.
    pub fn is_available(&self, lease: &Lease, now: Instant) -> bool {
        if lease.owner.is_none() {
            return true;
        }
        match self.seen.get(&lease.shard_id) {
            Some((counter, at)) if *counter == lease.counter => now.duration_since(*at) >= self.failover,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::Checkpoint;

    fn owned(shard: &str, owner: &str, counter: u64) -> Lease {
        Lease {
            owner: Some(owner.into()),
            counter,
            ..Lease::new(shard, Checkpoint::TrimHorizon, vec![])
        }
    }

    #[test]
    fn a_lease_expires_only_after_its_counter_stood_still_for_the_failover_time() {
        let t0 = Instant::now();
        let mut w = Watch::new(Duration::from_secs(10));
        w.observe(&[owned("s-1", "a", 5)], t0);
        assert!(!w.is_available(&owned("s-1", "a", 5), t0 + Duration::from_secs(9)));
        assert!(w.is_available(&owned("s-1", "a", 5), t0 + Duration::from_secs(10)));

        // A renewal (counter moved) restarts the clock.
        w.observe(&[owned("s-1", "a", 6)], t0 + Duration::from_secs(8));
        assert!(!w.is_available(&owned("s-1", "a", 6), t0 + Duration::from_secs(17)));
        assert!(w.is_available(&owned("s-1", "a", 6), t0 + Duration::from_secs(18)));
    }

    #[test]
    fn an_unowned_lease_is_always_available_and_an_unseen_one_never_expired() {
        let t0 = Instant::now();
        let w = Watch::new(Duration::from_secs(10));
        let free = Lease::new("s-1", Checkpoint::TrimHorizon, vec![]);
        assert!(w.is_available(&free, t0));
        assert!(!w.is_available(&owned("s-2", "a", 1), t0 + Duration::from_secs(3600)));
    }
}
