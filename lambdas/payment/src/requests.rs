//! The saga's first step: a consumer of the events stream that turns every `OrderPlaced`
//! into a payment request on SQS `payments`.
//!
//! It runs under the consumer runtime like a projector (leases, checkpoints, parking),
//! but its "read model" is a queue. Re-sending a request (a retried batch, a replay of
//! the stream) is harmless: the request's idempotency key is derived from the order, so
//! the payment function charges it once and answers repeats from its record.
//!
//! Back-pressure: it keeps the requests in flight (on the queue, waiting or being
//! processed) under a bound. When the payment path is slow or stopped, it answers
//! [`Outcome::Defer`] instead of sending, so the backlog stays in the stream, where the
//! consumer runtime measures it as lag and from where nothing is lost, instead of
//! piling up in the queue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use cafe_consumers::{BatchContext, Outcome, Processor, Record};
use cafe_events::{DomainEvent, EventEnvelope};
use tracing::{Instrument, info_span, warn};

use cafe_events::payment::PaymentRequest;

/// Entries per SendMessageBatch call (an SQS limit).
const SEND_BATCH_MAX: usize = 10;

/// The consumer application's name (its leases and metrics label).
pub const APPLICATION: &str = "payment-requests";

/// Default bound on requests in flight. The payment function works 10 at a time per
/// invocation; a few hundred keep it busy through a queue-depth refresh while bounding
/// what a stopped function leaves queued (and what redelivery would have to replay).
pub const DEFAULT_IN_FLIGHT_BOUND: u64 = 500;

/// How long a queue-depth reading is trusted before it is read again. Between readings
/// the gate adds what it sent itself, so it errs towards counting too many, never too few
/// of its own.
const DEPTH_TTL: Duration = Duration::from_millis(200);

/// The estimate of requests in flight, shared by every shard of a worker.
#[derive(Debug)]
struct Gate {
    bound: u64,
    estimate: tokio::sync::Mutex<Estimate>,
}

#[derive(Debug, Default)]
struct Estimate {
    /// Visible plus in-flight messages at the last reading.
    observed: u64,
    /// Requests sent since that reading.
    sent_since: u64,
    /// When it was read; None before the first reading.
    at: Option<Instant>,
}

/// The payment request an `OrderPlaced` asks for, if the event is one.
pub fn request_for(event: &EventEnvelope) -> Option<PaymentRequest> {
    let DomainEvent::OrderPlaced(placed) = &event.event else {
        return None;
    };
    Some(PaymentRequest {
        order_id: placed.order_id.clone(),
        customer_id: placed.customer_id.clone(),
        amount_cents: placed.total_cents,
        currency: placed.currency.clone(),
        attempt: 1,
        idempotency_key: format!("{}:payment", placed.order_id),
    })
}

/// A queue's messages waiting to be received, and those received and not yet deleted
/// (being processed, or failed and waiting out their visibility timeout).
pub async fn queue_counts(sqs: &Client, queue_url: &str) -> Result<(u64, u64), String> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| format!("GetQueueAttributes: {}", aws_sdk_sqs::error::DisplayErrorContext(&e)))?;
    let attrs = out.attributes.unwrap_or_default();
    let n = |a: QueueAttributeName| attrs.get(&a).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok((
        n(QueueAttributeName::ApproximateNumberOfMessages),
        n(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    ))
}

/// Sends payment requests for placed orders.
#[derive(Debug, Clone)]
pub struct PaymentRequests {
    sqs: Client,
    queue_url: String,
    gate: Arc<Gate>,
}

impl PaymentRequests {
    /// Sends to the queue at `queue_url`, keeping at most [`DEFAULT_IN_FLIGHT_BOUND`]
    /// requests in flight.
    pub fn new(sqs: Client, queue_url: impl Into<String>) -> Self {
        Self::with_bound(sqs, queue_url, DEFAULT_IN_FLIGHT_BOUND)
    }

    /// The same with another bound on requests in flight (at least 1).
    pub fn with_bound(sqs: Client, queue_url: impl Into<String>, bound: u64) -> Self {
        PaymentRequests {
            sqs,
            queue_url: queue_url.into(),
            gate: Arc::new(Gate {
                bound: bound.max(1),
                estimate: tokio::sync::Mutex::new(Estimate::default()),
            }),
        }
    }

    /// How many of `wanted` requests may be sent now without passing the bound; those
    /// are counted as sent. Err when the queue depth could not be read.
    async fn admit(&self, wanted: u64) -> Result<u64, String> {
        let mut est = self.gate.estimate.lock().await;
        let stale = est.at.is_none_or(|at| at.elapsed() >= DEPTH_TTL);
        if stale || est.observed + est.sent_since + wanted > self.gate.bound {
            est.observed = queue_counts(&self.sqs, &self.queue_url)
                .await
                .map(|(visible, in_flight)| visible + in_flight)?;
            est.sent_since = 0;
            est.at = Some(Instant::now());
        }
        let room = self.gate.bound.saturating_sub(est.observed + est.sent_since);
        let admitted = room.min(wanted);
        est.sent_since += admitted;
        Ok(admitted)
    }

    /// Sends one SendMessageBatch; answers the outcome of each entry.
    async fn send(&self, requests: &[(usize, PaymentRequest)]) -> Vec<(usize, Outcome)> {
        let mut entries = Vec::with_capacity(requests.len());
        let mut outcomes = Vec::with_capacity(requests.len());
        for (slot, request) in requests {
            let built = serde_json::to_string(request)
                .map_err(|e| e.to_string())
                .and_then(|body| {
                    SendMessageBatchRequestEntry::builder()
                        .id(slot.to_string())
                        .message_body(body)
                        .build()
                        .map_err(|e| e.to_string())
                });
            match built {
                Ok(entry) => entries.push(entry),
                Err(e) => outcomes.push((*slot, Outcome::Park(format!("payment request not encodable: {e}")))),
            }
        }
        if entries.is_empty() {
            return outcomes;
        }
        let sent = self
            .sqs
            .send_message_batch()
            .queue_url(&self.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        match sent {
            Err(e) => {
                let reason = format!("SendMessageBatch: {}", aws_sdk_sqs::error::DisplayErrorContext(&e));
                outcomes.extend(requests.iter().map(|(slot, _)| (*slot, Outcome::Retry(reason.clone()))));
            }
            Ok(out) => {
                for failed in out.failed() {
                    let Ok(slot) = failed.id().parse::<usize>() else {
                        continue;
                    };
                    let reason = format!("SQS refused the request: {} {:?}", failed.code(), failed.message());
                    // A sender fault (too large, malformed) will never pass; anything else may.
                    outcomes.push((
                        slot,
                        if failed.sender_fault() {
                            Outcome::Park(reason)
                        } else {
                            Outcome::Retry(reason)
                        },
                    ));
                }
            }
        }
        outcomes
    }
}

impl Processor for PaymentRequests {
    async fn process(&self, ctx: BatchContext<'_>, records: &[Record]) -> Vec<Outcome> {
        let span = info_span!(
            "payment_requests",
            stream_consumer = ctx.application,
            shard = ctx.shard_id,
            first_sequence = records.first().map(|r| r.sequence.as_str()).unwrap_or(""),
            records = records.len(),
        );
        async move {
            let mut outcomes = vec![Outcome::Done; records.len()];
            let mut requests = Vec::new();
            for (slot, record) in records.iter().enumerate() {
                match EventEnvelope::decode(&record.data) {
                    Ok(event) => requests.extend(request_for(&event).map(|r| (slot, r))),
                    Err(e) => outcomes[slot] = Outcome::Park(format!("undecodable envelope: {e}")),
                }
            }
            // Send what the bound admits, in record order; the rest waits in the stream.
            let admitted = match self.admit(requests.len() as u64).await {
                Ok(n) => n as usize,
                Err(reason) => {
                    if let Some((slot, _)) = requests.first() {
                        outcomes[*slot] = Outcome::Retry(reason);
                    }
                    return outcomes;
                }
            };
            if let Some((slot, _)) = requests.get(admitted) {
                outcomes[*slot] = Outcome::Defer(format!("{} payment requests in flight (bound)", self.gate.bound));
            }
            let sends = requests[..admitted]
                .chunks(SEND_BATCH_MAX)
                .map(|chunk| self.send(chunk));
            for (slot, outcome) in futures::future::join_all(sends).await.into_iter().flatten() {
                if let Outcome::Park(reason) = &outcome {
                    warn!(sequence = %records[slot].sequence, %reason, "payment request parked");
                }
                outcomes[slot] = outcome;
            }
            outcomes
        }
        .instrument(span)
        .await
    }
}
