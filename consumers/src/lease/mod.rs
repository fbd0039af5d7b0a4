//! Leases: which worker processes which shard, and how far it got.
//!
//! A lease is one item per shard with the KCL's attribute names (`leaseKey`,
//! `leaseOwner`, `leaseCounter`, `checkpoint`, `checkpointSubSequenceNumber`,
//! `parentShardId`, `ownerSwitchesSinceCheckpoint`), so KCL tooling and runbooks read
//! our table as they read theirs. Every write is conditional on the counter the writer
//! last saw (and on being the owner, for the owner's own writes), and bumps it: the
//! counter is a fencing token. A worker that paused past the failover time finds its
//! next renewal or checkpoint refused with [`LeaseError::Lost`] instead of overwriting
//! the progress of the worker that took the shard over.
//!
//! Expiry needs no synchronised clocks: an owner renews by bumping the counter, and a
//! lease whose counter has not moved for the failover time, *as seen by the observer's
//! own clock*, is expired ([`Watch`]).

mod balance;
mod dynamo;
mod watch;

pub use balance::{Plan, plan};
pub use dynamo::DynamoLeaseTable;
pub use watch::Watch;

/// Where a shard's processing stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checkpoint {
    /// Start from the oldest record still in the stream.
    TrimHorizon,
    /// Start after the newest record (a new application that skips history).
    Latest,
    /// Start at the first record at or after the application's start timestamp.
    AtTimestamp,
    /// Processed up to and including this (sub-)record.
    Sequence {
        /// The Kinesis record's sequence number.
        sequence: String,
        /// The user record inside a KPL-aggregated record; 0 for a plain record.
        sub: u64,
    },
    /// Every record of the shard was processed: its children may start.
    ShardEnd,
}

impl Checkpoint {
    /// The KCL's text for it (`checkpoint` attribute).
    pub fn as_stored(&self) -> (&str, u64) {
        match self {
            Checkpoint::TrimHorizon => ("TRIM_HORIZON", 0),
            Checkpoint::Latest => ("LATEST", 0),
            Checkpoint::AtTimestamp => ("AT_TIMESTAMP", 0),
            Checkpoint::ShardEnd => ("SHARD_END", 0),
            Checkpoint::Sequence { sequence, sub } => (sequence, *sub),
        }
    }

    /// Reads the KCL's text back.
    pub fn from_stored(text: &str, sub: u64) -> Checkpoint {
        match text {
            "TRIM_HORIZON" => Checkpoint::TrimHorizon,
            "LATEST" => Checkpoint::Latest,
            "AT_TIMESTAMP" => Checkpoint::AtTimestamp,
            "SHARD_END" => Checkpoint::ShardEnd,
            sequence => Checkpoint::Sequence {
                sequence: sequence.to_owned(),
                sub,
            },
        }
    }
}

/// One shard's lease as last read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The shard.
    pub shard_id: String,
    /// The worker holding it, if any.
    pub owner: Option<String>,
    /// Fencing token: bumped by every write.
    pub counter: u64,
    /// How far processing got.
    pub checkpoint: Checkpoint,
    /// Shards that must reach [`Checkpoint::ShardEnd`] before this one starts.
    pub parent_shard_ids: Vec<String>,
    /// Owner changes since the last checkpoint: a lease that keeps changing hands
    /// without progress is a sign of a poison shard or a flapping worker.
    pub owner_switches_since_checkpoint: u64,
    /// A worker that asked for this lease to rebalance (`pendingOwner`). The owner
    /// finishes its in-flight batch, checkpoints and hands the lease over, so a
    /// rebalance replays nothing; a thief that just took the lease would reprocess the
    /// owner's uncheckpointed window (the KCL 2.x duplicates-after-theft complaint).
    pub pending_owner: Option<String>,
}

impl Lease {
    /// A new, unowned lease for a shard.
    pub fn new(shard_id: impl Into<String>, start: Checkpoint, parent_shard_ids: Vec<String>) -> Lease {
        Lease {
            shard_id: shard_id.into(),
            owner: None,
            counter: 0,
            checkpoint: start,
            parent_shard_ids,
            owner_switches_since_checkpoint: 0,
            pending_owner: None,
        }
    }

    /// Whether `worker` holds it.
    pub fn is_owned_by(&self, worker: &str) -> bool {
        self.owner.as_deref() == Some(worker)
    }

    /// Whether its shard is finished.
    pub fn is_finished(&self) -> bool {
        self.checkpoint == Checkpoint::ShardEnd
    }
}

/// Why a lease operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The lease changed since we read it (taken, renewed or released by someone else):
    /// the caller no longer holds it and must stop processing its shard.
    #[error("lease {0} was changed by another worker")]
    Lost(String),
    /// The table throttled the request; retry with backoff.
    #[error("lease table throttled: {0}")]
    Throttled(String),
    /// Anything else from the service or the network; retry with backoff.
    #[error("lease table unavailable: {0}")]
    Unavailable(String),
    /// An item that does not read as a lease: fix the table, retrying will not help.
    #[error("lease item {key} is malformed: {reason}")]
    Corrupt {
        /// Its leaseKey.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl LeaseError {
    /// Whether retrying the same call may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, LeaseError::Throttled(_) | LeaseError::Unavailable(_))
    }
}

/// The lease table port. Each write takes the lease as the caller last saw it and
/// returns it as written (with the new counter), or [`LeaseError::Lost`].
pub trait LeaseTable: Send + Sync + 'static {
    /// Every lease of this application, strongly consistent.
    fn list(&self) -> impl Future<Output = Result<Vec<Lease>, LeaseError>> + Send;

    /// Creates a lease unless one exists for the shard; true when created.
    fn create(&self, lease: &Lease) -> impl Future<Output = Result<bool, LeaseError>> + Send;

    /// Takes a lease (unowned, expired, or stolen) for `worker`.
    fn take(&self, seen: &Lease, worker: &str) -> impl Future<Output = Result<Lease, LeaseError>> + Send;

    /// Proves the owner is alive.
    fn renew(&self, held: &Lease) -> impl Future<Output = Result<Lease, LeaseError>> + Send;

    /// Records progress; only the owner can.
    fn checkpoint(&self, held: &Lease, to: Checkpoint) -> impl Future<Output = Result<Lease, LeaseError>> + Send;

    /// Gives the lease up (after a final checkpoint) so a successor can take it at once.
    fn release(&self, held: &Lease) -> impl Future<Output = Result<Lease, LeaseError>> + Send;

    /// Asks the owner of `seen` to hand it to `worker`. Conditional on the owner being
    /// the one `seen` names and no other request pending; it does not bump the counter,
    /// so the owner's renewals keep working and it sees the request in their answer.
    /// A [`LeaseError::Lost`] here only means somebody else changed the lease first.
    fn request_handoff(&self, seen: &Lease, worker: &str) -> impl Future<Output = Result<Lease, LeaseError>> + Send;

    /// The owner's side of a handoff (after its final checkpoint): the pending owner
    /// becomes the owner.
    fn hand_off(&self, held: &Lease) -> impl Future<Output = Result<Lease, LeaseError>> + Send;
}
