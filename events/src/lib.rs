//! CloudCafe's event catalog: what happened, in a form every service agrees on.
//!
//! Commands become events here; events go to the event store and to Kinesis as one
//! protobuf record each; every consumer decodes them with this crate. It does no I/O
//! and knows no AWS types, so producers, consumers, Lambdas and tools can all use it.
//!
//! # Layout
//! - [`proto`]: types generated from `proto/cloudcafe/**.proto` (prost + protox).
//! - [`ids`]: validated id newtypes ([`OrderId`], [`StoreId`], ...).
//! - [`money`]: [`Cents`], integer money.
//! - [`aggregate`]: aggregate kinds and ids; the id is the partition key.
//! - [`event`]: [`DomainEvent`], the catalog of event types with their schema versions.
//! - [`upcast`]: lifts payloads written with older layouts to the current one.
//! - [`envelope`]: [`EventEnvelope`] and the record codec.
//! - [`kpl`]: KPL-compatible aggregation of many records into one Kinesis record.
//! - [`payment`]: the payment request the saga puts on SQS, and its parser.
//! - [`error`]: the codec's error type, [`DecodeError`].
//!
//! # Compatibility rules
//! Field numbers are never reused or renumbered (golden files in `tests/golden/` fail
//! the build if one changes). A new layout of an event bumps its schema version and adds
//! an upcaster. An unknown event type decodes to [`DomainEvent::Unknown`], bytes intact.

pub mod aggregate;
pub mod envelope;
pub mod error;
pub mod event;
pub mod ids;
pub mod kpl;
pub mod money;
pub mod payment;
pub mod proto;
pub mod samples;
pub mod upcast;

pub use aggregate::{AggregateId, AggregateType};
pub use envelope::{EventEnvelope, MAX_RECORD_BYTES};
pub use error::DecodeError;
pub use event::{DomainEvent, KNOWN_EVENT_TYPES, UnknownEvent};
pub use ids::{CustomerId, EventId, IdError, ItemId, OrderId, Sku, StoreId};
pub use money::Cents;
