//! Shard discovery: which leases should exist for the stream's shards.
//!
//! Run at start and periodically (and when a shard reports its end): every shard gets a
//! lease naming its parents, so [`crate::lease::plan`] starts a child only once all its
//! parents are finished, and per partition key nothing of a child is processed before
//! the last record of its parent.
//!
//! Where a new lease starts:
//! - A shard found by an application that already has leases (a reshard happened): at
//!   TRIM_HORIZON, always; its parents' leases hold it back until they finish.
//! - A brand-new application starting at TRIM_HORIZON: every shard at TRIM_HORIZON.
//! - A brand-new application starting at LATEST or a timestamp: closed shards are marked
//!   finished (there is nothing newer in them), open shards start at that position. The
//!   KCL got this wrong for years (children of closed shards replayed from their start).

use std::collections::HashSet;

use aws_sdk_kinesis::Client;
use aws_sdk_kinesis::error::ProvideErrorMetadata;

use crate::lease::{Checkpoint, Lease};

/// A shard as ListShards reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Its id.
    pub shard_id: String,
    /// The shard it was split from, or both shards it was merged from.
    pub parent_shard_ids: Vec<String>,
    /// Whether it was closed by a reshard (it has an ending sequence number).
    pub closed: bool,
}

/// ListShards failed.
#[derive(Debug, thiserror::Error)]
#[error("listing shards of {stream}: {code}: {message}")]
pub struct DiscoveryError {
    /// The stream.
    pub stream: String,
    /// The service's error code.
    pub code: String,
    /// Its message.
    pub message: String,
}

/// Every shard of the stream, closed ones included (their leases hold children back).
pub async fn list_shards(client: &Client, stream: &str) -> Result<Vec<ShardInfo>, DiscoveryError> {
    let mut shards = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let req = match &token {
            Some(t) => client.list_shards().next_token(t),
            None => client.list_shards().stream_name(stream),
        };
        let out = req.send().await.map_err(|e| DiscoveryError {
            stream: stream.to_owned(),
            code: e.code().unwrap_or("Unknown").to_owned(),
            message: e.message().map_or_else(|| format!("{e:?}"), str::to_owned),
        })?;
        for s in out.shards() {
            shards.push(ShardInfo {
                shard_id: s.shard_id().to_owned(),
                parent_shard_ids: s
                    .parent_shard_id()
                    .into_iter()
                    .chain(s.adjacent_parent_shard_id())
                    .map(str::to_owned)
                    .collect(),
                closed: s
                    .sequence_number_range()
                    .and_then(|r| r.ending_sequence_number())
                    .is_some(),
            });
        }
        token = out.next_token().map(str::to_owned);
        if token.is_none() {
            break;
        }
    }
    Ok(shards)
}

/// The leases to create so that every shard has one.
pub fn leases_to_create(shards: &[ShardInfo], existing: &[Lease], initial: &Checkpoint) -> Vec<Lease> {
    let have: HashSet<&str> = existing.iter().map(|l| l.shard_id.as_str()).collect();
    let known: HashSet<&str> = have
        .iter()
        .copied()
        .chain(shards.iter().map(|s| s.shard_id.as_str()))
        .collect();
    let new_application = existing.is_empty();
    shards
        .iter()
        .filter(|s| !have.contains(s.shard_id.as_str()))
        .map(|s| {
            let start = match (new_application, initial) {
                (false, _) | (true, Checkpoint::TrimHorizon) => Checkpoint::TrimHorizon,
                (true, _) if s.closed => Checkpoint::ShardEnd,
                (true, position) => position.clone(),
            };
            // Parents trimmed out of the stream long ago have no lease and hold nothing back.
            let parents = s
                .parent_shard_ids
                .iter()
                .filter(|p| known.contains(p.as_str()))
                .cloned()
                .collect();
            Lease::new(s.shard_id.clone(), start, parents)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str], closed: bool) -> ShardInfo {
        ShardInfo {
            shard_id: id.into(),
            parent_shard_ids: parents.iter().map(|p| (*p).to_owned()).collect(),
            closed,
        }
    }

    /// Shard 0 was split into 2 and 3; 1 is untouched; 4 has a parent trimmed away.
    fn resharded() -> Vec<ShardInfo> {
        vec![
            shard("s0", &[], true),
            shard("s1", &[], false),
            shard("s2", &["s0"], false),
            shard("s3", &["s0"], false),
            shard("s4", &["gone"], false),
        ]
    }

    fn starts(leases: &[Lease]) -> Vec<(String, Checkpoint, Vec<String>)> {
        leases
            .iter()
            .map(|l| (l.shard_id.clone(), l.checkpoint.clone(), l.parent_shard_ids.clone()))
            .collect()
    }

    #[test]
    fn a_new_application_at_trim_horizon_reads_everything_parents_first() {
        let leases = leases_to_create(&resharded(), &[], &Checkpoint::TrimHorizon);
        assert_eq!(
            starts(&leases),
            vec![
                ("s0".into(), Checkpoint::TrimHorizon, vec![]),
                ("s1".into(), Checkpoint::TrimHorizon, vec![]),
                ("s2".into(), Checkpoint::TrimHorizon, vec!["s0".into()]),
                ("s3".into(), Checkpoint::TrimHorizon, vec!["s0".into()]),
                ("s4".into(), Checkpoint::TrimHorizon, vec![]),
            ]
        );
    }

    #[test]
    fn a_new_application_at_latest_skips_closed_shards_instead_of_replaying_their_children() {
        let leases = leases_to_create(&resharded(), &[], &Checkpoint::Latest);
        let by_id: Vec<(String, Checkpoint)> = leases
            .iter()
            .map(|l| (l.shard_id.clone(), l.checkpoint.clone()))
            .collect();
        assert_eq!(
            by_id,
            vec![
                ("s0".into(), Checkpoint::ShardEnd),
                ("s1".into(), Checkpoint::Latest),
                ("s2".into(), Checkpoint::Latest),
                ("s3".into(), Checkpoint::Latest),
                ("s4".into(), Checkpoint::Latest),
            ]
        );
    }

    #[test]
    fn children_found_after_a_reshard_start_at_trim_horizon_behind_their_parents() {
        let existing = vec![
            Lease::new("s0", Checkpoint::Latest, vec![]),
            Lease::new("s1", Checkpoint::Latest, vec![]),
        ];
        let leases = leases_to_create(&resharded()[..4], &existing, &Checkpoint::Latest);
        assert_eq!(
            starts(&leases),
            vec![
                ("s2".into(), Checkpoint::TrimHorizon, vec!["s0".into()]),
                ("s3".into(), Checkpoint::TrimHorizon, vec!["s0".into()]),
            ]
        );
        assert!(leases_to_create(&resharded()[..2], &existing, &Checkpoint::Latest).is_empty());
    }
}
