//! How far a consumer application is behind what was written to its stream: per shard,
//! the user records after its checkpoint. The main job's health verdict reads it; a
//! lag in records complements MillisBehindLatest, which only a reading worker sees.

use crate::lease::Checkpoint;
use crate::retrieval::is_before;

/// The records one reader saw on one shard, in sequence order.
#[derive(Debug, Default, Clone)]
pub struct ShardLog {
    /// (sequence number, user records inside: more than one for a KPL aggregate).
    records: Vec<(String, u32)>,
}

impl ShardLog {
    /// Adds the next record read from the shard. Kinesis hands a shard's records out
    /// in sequence order; one out of order (a reader restarted behind) is ignored.
    pub fn push(&mut self, sequence: impl Into<String>, user_records: u32) {
        let sequence = sequence.into();
        if let Some((last, _)) = self.records.last()
            && !is_before(last, &sequence)
        {
            return;
        }
        self.records.push((sequence, user_records));
    }

    /// User records seen in all.
    pub fn total(&self) -> u64 {
        count(&self.records)
    }

    /// The newest sequence number seen.
    pub fn tip(&self) -> Option<&str> {
        self.records.last().map(|(s, _)| s.as_str())
    }

    /// User records seen that `checkpoint` has not passed. A checkpoint that names no
    /// record (a lease not yet started) has passed none of them; one at the shard's end
    /// has passed them all.
    pub fn behind(&self, checkpoint: &Checkpoint) -> u64 {
        behind(&self.records, checkpoint)
    }

    /// The same, counting only records up to and including `watermark` (a tip taken
    /// earlier): whether a consumer has done what was there at that moment, whatever
    /// arrived since.
    pub fn behind_upto(&self, checkpoint: &Checkpoint, watermark: &str) -> u64 {
        let end = self.records.partition_point(|(s, _)| !is_before(watermark, s));
        behind(&self.records[..end], checkpoint)
    }
}

/// User records in `records`.
fn count(records: &[(String, u32)]) -> u64 {
    records.iter().map(|(_, n)| u64::from(*n)).sum()
}

fn behind(records: &[(String, u32)], checkpoint: &Checkpoint) -> u64 {
    match checkpoint {
        Checkpoint::ShardEnd => 0,
        Checkpoint::TrimHorizon | Checkpoint::Latest | Checkpoint::AtTimestamp => count(records),
        Checkpoint::Sequence { sequence, sub } => {
            let first_after = records.partition_point(|(s, _)| !is_before(sequence, s));
            // The checkpointed record itself: the user records after its sub-record.
            let within = match first_after.checked_sub(1).map(|i| &records[i]) {
                Some((s, n)) if s == sequence => u64::from(*n).saturating_sub(sub + 1),
                _ => 0,
            };
            count(&records[first_after..]) + within
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(sequence: &str, sub: u64) -> Checkpoint {
        Checkpoint::Sequence {
            sequence: sequence.into(),
            sub,
        }
    }

    #[test]
    fn records_behind_count_user_records_after_the_checkpoint() {
        let mut log = ShardLog::default();
        for (s, n) in [("8", 1), ("9", 3), ("10", 2), ("11", 1)] {
            log.push(s, n);
        }
        assert_eq!(log.total(), 7);
        assert_eq!(log.tip(), Some("11"));
        assert_eq!(log.behind(&Checkpoint::TrimHorizon), 7);
        assert_eq!(log.behind(&Checkpoint::ShardEnd), 0);
        // Inside the aggregate "9": sub 0 done leaves 2 of it, plus "10" and "11".
        assert_eq!(log.behind(&at("9", 0)), 2 + 2 + 1);
        assert_eq!(log.behind(&at("9", 2)), 2 + 1);
        // Numeric order: "10" comes after "9" although it sorts before it as text.
        assert_eq!(log.behind(&at("10", 1)), 1);
        assert_eq!(log.behind(&at("11", 0)), 0);
        // A checkpoint from before the reader started counts everything it saw.
        assert_eq!(log.behind(&at("5", 0)), 7);
        // One past everything seen.
        assert_eq!(log.behind(&at("12", 0)), 0);
        // Up to a watermark: what came after it does not count.
        assert_eq!(log.behind_upto(&at("9", 0), "10"), 2 + 2);
        assert_eq!(log.behind_upto(&Checkpoint::TrimHorizon, "9"), 1 + 3);
        assert_eq!(log.behind_upto(&at("10", 1), "10"), 0);
        assert_eq!(log.behind_upto(&at("10", 1), "11"), 1);
    }

    #[test]
    fn a_record_out_of_order_is_ignored() {
        let mut log = ShardLog::default();
        log.push("10", 1);
        log.push("9", 5);
        log.push("10", 5);
        assert_eq!(log.total(), 1);
    }
}
