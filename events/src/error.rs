//! Errors of the event codec.

use crate::aggregate::AggregateType;
use crate::ids::IdError;

/// Why bytes could not be turned into an [`crate::EventEnvelope`].
///
/// Every variant is *poison*: the same bytes will fail the same way on every retry, so a
/// consumer parks the record with this reason instead of retrying it.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// More bytes than any record we produce (and than Kinesis accepts).
    #[error("record is {len} bytes; the limit is {max}")]
    TooLarge {
        /// Size of the input.
        len: usize,
        /// The limit, [`crate::MAX_RECORD_BYTES`].
        max: usize,
    },
    /// Not a protobuf envelope (garbage or truncated input).
    #[error("malformed envelope: {0}")]
    Malformed(#[source] prost::DecodeError),
    /// A field every envelope must carry is missing or zero.
    #[error("envelope field `{0}` is missing")]
    MissingField(&'static str),
    /// The envelope names an aggregate type this build does not know.
    #[error("unknown aggregate type number {0}")]
    UnknownAggregateType(i32),
    /// The aggregate id does not parse for its aggregate type.
    #[error("invalid aggregate id: {0}")]
    InvalidAggregateId(#[source] IdError),
    /// The event id is not a UUID.
    #[error("invalid event id {0:?}")]
    InvalidEventId(String),
    /// The timestamp is out of range.
    #[error("occurred_at is out of range")]
    BadTimestamp,
    /// A known event type on the wrong aggregate type.
    #[error("{event_type} belongs to {expected} aggregates, not {found}")]
    AggregateMismatch {
        /// The event type.
        event_type: String,
        /// The aggregate type the catalog assigns to it.
        expected: AggregateType,
        /// The aggregate type the envelope claims.
        found: AggregateType,
    },
    /// Written by a newer producer with a layout this build cannot read safely.
    #[error("{event_type} schema version {found} is newer than this build's {current}")]
    SchemaTooNew {
        /// The event type.
        event_type: String,
        /// The version in the envelope.
        found: u32,
        /// The newest version this build knows.
        current: u32,
    },
    /// The payload bytes do not decode as the named event type.
    #[error("payload of {event_type} is malformed: {source}")]
    Payload {
        /// The event type.
        event_type: String,
        /// What prost reported.
        #[source]
        source: prost::DecodeError,
    },
    /// An old layout could not be lifted to the current one.
    #[error("cannot upcast {event_type} from schema version {from}: {reason}")]
    Upcast {
        /// The event type.
        event_type: String,
        /// The version being upcast.
        from: u32,
        /// Why it failed.
        reason: String,
    },
}
