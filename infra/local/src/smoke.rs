//! The smoke round-trip: one protobuf envelope into the stream and exactly it back out,
//! proving the stand-in, the stream and the codec before the pipeline starts.

use std::time::{Duration, Instant};

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::ShardIteratorType;
use cafe_events::proto::inventory::v1::StockRestocked;
use cafe_events::proto::loyalty::v1::PointsEarned;
use cafe_events::proto::orders::v1::{OrderLine, OrderPlaced};
use cafe_events::{AggregateId, CustomerId, DomainEvent, EventEnvelope, EventId, OrderId, Sku, StoreId};

use crate::aws;
use crate::config::StackConfig;
use crate::error::StackError;

/// What the round-trip saw.
#[derive(Debug, Clone)]
pub struct SmokeReport {
    /// Shard the record landed on.
    pub shard_id: String,
    /// Its sequence number.
    pub sequence_number: String,
    /// The event type read back.
    pub event_type: String,
    /// Encoded size.
    pub bytes: usize,
    /// Put + read time.
    pub elapsed: Duration,
}

/// A sample event: the `n`-th of a repeating mix of orders, restocks and loyalty points.
pub fn sample_event(n: u64) -> Result<EventEnvelope, StackError> {
    let bad = |e: cafe_events::IdError| StackError::Smoke(e.to_string());
    let store = StoreId::parse(format!("store-{:05}", n % 30_000)).map_err(bad)?;
    let customer = CustomerId::parse(format!("cust-{}", n.wrapping_mul(7919) % 100_000_000)).map_err(bad)?;
    let (aggregate_id, event) = match n % 3 {
        0 => {
            let order = OrderId::parse(format!("order-{}", EventId::new())).map_err(bad)?;
            let lines = vec![
                OrderLine {
                    item_id: "latte-grande".into(),
                    quantity: 2,
                    unit_price_cents: 525,
                },
                OrderLine {
                    item_id: "croissant".into(),
                    quantity: 1,
                    unit_price_cents: 375,
                },
            ];
            let placed = OrderPlaced {
                order_id: order.to_string(),
                customer_id: customer.to_string(),
                store_id: store.to_string(),
                total_cents: lines.iter().map(|l| i64::from(l.quantity) * l.unit_price_cents).sum(),
                lines,
                currency: "USD".into(),
            };
            (AggregateId::Order(order), DomainEvent::OrderPlaced(placed))
        }
        1 => {
            let sku = Sku::parse(format!("sku-{}", n % 5_000)).map_err(bad)?;
            let ev = StockRestocked {
                store_id: store.to_string(),
                sku: sku.to_string(),
                quantity: 24,
                on_hand_after: 24,
            };
            (AggregateId::StockItem(store, sku), DomainEvent::StockRestocked(ev))
        }
        _ => {
            let ev = PointsEarned {
                customer_id: customer.to_string(),
                points: 12,
                order_id: String::new(),
                balance_after: 12,
            };
            (AggregateId::LoyaltyAccount(customer), DomainEvent::PointsEarned(ev))
        }
    };
    Ok(EventEnvelope {
        event_id: EventId::new(),
        aggregate_id,
        version: 1,
        occurred_at: chrono::Utc::now(),
        correlation_id: format!("smoke-{n}"),
        causation_id: String::new(),
        command_id: format!("smoke-{n}"),
        event,
    })
}

/// The smoke probe's event type: no build knows it, so every consumer passes it over
/// (unknown types are kept, never projected). A known event would be a lie on the
/// stream: it never went through the event store, so read models would hold what the
/// history lacks (and a replay's verification would rightly call them wrong), and an
/// order would send a payment request for an order that does not exist.
pub const PROBE_TYPE: &str = "cloudcafe.smoke.v1.Probe";

/// The smoke probe: an event of [`PROBE_TYPE`] on a stock item of its own.
pub fn probe() -> Result<EventEnvelope, StackError> {
    let bad = |e: cafe_events::IdError| StackError::Smoke(e.to_string());
    Ok(EventEnvelope {
        event_id: EventId::new(),
        aggregate_id: AggregateId::StockItem(StoreId::parse("smoke").map_err(bad)?, Sku::parse("probe").map_err(bad)?),
        version: 1,
        occurred_at: chrono::Utc::now(),
        correlation_id: "smoke".into(),
        causation_id: String::new(),
        command_id: "smoke".into(),
        event: DomainEvent::Unknown(cafe_events::UnknownEvent {
            event_type: PROBE_TYPE.to_owned(),
            schema_version: 1,
            payload: bytes::Bytes::from_static(b"probe"),
        }),
    })
}

/// Publishes one sample event to the local stack's stream and reads exactly it back.
pub async fn round_trip(cfg: &StackConfig) -> Result<SmokeReport, StackError> {
    let sdk = aws::sdk_config(cfg).await;
    round_trip_with(&aws::kinesis(&sdk, cfg), &cfg.names.stream).await
}

/// The same round trip through any Kinesis client (the local stack, or AWS itself).
pub async fn round_trip_with(kinesis: &aws_sdk_kinesis::Client, stream: &str) -> Result<SmokeReport, StackError> {
    let started = Instant::now();
    let sent = probe()?;
    let bytes = sent.encode();
    let put = kinesis
        .put_record()
        .stream_name(stream)
        .partition_key(sent.partition_key())
        .data(Blob::new(bytes.to_vec()))
        .send()
        .await
        .map_err(|e| StackError::Smoke(format!("PutRecord: {e:?}")))?;
    let iterator = kinesis
        .get_shard_iterator()
        .stream_name(stream)
        .shard_id(put.shard_id())
        .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
        .starting_sequence_number(put.sequence_number())
        .send()
        .await
        .map_err(|e| StackError::Smoke(format!("GetShardIterator: {e:?}")))?
        .shard_iterator
        .ok_or_else(|| StackError::Smoke("no shard iterator".to_owned()))?;
    let records = kinesis
        .get_records()
        .shard_iterator(iterator)
        .limit(1)
        .send()
        .await
        .map_err(|e| StackError::Smoke(format!("GetRecords: {e:?}")))?;
    let record = records
        .records()
        .first()
        .ok_or_else(|| StackError::Smoke("record not read back".to_owned()))?;
    if record.sequence_number() != put.sequence_number() {
        return Err(StackError::Smoke("read back a different record".to_owned()));
    }
    let got = EventEnvelope::decode(record.data().as_ref()).map_err(|e| StackError::Smoke(e.to_string()))?;
    if got != sent {
        return Err(StackError::Smoke(format!(
            "decoded event differs: sent {sent:?}, got {got:?}"
        )));
    }
    Ok(SmokeReport {
        shard_id: put.shard_id().to_owned(),
        sequence_number: put.sequence_number().to_owned(),
        event_type: got.event.event_type().to_owned(),
        bytes: bytes.len(),
        elapsed: started.elapsed(),
    })
}
