//! The envelope: metadata every event carries, and the record codec.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use prost::Message;

use crate::aggregate::{AggregateId, AggregateType};
use crate::error::DecodeError;
use crate::event::DomainEvent;
use crate::ids::EventId;
use crate::proto::envelope::v1 as pb;

/// The largest record we encode or accept: Kinesis' 1 MiB data-blob limit.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// One event with its metadata, as stored and streamed.
#[derive(Debug, Clone, PartialEq)]
pub struct EventEnvelope {
    /// Unique id (UUIDv7); read models dedupe by it or by `(aggregate_id, version)`.
    pub event_id: EventId,
    /// The aggregate the event belongs to (and so its partition key).
    pub aggregate_id: AggregateId,
    /// Position in the aggregate's history, from 1 without gaps.
    pub version: u64,
    /// When the decision was made (UTC). Replay filters on this, not on stream arrival.
    pub occurred_at: DateTime<Utc>,
    /// Groups everything caused by one external request.
    pub correlation_id: String,
    /// The event or command that directly caused this one.
    pub causation_id: String,
    /// The command that produced it (its idempotency key).
    pub command_id: String,
    /// The event itself.
    pub event: DomainEvent,
}

/// The envelope's `occurred_at` field alone (field 7), for code that only needs an
/// event's age: prost skips every other field without allocating, so the consumer
/// runtime can time each record it applies without decoding the envelope twice.
#[derive(Clone, PartialEq, Message)]
struct OccurredAtOnly {
    #[prost(message, optional, tag = "7")]
    occurred_at: Option<prost_types::Timestamp>,
}

/// When the event in `record` (an encoded envelope) happened; None when the record is
/// not an envelope or carries no valid time.
pub fn occurred_at_of(record: &[u8]) -> Option<DateTime<Utc>> {
    let ts = OccurredAtOnly::decode(record).ok()?.occurred_at?;
    DateTime::<Utc>::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

impl EventEnvelope {
    /// The Kinesis partition key.
    pub fn partition_key(&self) -> String {
        self.aggregate_id.partition_key()
    }

    /// Encodes the envelope as one record.
    pub fn encode(&self) -> Bytes {
        let occurred_at = prost_types::Timestamp {
            seconds: self.occurred_at.timestamp(),
            nanos: self.occurred_at.timestamp_subsec_nanos() as i32,
        };
        let msg = pb::Envelope {
            event_id: self.event_id.to_string(),
            aggregate_type: self.aggregate_id.aggregate_type().to_proto() as i32,
            aggregate_id: self.aggregate_id.to_string(),
            version: self.version,
            event_type: self.event.event_type().to_owned(),
            schema_version: self.event.schema_version(),
            occurred_at: Some(occurred_at),
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id.clone(),
            command_id: self.command_id.clone(),
            payload: self.event.encode_payload(),
        };
        Bytes::from(msg.encode_to_vec())
    }

    /// Decodes and validates one record. Never panics, whatever the input.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: MAX_RECORD_BYTES,
            });
        }
        let msg = pb::Envelope::decode(bytes).map_err(DecodeError::Malformed)?;

        let raw_type = msg.aggregate_type;
        let aggregate_type = pb::AggregateType::try_from(raw_type)
            .ok()
            .and_then(AggregateType::from_proto)
            .ok_or(DecodeError::UnknownAggregateType(raw_type))?;
        let aggregate_id =
            AggregateId::parse(aggregate_type, &msg.aggregate_id).map_err(DecodeError::InvalidAggregateId)?;
        let event_id = msg
            .event_id
            .parse::<EventId>()
            .map_err(|_| DecodeError::InvalidEventId(msg.event_id.clone()))?;
        if msg.version == 0 {
            return Err(DecodeError::MissingField("version"));
        }
        if msg.event_type.is_empty() {
            return Err(DecodeError::MissingField("event_type"));
        }
        let ts = msg.occurred_at.ok_or(DecodeError::MissingField("occurred_at"))?;
        let nanos = u32::try_from(ts.nanos).map_err(|_| DecodeError::BadTimestamp)?;
        let occurred_at = DateTime::<Utc>::from_timestamp(ts.seconds, nanos).ok_or(DecodeError::BadTimestamp)?;

        let event = DomainEvent::decode_payload(&msg.event_type, msg.schema_version, msg.payload)?;
        if let Some(expected) = event.aggregate_type()
            && expected != aggregate_type
        {
            return Err(DecodeError::AggregateMismatch {
                event_type: msg.event_type,
                expected,
                found: aggregate_type,
            });
        }

        Ok(EventEnvelope {
            event_id,
            aggregate_id,
            version: msg.version,
            occurred_at,
            correlation_id: msg.correlation_id,
            causation_id: msg.causation_id,
            command_id: msg.command_id,
            event,
        })
    }
}
