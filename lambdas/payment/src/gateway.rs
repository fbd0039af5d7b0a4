//! The payment-gateway port and a deterministic simulation of one.
//!
//! The simulation's rules (so tests and the local saga can choose an outcome):
//! - an amount above [`SimulatedGateway::limit_cents`] is declined (`amount_over_limit`);
//! - a customer in the blocked set is declined (`customer_blocked`);
//! - a customer marked flaky with `n` fails transiently on the first `n` charges of each
//!   idempotency key, then behaves normally (a retried delivery succeeds);
//! - anything else is authorised, with a payment id derived from the idempotency key, so
//!   a repeated charge of one key answers the same payment, as real gateways do with their
//!   own idempotency keys.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use cafe_events::payment::PaymentRequest;

/// What the gateway decided (stored as the outcome of an idempotency record).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Charge {
    /// Money reserved; the gateway's reference.
    Authorized {
        /// The gateway's payment id.
        payment_id: String,
    },
    /// Refused for good.
    Declined {
        /// Machine-readable reason.
        reason: String,
    },
}

/// The gateway could not answer now; the same request may succeed later.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("payment gateway unavailable: {0}")]
pub struct Transient(pub String);

/// A payment gateway.
pub trait Gateway: Send + Sync {
    /// Charges `request` (idempotent by its key on the gateway's side).
    fn charge(&self, request: &PaymentRequest) -> impl Future<Output = Result<Charge, Transient>> + Send;
}

/// The simulation (see the module documentation for its rules).
#[derive(Debug)]
pub struct SimulatedGateway {
    /// Largest amount authorised.
    pub limit_cents: i64,
    blocked: HashSet<String>,
    flaky: HashMap<String, u32>,
    /// How long each charge takes to answer (a card network's round trip; none by default).
    pub latency: std::time::Duration,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Charge calls per idempotency key (failed ones included).
    calls: HashMap<String, u32>,
    /// Authorisations made, by key; a repeat of a key is not a second charge.
    authorized: HashSet<String>,
    /// Calls that reached a decision (authorised or declined), repeats included: what
    /// our own idempotency must keep at one per payment.
    decisions: usize,
}

impl Default for SimulatedGateway {
    fn default() -> Self {
        SimulatedGateway::new(50_000)
    }
}

impl SimulatedGateway {
    /// Authorises up to `limit_cents`; nobody blocked or flaky.
    pub fn new(limit_cents: i64) -> Self {
        SimulatedGateway {
            limit_cents,
            blocked: HashSet::new(),
            flaky: HashMap::new(),
            latency: std::time::Duration::ZERO,
            state: Mutex::default(),
        }
    }

    /// Declines every charge of `customer`.
    pub fn block(mut self, customer: impl Into<String>) -> Self {
        self.blocked.insert(customer.into());
        self
    }

    /// Fails the first `failures` charges of each of `customer`'s keys transiently.
    pub fn flaky(mut self, customer: impl Into<String>, failures: u32) -> Self {
        self.flaky.insert(customer.into(), failures);
        self
    }

    /// Distinct payments authorised (a key charged twice counts once).
    pub fn authorizations(&self) -> usize {
        self.state.lock().map(|s| s.authorized.len()).unwrap_or_default()
    }

    /// Charge calls that were decided, a repeat of a key counting again: one per
    /// payment when the caller's idempotency works (the gateway's own would hide it).
    pub fn decisions(&self) -> usize {
        self.state.lock().map(|s| s.decisions).unwrap_or_default()
    }

    fn decide(&self, request: &PaymentRequest) -> Result<Charge, Transient> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| Transient("simulated gateway state poisoned".into()))?;
        let calls = state.calls.entry(request.idempotency_key.clone()).or_default();
        *calls += 1;
        if let Some(&failures) = self.flaky.get(&request.customer_id)
            && *calls <= failures
        {
            return Err(Transient(format!("simulated outage ({calls} of {failures})")));
        }
        state.decisions += 1;
        if self.blocked.contains(&request.customer_id) {
            return Ok(Charge::Declined {
                reason: "customer_blocked".into(),
            });
        }
        if request.amount_cents > self.limit_cents {
            return Ok(Charge::Declined {
                reason: "amount_over_limit".into(),
            });
        }
        state.authorized.insert(request.idempotency_key.clone());
        Ok(Charge::Authorized {
            payment_id: format!("pay-{}", request.idempotency_key),
        })
    }
}

impl Gateway for SimulatedGateway {
    async fn charge(&self, request: &PaymentRequest) -> Result<Charge, Transient> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        self.decide(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(customer: &str, amount_cents: i64, key: &str) -> PaymentRequest {
        PaymentRequest {
            order_id: "o-1".into(),
            customer_id: customer.into(),
            amount_cents,
            currency: "USD".into(),
            attempt: 1,
            idempotency_key: key.into(),
        }
    }

    #[test]
    fn the_rules_decide_as_documented() {
        let g = SimulatedGateway::new(10_000).block("mallory").flaky("flaky", 2);
        assert_eq!(
            g.decide(&request("alice", 10_000, "k1")),
            Ok(Charge::Authorized {
                payment_id: "pay-k1".into()
            })
        );
        assert_eq!(
            g.decide(&request("alice", 10_001, "k2")),
            Ok(Charge::Declined {
                reason: "amount_over_limit".into()
            })
        );
        assert_eq!(
            g.decide(&request("mallory", 100, "k3")),
            Ok(Charge::Declined {
                reason: "customer_blocked".into()
            })
        );
        assert!(g.decide(&request("flaky", 100, "k4")).is_err());
        assert!(g.decide(&request("flaky", 100, "k4")).is_err());
        assert_eq!(
            g.decide(&request("flaky", 100, "k4")),
            Ok(Charge::Authorized {
                payment_id: "pay-k4".into()
            })
        );
        // Each key of a flaky customer fails its own first charges.
        assert!(g.decide(&request("flaky", 100, "k5")).is_err());
        assert_eq!(g.authorizations(), 2);
        assert_eq!(
            g.decisions(),
            4,
            "two authorised, two declined; outages are no decision"
        );
    }

    #[test]
    fn a_key_charged_again_is_the_same_payment() {
        let g = SimulatedGateway::default();
        let first = g.decide(&request("alice", 500, "k"));
        assert_eq!(g.decide(&request("alice", 500, "k")), first);
        assert_eq!(g.authorizations(), 1);
        assert_eq!(g.decisions(), 2, "but both calls were decided");
    }
}
