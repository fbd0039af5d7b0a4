//! Exactly-once charging over at-least-once delivery: a record per payment in the
//! DynamoDB `idempotency` table.
//!
//! SQS delivers a message at least once, and the saga may resend a request; the gateway
//! must still be charged once. Before charging, a handler *claims* the payment's key with
//! one conditional PutItem that writes an `in_progress` record holding the hash of the
//! payment's meaning. The claim succeeds when there is no record, when an earlier claim's
//! lease ran out (its handler crashed or timed out: the retry may charge, which the
//! gateway's own idempotency by key makes harmless), or when the record has expired.
//! Otherwise the record says what to do: return the stored outcome (`completed`, same
//! hash), retry later (`in_progress`), or refuse a different payment reusing the key.
//!
//! The command side keeps its own records in the same table; ours are prefixed
//! `payment:` and use their own attribute names, so the two never read each other's.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;

use crate::gateway::Charge;
use cafe_events::payment::PaymentRequest;

/// Key prefix of payment records in the shared table.
const PREFIX: &str = "payment:";
const IN_PROGRESS: &str = "in_progress";
const COMPLETED: &str = "completed";

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours: charge, then [`Idempotency::complete`] (or [`Idempotency::release`] on a
    /// transient failure).
    Acquired,
    /// Charged before with the same payload: this is its outcome. Do not charge again.
    Completed(Charge),
    /// Another handler holds a live claim: try again later.
    InProgress,
    /// The key was first used for a different payment: refuse.
    Mismatch,
}

/// The idempotency table could not answer.
#[derive(Debug, thiserror::Error)]
#[error("idempotency table: {0}")]
pub struct StoreFailure(pub String);

fn fail<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(e: &SdkError<E, R>) -> StoreFailure {
    match e.code() {
        Some(code) => StoreFailure(format!("{code}: {}", e.message().unwrap_or_default())),
        None => StoreFailure(format!("{e:?}")),
    }
}

/// Hash of what the payment *means*: order, payer, amount, currency and key. `attempt`
/// is left out on purpose: a saga retry resends the same payment with the next attempt
/// number, and must be answered as the same payment.
pub fn payload_hash(request: &PaymentRequest) -> String {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    for part in [
        request.order_id.as_str(),
        request.customer_id.as_str(),
        &request.amount_cents.to_string(),
        request.currency.as_str(),
        request.idempotency_key.as_str(),
    ] {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

/// Payment records in the `idempotency` table.
#[derive(Debug, Clone)]
pub struct Idempotency {
    client: Client,
    table: String,
    /// How long a claim holds before another handler may take over. Longer than the
    /// function's timeout, so a slow but live handler is never overtaken.
    pub lease: Duration,
    /// How long a completed record answers repeats (DynamoDB TTL).
    pub ttl: Duration,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}
fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

impl Idempotency {
    /// Records in `table` (keyed `idempotency_key`, TTL attribute `expires_at`).
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Idempotency {
            client,
            table: table.into(),
            lease: Duration::from_secs(60),
            ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }

    /// Claims `request`'s key for charging.
    pub async fn claim(&self, request: &PaymentRequest, hash: &str) -> Result<Claim, StoreFailure> {
        let now = chrono::Utc::now();
        let key = format!("{PREFIX}{}", request.idempotency_key);
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("idempotency_key", s(&key))
            .item("payload_hash", s(hash))
            .item("state", s(IN_PROGRESS))
            .item("lease_until", n(now.timestamp_millis() + millis(self.lease)))
            .item("order_id", s(&request.order_id))
            .item("expires_at", n(now.timestamp() + secs(self.ttl)))
            .condition_expression(
                "attribute_not_exists(idempotency_key) OR (#state = :in_progress AND lease_until < :now_ms) \
                 OR expires_at < :now_s",
            )
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":in_progress", s(IN_PROGRESS))
            .expression_attribute_values(":now_ms", n(now.timestamp_millis()))
            .expression_attribute_values(":now_s", n(now.timestamp()))
            .send()
            .await;
        match put {
            Ok(_) => return Ok(Claim::Acquired),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) => {}
            Err(e) => return Err(fail(&e)),
        }
        let Some(item) = self.get(&key).await? else {
            // Released between our put and our read: someone is retrying it right now.
            return Ok(Claim::InProgress);
        };
        let text = |k: &str| item.get(k).and_then(|v| v.as_s().ok()).map(String::as_str);
        if text("payload_hash") != Some(hash) {
            return Ok(Claim::Mismatch);
        }
        match (text("state"), text("outcome")) {
            (Some(COMPLETED), Some(outcome)) => serde_json::from_str(outcome)
                .map(Claim::Completed)
                .map_err(|e| StoreFailure(format!("record {key} holds an unreadable outcome: {e}"))),
            _ => Ok(Claim::InProgress),
        }
    }

    /// Stores the gateway's answer for `request`'s key, ending our claim.
    pub async fn complete(&self, request: &PaymentRequest, hash: &str, charge: &Charge) -> Result<(), StoreFailure> {
        let outcome = serde_json::to_string(charge).map_err(|e| StoreFailure(e.to_string()))?;
        let now = chrono::Utc::now();
        self.client
            .put_item()
            .table_name(&self.table)
            .item("idempotency_key", s(format!("{PREFIX}{}", request.idempotency_key)))
            .item("payload_hash", s(hash))
            .item("state", s(COMPLETED))
            .item("outcome", s(outcome))
            .item("order_id", s(&request.order_id))
            .item("expires_at", n(now.timestamp() + secs(self.ttl)))
            .send()
            .await
            .map_err(|e| fail(&e))?;
        Ok(())
    }

    /// Gives up our claim after a transient failure, so the redelivery need not wait for
    /// the lease to run out. Only an `in_progress` record of this payload is removed.
    pub async fn release(&self, request: &PaymentRequest, hash: &str) -> Result<(), StoreFailure> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("idempotency_key", s(format!("{PREFIX}{}", request.idempotency_key)))
            .condition_expression("#state = :in_progress AND payload_hash = :hash")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":in_progress", s(IN_PROGRESS))
            .expression_attribute_values(":hash", s(hash))
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|se| se.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(fail(&e)),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<HashMap<String, AttributeValue>>, StoreFailure> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("idempotency_key", s(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| fail(&e))?;
        Ok(out.item)
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}
fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> PaymentRequest {
        PaymentRequest {
            order_id: "o-1".into(),
            customer_id: "c-1".into(),
            amount_cents: 1250,
            currency: "USD".into(),
            attempt: 1,
            idempotency_key: "o-1:payment".into(),
        }
    }

    #[test]
    fn the_hash_covers_the_payment_but_not_the_attempt() {
        let first = request();
        let retry = PaymentRequest {
            attempt: 2,
            ..request()
        };
        assert_eq!(payload_hash(&first), payload_hash(&retry));
        for other in [
            PaymentRequest {
                amount_cents: 1251,
                ..request()
            },
            PaymentRequest {
                customer_id: "c-2".into(),
                ..request()
            },
            PaymentRequest {
                order_id: "o-2".into(),
                ..request()
            },
            PaymentRequest {
                currency: "EUR".into(),
                ..request()
            },
        ] {
            assert_ne!(payload_hash(&first), payload_hash(&other), "{other:?}");
        }
    }
}
