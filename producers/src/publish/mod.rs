//! Publishing events to Kinesis.
//!
//! - [`sink`]: the [`RecordSink`] port (PutRecords + ListShards), its Kinesis adapter,
//!   and [`FaultySink`], which makes a chosen fraction of entries fail with
//!   ProvisionedThroughputExceeded, because no local emulator throttles.
//! - [`publisher`]: [`Publisher`]: batching, KPL aggregation by predicted shard,
//!   per-lane ordering, retries with full-jitter backoff, bounded in-flight bytes.

#[cfg(feature = "aws")]
mod kinesis;
pub mod publisher;
pub mod sink;

#[cfg(feature = "aws")]
pub use kinesis::KinesisSink;
pub use publisher::{PublishError, PublishReport, Publisher, PublisherConfig, PublisherTotals};
pub use sink::{Entry, EntryOutcome, FaultySink, RecordSink, ShardRange, SinkError};
