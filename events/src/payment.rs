//! The payment request: JSON on SQS `payments`, one per placed order (and per retry of
//! the saga, which bumps `attempt` but keeps the idempotency key). Not an event, but a
//! contract between two services all the same (the saga's consumer writes it, the
//! payment function reads it), so it lives with the other contracts, where the fuzz
//! target for its parser builds without the function's AWS dependencies.

use serde::{Deserialize, Serialize};

/// Longest id we accept (the command side's ids are far shorter; this only bounds junk).
const MAX_ID: usize = 255;

/// A request to charge a customer for an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequest {
    /// The order being paid.
    pub order_id: String,
    /// Who pays.
    pub customer_id: String,
    /// How much, in the currency's minor unit.
    pub amount_cents: i64,
    /// ISO 4217 code, upper case.
    pub currency: String,
    /// 1 for the first request of an order; a saga retry sends 2, 3, …
    pub attempt: u32,
    /// Same for every delivery and retry of one payment: the gateway charges a key once.
    pub idempotency_key: String,
}

/// Why a message body is not a payment request. Retrying cannot fix it: the message is
/// reported as a batch item failure and ends in the DLQ after `maxReceiveCount`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadMessage {
    /// Not JSON, or not the request's shape (a field missing or of the wrong type).
    #[error("not a payment request: {0}")]
    Shape(String),
    /// The shape is right, a value is not.
    #[error("{field}: {reason}")]
    Field {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The order id is not one the event model accepts.
    #[error("order_id: {0}")]
    OrderId(#[from] crate::IdError),
}

impl PaymentRequest {
    /// Parses and checks an SQS message body.
    pub fn parse(body: &str) -> Result<PaymentRequest, BadMessage> {
        let request: PaymentRequest = serde_json::from_str(body).map_err(|e| BadMessage::Shape(e.to_string()))?;
        request.check()?;
        Ok(request)
    }

    fn check(&self) -> Result<(), BadMessage> {
        let bad = |field, reason| Err(BadMessage::Field { field, reason });
        for (field, value) in [
            ("order_id", &self.order_id),
            ("customer_id", &self.customer_id),
            ("idempotency_key", &self.idempotency_key),
        ] {
            if value.trim().is_empty() {
                return bad(field, "must not be empty");
            }
            if value.len() > MAX_ID {
                return bad(field, "longer than 255 bytes");
            }
        }
        crate::OrderId::parse(self.order_id.as_str())?;
        if self.amount_cents <= 0 {
            return bad("amount_cents", "must be positive");
        }
        if self.currency.len() != 3 || !self.currency.bytes().all(|b| b.is_ascii_uppercase()) {
            return bad("currency", "must be three upper-case letters");
        }
        if self.attempt == 0 {
            return bad("attempt", "starts at 1");
        }
        Ok(())
    }
}
