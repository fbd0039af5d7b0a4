//! The function's handler: one SQS batch in, the ids of exactly the messages that failed
//! out (`batchItemFailures`, with `ReportBatchItemFailures` on the event source mapping),
//! so SQS redelivers only those, and after `maxReceiveCount` moves them to the DLQ.
//!
//! Per message:
//! 1. parse and check the request (a bad one fails at once, with its reason logged);
//! 2. claim its idempotency key ([`crate::idempotency`]); a completed payment returns its
//!    stored outcome without charging, a live claim elsewhere fails the message for now,
//!    the key reused for another payment is refused;
//! 3. check the order awaits this payment (exists, `placed`, same total): charging for an
//!    order that cannot take the payment would need a refund; an order already settled
//!    needs nothing (the stream was replayed and re-sent an old request);
//! 4. charge; a transient gateway failure releases the claim and fails the message;
//! 5. store the outcome, then append `PaymentAuthorized` or `PaymentDeclined` through the
//!    command service, under an idempotency key derived from the payment's, so a repeat
//!    after a crash between 4 and 5 appends nothing twice.

use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use cafe_events::proto::orders::v1::OrderStatus;
use cafe_events::{AggregateId, Cents, OrderId};
use cafe_producers::domain::order::{Order, OrderCommand, status_name};
use cafe_producers::publish::RecordSink;
use cafe_producers::service::{CommandError, CommandMeta, CommandService};
use cafe_producers::store::{EventStore, StoredResponse};
use futures::StreamExt;
use tracing::{Instrument, info, info_span, warn};

use crate::gateway::{Charge, Gateway, Transient};
use crate::idempotency::{Claim, Idempotency, StoreFailure, payload_hash};
use cafe_events::payment::{BadMessage, PaymentRequest};

/// What became of a message that succeeded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// Charged (now or before), and the order moved to `paid`.
    Authorized {
        /// The gateway's payment id.
        payment_id: String,
    },
    /// Refused by the gateway, and the order moved to `payment_declined`.
    Declined {
        /// The gateway's reason.
        reason: String,
    },
    /// The order no longer awaits a payment (it was paid, declined or cancelled before):
    /// nothing charged, nothing appended.
    AlreadySettled {
        /// The order's status.
        status: &'static str,
    },
}

/// Why a message failed. Every variant becomes a batch item failure; the message comes
/// back after its visibility timeout and, failing `maxReceiveCount` times, lands in the
/// DLQ with its body intact. [`Failed::is_permanent`] only decides how loudly we log.
#[derive(Debug, thiserror::Error)]
pub enum Failed {
    /// Not a payment request.
    #[error("bad message: {0}")]
    BadMessage(#[from] BadMessage),
    /// The idempotency key was first used for a different payment.
    #[error("idempotency key {0} was already used for a different payment")]
    KeyReused(String),
    /// Another delivery of this payment is being processed right now.
    #[error("payment {0} is in progress elsewhere")]
    InProgress(String),
    /// The order cannot take this payment (missing, or another total).
    #[error("order {order_id} cannot be paid: {reason}")]
    NotPayable {
        /// The order.
        order_id: String,
        /// Why.
        reason: String,
    },
    /// The gateway could not answer.
    #[error(transparent)]
    Gateway(#[from] Transient),
    /// The idempotency table could not answer.
    #[error(transparent)]
    Idempotency(#[from] StoreFailure),
    /// Appending the outcome to the order failed.
    #[error("appending the payment outcome: {0}")]
    Append(#[from] CommandError),
}

impl Failed {
    /// True when redelivery cannot help: the message is on its way to the DLQ.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            Failed::BadMessage(_)
                | Failed::KeyReused(_)
                | Failed::NotPayable { .. }
                | Failed::Append(CommandError::Rejected(_) | CommandError::IdempotencyMismatch)
        )
    }
}

/// Which delivery of its message this is: SQS's `ApproximateReceiveCount` (1 when the
/// event does not say).
fn delivery(message: &SqsMessage) -> u32 {
    message
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

/// Whether an order took the charge.
enum Payable {
    /// Charged, with the order and its version as the charge found them.
    Charged(Charge, (Order, u64)),
    /// No longer awaiting a payment; its status.
    Settled(&'static str),
}

/// How one batch's messages went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// Settled: charged, declined, or found already settled.
    pub settled: u64,
    /// Failed for now; SQS redelivers them.
    pub retried: u64,
    /// Refused for good; they end in the DLQ.
    pub refused: u64,
}

impl BatchCounts {
    /// The batch as one EMF log line (CloudWatch Logs turns it into metrics; no API
    /// call on the invoke path), in `namespace`, dimension `FunctionName`; with the
    /// instance's `init` duration on its first batch.
    pub fn emf(&self, namespace: &str, function: &str, timestamp_ms: i64, init: Option<Duration>) -> String {
        use cafe_consumers::emf::{self, Observed};
        use cafe_consumers::metrics::Unit;
        let mut metrics = vec![
            (emf::PAYMENTS_SETTLED, Unit::Count, Observed::One(self.settled as f64)),
            (emf::PAYMENTS_RETRIED, Unit::Count, Observed::One(self.retried as f64)),
            (emf::PAYMENTS_REFUSED, Unit::Count, Observed::One(self.refused as f64)),
        ];
        if let Some(init) = init {
            metrics.push((
                emf::INIT_DURATION,
                Unit::Milliseconds,
                Observed::One(init.as_secs_f64() * 1000.0),
            ));
        }
        emf::line(namespace, &[("FunctionName", function)], &metrics, timestamp_ms)
    }
}

/// The handler and what it needs.
#[derive(Debug)]
pub struct Payments<G, S, K> {
    gateway: G,
    idempotency: Idempotency,
    orders: Arc<CommandService<S, K>>,
    /// Messages of one batch processed at once.
    pub concurrency: usize,
}

impl<G: Gateway, S: EventStore, K: RecordSink> Payments<G, S, K> {
    /// A handler over its ports.
    pub fn new(gateway: G, idempotency: Idempotency, orders: Arc<CommandService<S, K>>) -> Self {
        Payments {
            gateway,
            idempotency,
            orders,
            concurrency: 10,
        }
    }

    /// The gateway (tests read its counters).
    pub fn gateway(&self) -> &G {
        &self.gateway
    }

    /// Processes a batch; answers the messages that failed.
    pub async fn handle(&self, event: SqsEvent) -> SqsBatchResponse {
        self.handle_counted(event).await.0
    }

    /// Processes a batch; answers the messages that failed, and how each kind went
    /// (for the function's EMF line).
    pub async fn handle_counted(&self, event: SqsEvent) -> (SqsBatchResponse, BatchCounts) {
        let results: Vec<(String, Result<Settled, Failed>)> = futures::stream::iter(event.records)
            .map(|message| async move {
                let id = message.message_id.clone().unwrap_or_default();
                let span = info_span!("payment", message_id = %id, order_id = tracing::field::Empty);
                let result = self.process(&message).instrument(span).await;
                (id, result)
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await;
        // Lambda freezes the process once the batch response is returned: clear the
        // markers of the payment events first, or the relay would publish them again.
        self.orders.settled().await;
        let mut response = SqsBatchResponse::default();
        let mut counts = BatchCounts::default();
        for (id, result) in results {
            match result {
                Ok(settled) => {
                    counts.settled += 1;
                    info!(message_id = %id, ?settled, "payment message processed");
                }
                Err(e) if e.is_permanent() => {
                    counts.refused += 1;
                    warn!(message_id = %id, error = %e, "payment message refused; it will end in the DLQ");
                    response.add_failure(id);
                }
                Err(e) => {
                    counts.retried += 1;
                    info!(message_id = %id, error = %e, "payment message failed for now; SQS will redeliver it");
                    response.add_failure(id);
                }
            }
        }
        (response, counts)
    }

    /// One message.
    pub async fn process(&self, message: &SqsMessage) -> Result<Settled, Failed> {
        let request = PaymentRequest::parse(message.body.as_deref().unwrap_or_default())?;
        tracing::Span::current().record("order_id", request.order_id.as_str());
        let order_id = OrderId::parse(request.order_id.as_str()).map_err(BadMessage::OrderId)?;
        let hash = payload_hash(&request);
        let charge = match self.idempotency.claim(&request, &hash).await? {
            Claim::Completed(charge) => charge,
            Claim::InProgress => return Err(Failed::InProgress(request.idempotency_key)),
            Claim::Mismatch => return Err(Failed::KeyReused(request.idempotency_key)),
            Claim::Acquired => match self
                .charge_if_payable(&order_id, &request, &hash, delivery(message))
                .await
            {
                Ok(Payable::Charged(charge, order)) => {
                    return self.append(order_id, Some(order), &request, &hash, &charge).await;
                }
                Ok(Payable::Settled(status)) => {
                    self.idempotency.release(&request, &hash).await?;
                    return Ok(Settled::AlreadySettled { status });
                }
                Err(e) => {
                    // Let the redelivery (or another payment's message) in at once.
                    if let Err(release) = self.idempotency.release(&request, &hash).await {
                        warn!(error = %release, "could not release the claim; it expires with its lease");
                    }
                    return Err(e);
                }
            },
        };
        self.append(order_id, None, &request, &hash, &charge).await
    }

    /// Charges when the order awaits exactly this payment.
    async fn charge_if_payable(
        &self,
        order_id: &OrderId,
        request: &PaymentRequest,
        hash: &str,
        delivery: u32,
    ) -> Result<Payable, Failed> {
        let (order, version) = self
            .orders
            .state::<Order>(&AggregateId::Order(order_id.clone()))
            .await?;
        let not_payable = |reason: String| Failed::NotPayable {
            order_id: request.order_id.clone(),
            reason,
        };
        match order.status {
            None => return Err(not_payable("no such order".into())),
            Some(OrderStatus::Placed) => {}
            Some(status) => return Ok(Payable::Settled(status_name(status))),
        }
        if order.total != Cents::new(request.amount_cents) {
            return Err(not_payable(format!(
                "the order's total is {} cents, the request's {}",
                order.total.get(),
                request.amount_cents
            )));
        }
        let charge = self.gateway.charge(request, delivery).await?;
        self.idempotency.complete(request, hash, &charge).await?;
        Ok(Payable::Charged(charge, (order, version)))
    }

    /// Appends the outcome to the order, once however often it is called.
    /// `loaded` is the order as the charge found it, when it was just read: the append
    /// then needs no second read (a change in between shows as a version conflict).
    async fn append(
        &self,
        order_id: OrderId,
        loaded: Option<(Order, u64)>,
        request: &PaymentRequest,
        hash: &str,
        charge: &Charge,
    ) -> Result<Settled, Failed> {
        let (command, settled) = match charge {
            Charge::Authorized { payment_id } => (
                OrderCommand::Authorize {
                    payment_id: payment_id.clone(),
                    amount: Cents::new(request.amount_cents),
                },
                Settled::Authorized {
                    payment_id: payment_id.clone(),
                },
            ),
            Charge::Declined { reason } => (
                OrderCommand::Decline { reason: reason.clone() },
                Settled::Declined { reason: reason.clone() },
            ),
        };
        let meta = CommandMeta {
            idempotency_key: Some(format!("payment-outcome:{}", request.idempotency_key)),
            request_hash: hash.to_owned(),
            correlation_id: request.order_id.clone(),
        };
        let id = AggregateId::Order(order_id.clone());
        let respond = |_: &[cafe_events::EventEnvelope], version: u64| StoredResponse {
            status: 200,
            body: serde_json::json!({ "order_id": request.order_id, "version": version }),
        };
        match self
            .orders
            .execute_from::<Order>(&id, loaded, &(order_id, command), &Default::default(), &meta, respond)
            .await
        {
            Ok(_) => Ok(settled),
            // Settled by someone else in the meantime (a cancel, an operator): nothing to
            // append. The charge stands and is reported; refunding is the operator's call.
            Err(CommandError::Rejected(rule)) => {
                let (order, _) = self.orders.state::<Order>(&id).await?;
                match order.status {
                    Some(OrderStatus::Placed) | None => Err(Failed::Append(CommandError::Rejected(rule))),
                    Some(status) => {
                        warn!(
                            ?charge,
                            status = status_name(status),
                            "order settled before the payment outcome could be appended"
                        );
                        Ok(Settled::AlreadySettled {
                            status: status_name(status),
                        })
                    }
                }
            }
            Err(e) => Err(Failed::Append(e)),
        }
    }
}
