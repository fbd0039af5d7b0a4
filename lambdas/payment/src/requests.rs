//! The saga's first step: a consumer of the events stream that turns every `OrderPlaced`
//! into a payment request on SQS `payments`.
//!
//! It runs under the consumer runtime like a projector (leases, checkpoints, parking),
//! but its "read model" is a queue. Re-sending a request (a retried batch, a replay of
//! the stream) is harmless: the request's idempotency key is derived from the order, so
//! the payment function charges it once and answers repeats from its record.

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use cafe_consumers::{BatchContext, Outcome, Processor, Record};
use cafe_events::{DomainEvent, EventEnvelope};
use tracing::{Instrument, info_span, warn};

use crate::message::PaymentRequest;

/// Entries per SendMessageBatch call (an SQS limit).
const SEND_BATCH_MAX: usize = 10;

/// The consumer application's name (its leases and metrics label).
pub const APPLICATION: &str = "payment-requests";

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

/// Sends payment requests for placed orders.
#[derive(Debug, Clone)]
pub struct PaymentRequests {
    sqs: Client,
    queue_url: String,
}

impl PaymentRequests {
    /// Sends to the queue at `queue_url`.
    pub fn new(sqs: Client, queue_url: impl Into<String>) -> Self {
        PaymentRequests {
            sqs,
            queue_url: queue_url.into(),
        }
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
            let sends = requests.chunks(SEND_BATCH_MAX).map(|chunk| self.send(chunk));
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
