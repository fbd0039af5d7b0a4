//! A consumer's health by rules over a sliding window of samples, not thresholds
//! (Burrow's evaluation, adapted to leases): each shard is judged from how its
//! checkpoint, its lag and its owner's heartbeat moved over the window, then the
//! application is rolled up from its shards.
//!
//! Burrow tells a stopped consumer only by its commits going quiet; a lease table says
//! more. Its counter is the owner's heartbeat (renewed every failover/3), so a shard
//! whose checkpoint stands still is told apart three ways: *idle* (nothing arrived,
//! the owner renews: healthy), *stalled* (records wait, the owner renews, the
//! checkpoint does not move: a stuck processor) and *dead* (the owner stopped renewing:
//! it crashed, and failover is pending). A shard nobody owns while records wait is
//! *stopped* (the application is not running there).
//!
//! Pure: the samples come from wherever the caller reads them (`lag` and the lease
//! table, a worker's own metrics), so every rule is unit-tested here.

use std::cmp::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::lease::Checkpoint;

/// One look at a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// Where the application's checkpoint stood.
    pub checkpoint: Checkpoint,
    /// How far behind that was, in time (zero: nothing waits).
    pub lag: Duration,
    /// The lease's owner, if any.
    pub owner: Option<String>,
    /// The lease counter: moves whenever the owner renews (or anything else writes).
    pub heartbeat: u64,
}

/// A shard's status, mildest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Keeping up: the lag was zero at some point in the window, or it shrinks.
    Ok,
    /// Nothing to read, and the owner renews: as healthy as OK.
    Idle,
    /// The checkpoint advances but the lag grows over the window and never shrinks:
    /// falling behind.
    Warn,
    /// The checkpoint moved backwards (a reset, or a successor that started earlier).
    Rewind,
    /// Records wait, the owner renews, and the checkpoint has not moved for the window.
    Stall,
    /// Records wait and nobody owns the shard: the application is not running there.
    Stop,
    /// The owner stopped renewing: it is gone, and failover is pending.
    Dead,
}

impl Status {
    /// Whether it needs someone to look (as in Burrow, a rewind does; OK, IDLE and
    /// WARN do not yet).
    pub fn is_error(self) -> bool {
        self >= Status::Rewind
    }
}

/// How long the rules wait before judging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// A checkpoint that stands still this long while records wait is a stall.
    pub stall_after: Duration,
    /// A heartbeat that stands still this long means the owner is gone (the lease's
    /// failover time: renewals come every third of it).
    pub dead_after: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            stall_after: Duration::from_secs(30),
            dead_after: Duration::from_secs(10),
        }
    }
}

/// Orders checkpoints along the shard: nothing processed, then sequence numbers (by
/// value: decimal strings without leading zeros compare by length, then text), then
/// the shard's end.
fn position_cmp(a: &Checkpoint, b: &Checkpoint) -> Ordering {
    fn rank(c: &Checkpoint) -> (u8, usize, &str, u64) {
        match c {
            Checkpoint::TrimHorizon | Checkpoint::Latest | Checkpoint::AtTimestamp => (0, 0, "", 0),
            Checkpoint::Sequence { sequence, sub } => (1, sequence.len(), sequence.as_str(), *sub),
            Checkpoint::ShardEnd => (2, 0, "", 0),
        }
    }
    rank(a).cmp(&rank(b))
}

fn span(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

/// The status of a shard from its samples, oldest first (one sample, or none, is OK:
/// there is nothing to compare yet).
pub fn evaluate(window: &[Sample], rules: &Rules) -> Status {
    let (Some(first), Some(last)) = (window.first(), window.last()) else {
        return Status::Ok;
    };
    if window
        .windows(2)
        .any(|w| position_cmp(&w[1].checkpoint, &w[0].checkpoint) == Ordering::Less)
    {
        return Status::Rewind;
    }
    let waiting = !last.lag.is_zero();
    if last.owner.is_none() {
        return if waiting { Status::Stop } else { Status::Idle };
    }
    // The heartbeat: since when has the counter stood still, under the same owner?
    let still_since = window
        .iter()
        .rev()
        .take_while(|s| s.heartbeat == last.heartbeat && s.owner == last.owner)
        .last()
        .map_or(last.at, |s| s.at);
    if span(still_since, last.at) >= rules.dead_after {
        return Status::Dead;
    }
    if window.iter().any(|s| s.lag.is_zero()) {
        let moved = position_cmp(&last.checkpoint, &first.checkpoint) != Ordering::Equal;
        return if !waiting && !moved { Status::Idle } else { Status::Ok };
    }
    // Records waited at every look.
    let unmoved_since = window
        .iter()
        .rev()
        .take_while(|s| position_cmp(&s.checkpoint, &last.checkpoint) == Ordering::Equal)
        .last()
        .map_or(last.at, |s| s.at);
    if span(unmoved_since, last.at) >= rules.stall_after {
        return Status::Stall;
    }
    // Falling behind only if the lag never shrank over the window: a projector that
    // keeps up shows a sawtooth (it grows between polls and drops at each batch).
    let never_shrank = window.windows(2).all(|w| w[1].lag >= w[0].lag);
    if never_shrank && last.lag > first.lag {
        Status::Warn
    } else {
        Status::Ok
    }
}

/// An application's shards rolled up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rollup {
    /// The worst shard's status.
    pub status: Status,
    /// The largest lag of any shard now.
    #[serde(rename = "max_lag_ms", serialize_with = "millis")]
    pub max_lag: Duration,
    /// The lags of all shards now, summed (the work waiting, in shard-seconds).
    #[serde(rename = "total_lag_ms", serialize_with = "millis")]
    pub total_lag: Duration,
    /// Shards in each status.
    pub shards: Vec<(String, Status)>,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Rolls `shards` (each shard's id and samples, oldest first) up into the application's
/// status: the worst of its shards', with its largest and total lag now.
pub fn roll_up<'a>(shards: impl IntoIterator<Item = (&'a str, &'a [Sample])>, rules: &Rules) -> Rollup {
    let mut out = Rollup {
        status: Status::Ok,
        max_lag: Duration::ZERO,
        total_lag: Duration::ZERO,
        shards: Vec::new(),
    };
    for (shard, window) in shards {
        let status = evaluate(window, rules);
        let lag = window.last().map_or(Duration::ZERO, |s| s.lag);
        out.status = out.status.max(status);
        out.max_lag = out.max_lag.max(lag);
        out.total_lag += lag;
        out.shards.push((shard.to_owned(), status));
    }
    // Idle everywhere is idle; idle beside OK shards is OK.
    if out.status == Status::Idle && out.shards.iter().any(|(_, s)| *s == Status::Ok) {
        out.status = Status::Ok;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        stall_after: Duration::from_secs(30),
        dead_after: Duration::from_secs(10),
    };

    /// A sample `secs` into the window at sequence `seq` (0: nothing processed), `lag`
    /// seconds behind, owned by `w` with counter `beat`.
    fn at(secs: i64, seq: u64, lag: u64, owner: Option<&str>, beat: u64) -> Sample {
        Sample {
            at: DateTime::<Utc>::from_timestamp(1_800_000_000 + secs, 0).unwrap_or_default(),
            checkpoint: if seq == 0 {
                Checkpoint::TrimHorizon
            } else {
                Checkpoint::Sequence {
                    sequence: seq.to_string(),
                    sub: 0,
                }
            },
            lag: Duration::from_secs(lag),
            owner: owner.map(str::to_owned),
            heartbeat: beat,
        }
    }

    fn w(samples: &[(i64, u64, u64, u64)]) -> Vec<Sample> {
        samples
            .iter()
            .map(|&(t, seq, lag, beat)| at(t, seq, lag, Some("w1"), beat))
            .collect()
    }

    #[test]
    fn keeping_up_is_ok_and_nothing_to_read_is_idle() {
        // Lag touched zero, the checkpoint moves.
        let ok = w(&[(0, 10, 2, 1), (5, 20, 0, 2), (10, 30, 1, 3)]);
        assert_eq!(evaluate(&ok, &RULES), Status::Ok);
        // Behind all along but catching up.
        let shrinking = w(&[(0, 10, 9, 1), (5, 20, 6, 2), (10, 30, 3, 3)]);
        assert_eq!(evaluate(&shrinking, &RULES), Status::Ok);
        // Nothing arrives, the owner renews.
        let idle = w(&[(0, 30, 0, 1), (5, 30, 0, 2), (10, 30, 0, 3)]);
        assert_eq!(evaluate(&idle, &RULES), Status::Idle);
        assert!(!Status::Idle.is_error());
        assert_eq!(evaluate(&[], &RULES), Status::Ok);
    }

    #[test]
    fn advancing_while_the_lag_grows_is_warn() {
        let warn = w(&[(0, 10, 2, 1), (5, 20, 4, 2), (10, 30, 7, 3)]);
        assert_eq!(evaluate(&warn, &RULES), Status::Warn);
        // A sawtooth that ends higher than it began is a projector keeping up.
        let sawtooth = w(&[(0, 10, 2, 1), (5, 20, 5, 2), (10, 30, 1, 3), (15, 40, 6, 4)]);
        assert_eq!(evaluate(&sawtooth, &RULES), Status::Ok);
        assert!(!Status::Warn.is_error());
    }

    #[test]
    fn a_checkpoint_that_stands_still_while_records_wait_and_the_owner_renews_is_a_stall() {
        let stall = w(&[(0, 10, 2, 1), (20, 10, 22, 4), (40, 10, 42, 7)]);
        assert_eq!(evaluate(&stall, &RULES), Status::Stall);
        // Not yet for the rules' time: the lag grows, so WARN for now.
        let young = w(&[(0, 10, 2, 1), (10, 10, 12, 3), (20, 10, 22, 5)]);
        assert_eq!(evaluate(&young, &RULES), Status::Warn);
        assert!(Status::Stall.is_error());
    }

    #[test]
    fn an_owner_that_stopped_renewing_is_dead_even_when_idle() {
        let dead = w(&[(0, 30, 0, 5), (6, 30, 0, 5), (12, 30, 0, 5)]);
        assert_eq!(evaluate(&dead, &RULES), Status::Dead);
        // The same counter under a new owner is a takeover, not a dead owner.
        let mut taken = dead.clone();
        taken[2].owner = Some("w2".into());
        assert_eq!(evaluate(&taken, &RULES), Status::Idle);
    }

    #[test]
    fn nobody_owning_a_shard_with_records_waiting_is_stop() {
        let stop = vec![at(0, 10, 3, None, 1), at(5, 10, 8, None, 1)];
        assert_eq!(evaluate(&stop, &RULES), Status::Stop);
        let nothing_waits = vec![at(0, 10, 0, None, 1), at(5, 10, 0, None, 1)];
        assert_eq!(evaluate(&nothing_waits, &RULES), Status::Idle);
    }

    #[test]
    fn a_checkpoint_that_moves_backwards_is_rewind() {
        let rewind = w(&[(0, 100, 0, 1), (5, 120, 0, 2), (10, 9, 5, 3)]);
        assert_eq!(evaluate(&rewind, &RULES), Status::Rewind);
        assert!(Status::Rewind.is_error());
        // Sequence numbers compare by value: 99 is before 100.
        let forward = w(&[(0, 99, 1, 1), (5, 100, 0, 2)]);
        assert_eq!(evaluate(&forward, &RULES), Status::Ok);
        // The shard's end is past any sequence number.
        let mut ended = forward.clone();
        ended[1].checkpoint = Checkpoint::ShardEnd;
        assert_eq!(evaluate(&ended, &RULES), Status::Ok);
    }

    #[test]
    fn an_application_is_its_worst_shard_with_its_largest_and_total_lag() {
        let ok = w(&[(0, 10, 2, 1), (5, 20, 0, 2), (10, 30, 1, 3)]);
        let idle = w(&[(0, 30, 0, 1), (5, 30, 0, 2), (10, 30, 0, 3)]);
        let stall = w(&[(0, 10, 2, 1), (20, 10, 22, 4), (40, 10, 42, 7)]);
        let r = roll_up([("a", &ok[..]), ("b", &idle[..])], &RULES);
        assert_eq!(
            (r.status, r.max_lag, r.total_lag),
            (Status::Ok, Duration::from_secs(1), Duration::from_secs(1))
        );
        let r = roll_up([("a", &idle[..]), ("b", &idle[..])], &RULES);
        assert_eq!(r.status, Status::Idle);
        let r = roll_up([("a", &ok[..]), ("b", &stall[..]), ("c", &idle[..])], &RULES);
        assert_eq!(r.status, Status::Stall);
        assert_eq!(r.max_lag, Duration::from_secs(42));
        assert_eq!(r.total_lag, Duration::from_secs(43));
        assert_eq!(r.shards[1], ("b".to_owned(), Status::Stall));
    }
}
