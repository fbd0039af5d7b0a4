//! How far behind a consumer application is, in time, judged from outside its workers:
//! for each shard, the age of the oldest event its checkpoint has not passed (Burrow's
//! lag in time, from the lease table and the stream; the age from the event's own
//! `occurred_at`). Zero when the checkpoint is at
//! the shard's tip. What a replay's governor holds live projectors to, and what any
//! process can ask without a metrics endpoint.
//!
//! Each probe costs a GetShardIterator and a one-record GetRecords per shard; on AWS
//! that shares the shard's five reads a second with its consumers, so probe a few times
//! a minute there, or read the workers' own `millis_behind_latest` metric instead.

use std::time::Duration;

use aws_sdk_kinesis::types::ShardIteratorType;
use chrono::{DateTime, Utc};

use crate::lease::{Checkpoint, LeaseError, LeaseTable};
use crate::retrieval::{deaggregated, is_before};
use crate::status::Sample;

/// One shard's lag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardLag {
    /// The shard.
    pub shard_id: String,
    /// Age of the oldest record the checkpoint has not passed.
    pub behind: Duration,
}

/// Why lag could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum LagError {
    /// The lease table failed.
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// The stream failed.
    #[error("stream: {0}")]
    Kinesis(String),
}

/// Each held shard's lag for the application whose leases `leases` holds, at `now`
/// (shards no worker holds are left out: with no consumer there is nothing to be
/// behind, and their lag would only measure the time since the application stopped).
pub async fn application_lag<L: LeaseTable>(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    leases: &L,
    now: DateTime<Utc>,
) -> Result<Vec<ShardLag>, LagError> {
    let mut out = Vec::new();
    // Unheld shards are skipped before they cost a read (the governor asks every second).
    for lease in leases.list().await?.into_iter().filter(|l| l.owner.is_some()) {
        let behind = lag_of(kinesis, stream, &lease.shard_id, &lease.checkpoint, now).await?;
        out.push(ShardLag {
            shard_id: lease.shard_id,
            behind,
        });
    }
    Ok(out)
}

/// One look at every shard of the application whose leases `leases` holds, at `now`:
/// its checkpoint, lag, owner and lease counter, what [`crate::status`] judges.
/// A shard at its end, or whose application starts at LATEST or a timestamp and has
/// not checkpointed yet, shows no lag.
pub async fn shard_samples<L: LeaseTable>(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    leases: &L,
    now: DateTime<Utc>,
) -> Result<Vec<(String, Sample)>, LagError> {
    let mut out = Vec::new();
    for lease in leases.list().await? {
        let lag = lag_of(kinesis, stream, &lease.shard_id, &lease.checkpoint, now).await?;
        out.push((
            lease.shard_id.clone(),
            Sample {
                at: now,
                checkpoint: lease.checkpoint.clone(),
                lag,
                owner: lease.owner.clone(),
                heartbeat: lease.counter,
            },
        ));
    }
    Ok(out)
}

/// The age at `now` of the oldest event `checkpoint` has not passed in `shard`.
async fn lag_of(
    kinesis: &aws_sdk_kinesis::Client,
    stream: &str,
    shard: &str,
    checkpoint: &Checkpoint,
    now: DateTime<Utc>,
) -> Result<Duration, LagError> {
    let req = kinesis.get_shard_iterator().stream_name(stream).shard_id(shard);
    // At the checkpoint's own record, not after it: a KPL aggregate checkpointed
    // mid-way still holds user records the application has not passed.
    let (req, passed) = match checkpoint {
        Checkpoint::ShardEnd | Checkpoint::Latest | Checkpoint::AtTimestamp => return Ok(Duration::ZERO),
        Checkpoint::TrimHorizon => (req.shard_iterator_type(ShardIteratorType::TrimHorizon), None),
        Checkpoint::Sequence { sequence, sub } => (
            req.shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(sequence),
            Some((sequence.as_str(), *sub)),
        ),
    };
    let iterator = req
        .send()
        .await
        .map_err(|e| LagError::Kinesis(aws_sdk_kinesis::error::DisplayErrorContext(e).to_string()))?
        .shard_iterator;
    let Some(iterator) = iterator else {
        return Ok(Duration::ZERO);
    };
    let records = kinesis
        .get_records()
        .shard_iterator(iterator)
        .limit(2)
        .send()
        .await
        .map_err(|e| LagError::Kinesis(aws_sdk_kinesis::error::DisplayErrorContext(e).to_string()))?;
    Ok(match oldest_unpassed(records.records(), passed) {
        Some(at) => Duration::from_millis(u64::try_from(now.timestamp_millis() - at.timestamp_millis()).unwrap_or(0)),
        // Nothing past the checkpoint in this read: at the tip, or the iterator
        // crossed empty parts of the shard (the service's own estimate then).
        None => Duration::from_millis(u64::try_from(records.millis_behind_latest().unwrap_or(0)).unwrap_or(0)),
    })
}

/// When the oldest user record in `records` that the checkpoint `passed` (sequence,
/// sub-sequence) has not covered happened: the event's own `occurred_at` (to the
/// millisecond; the stand-in rounds arrival times to the second, which alone would add
/// up to a second of lag), or the record's arrival when it is not an event.
fn oldest_unpassed(records: &[aws_sdk_kinesis::types::Record], passed: Option<(&str, u64)>) -> Option<DateTime<Utc>> {
    for r in records {
        let sequence = r.sequence_number();
        let data = bytes::Bytes::copy_from_slice(r.data().as_ref());
        for user in deaggregated(sequence, r.partition_key(), data) {
            let covered =
                passed.is_some_and(|(seq, sub)| !is_before(seq, sequence) && (seq != sequence || user.sub <= sub));
            if covered {
                continue;
            }
            let occurred = cafe_events::envelope::occurred_at_of(&user.data);
            let arrived = r
                .approximate_arrival_timestamp()
                .and_then(|t| t.to_millis().ok())
                .and_then(DateTime::<Utc>::from_timestamp_millis);
            return occurred.or(arrived);
        }
    }
    None
}

/// The 99th percentile of `samples` (nearest rank; zero for none).
pub fn p99(samples: &[Duration]) -> Duration {
    let mut s = samples.to_vec();
    s.sort_unstable();
    s.get((s.len() * 99 / 100).min(s.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

/// Where to read several applications' lag: the stream and the lease table.
#[derive(Debug, Clone)]
pub struct LagProbe {
    /// The stream the applications read.
    pub kinesis: aws_sdk_kinesis::Client,
    /// Its name.
    pub stream: String,
    /// The lease table's client.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The lease table.
    pub leases_table: String,
    /// The consumer applications to watch.
    pub applications: Vec<String>,
}

impl LagProbe {
    /// Each application's worst shard now (zero when no worker holds any of its
    /// shards).
    pub async fn per_application(&self) -> Result<Vec<(String, Duration)>, LagError> {
        let now = Utc::now();
        let mut out = Vec::with_capacity(self.applications.len());
        for app in &self.applications {
            let leases = crate::lease::DynamoLeaseTable::new(self.dynamodb.clone(), &self.leases_table, app.as_str());
            let shards = application_lag(&self.kinesis, &self.stream, &leases, now).await?;
            let worst = shards.iter().map(|s| s.behind).max().unwrap_or_default();
            out.push((app.clone(), worst));
        }
        Ok(out)
    }

    /// Every application's shards, looked at now (what [`crate::status`] judges).
    pub async fn samples(&self) -> Result<Vec<(String, Vec<(String, Sample)>)>, LagError> {
        let now = Utc::now();
        let mut out = Vec::with_capacity(self.applications.len());
        for app in &self.applications {
            let leases = crate::lease::DynamoLeaseTable::new(self.dynamodb.clone(), &self.leases_table, app.as_str());
            out.push((
                app.clone(),
                shard_samples(&self.kinesis, &self.stream, &leases, now).await?,
            ));
        }
        Ok(out)
    }

    /// The worst shard of any application; `None` when it could not be read (logged).
    pub async fn worst(&self) -> Option<Duration> {
        match self.per_application().await {
            Ok(apps) => Some(apps.iter().map(|(_, d)| *d).max().unwrap_or_default()),
            Err(e) => {
                tracing::warn!(error = %e, "could not read the live lag");
                None
            }
        }
    }
}
