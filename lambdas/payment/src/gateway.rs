//! The payment-gateway port and a deterministic simulation of one.
//!
//! The simulation's rules (so tests and the local saga can choose an outcome):
//! - an amount above [`SimulatedGateway::limit_cents`] is declined (`amount_over_limit`);
//! - a customer in the blocked set is declined (`customer_blocked`);
//! - a customer marked flaky with `n` fails transiently on the first `n` deliveries of
//!   each payment request, then behaves normally (a retried delivery succeeds). It
//!   counts deliveries (SQS's receive count), not its own calls: a real gateway is one
//!   service, and a count kept in each function process would fail a retry again on
//!   every instance it lands on, into the DLQ once there are five;
//! - anything else is authorised, with a payment id derived from the idempotency key, so
//!   a repeated charge of one key answers the same payment, as real gateways do with their
//!   own idempotency keys.
//!
//! A real gateway's own records are what a charge-twice audit reconciles against; the
//! simulation keeps them in a [`Ledger`] file when given one (`CAFE_GATEWAY_LEDGER`), a
//! JSON line per decision, appended by every function process, so the invariant checker
//! can count decisions per payment from outside the function.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
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
    /// Charges `request` (idempotent by its key on the gateway's side). `delivery` is
    /// 1 for the request's first delivery and counts its redeliveries (what a client
    /// would send as a retry header); the simulation's outages count on it.
    fn charge(&self, request: &PaymentRequest, delivery: u32)
    -> impl Future<Output = Result<Charge, Transient>> + Send;
}

/// One decision in the gateway's ledger.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LedgerEntry {
    /// The payment's idempotency key.
    pub idempotency_key: String,
    /// The order it pays.
    pub order_id: String,
    /// The amount charged (or refused).
    pub amount_cents: i64,
    /// What was decided.
    #[serde(flatten)]
    pub charge: Charge,
}

/// The gateway's record of its decisions: a file of [`LedgerEntry`] lines, opened for
/// appending, so the several function processes of a run share one.
#[derive(Debug)]
pub struct Ledger(std::fs::File);

impl Ledger {
    /// Opens (or creates) the ledger at `path`, and its directory.
    pub fn open(path: &Path) -> std::io::Result<Ledger> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Ledger)
    }

    /// Appends one decision as one `write` (an `O_APPEND` write of a line this short
    /// lands whole, whichever process wrote before it).
    fn record(&mut self, entry: &LedgerEntry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.0.write_all(&line)
    }

    /// Reads a ledger file; a missing file is an empty ledger.
    pub fn read(path: &Path) -> std::io::Result<Vec<LedgerEntry>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
            .collect()
    }
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
    /// Authorisations made, by key; a repeat of a key is not a second charge.
    authorized: HashSet<String>,
    /// Calls that reached a decision (authorised or declined), repeats included: what
    /// our own idempotency must keep at one per payment.
    decisions: usize,
    /// Where decisions are recorded, if anywhere.
    ledger: Option<Ledger>,
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

    /// Fails the first `failures` deliveries of each of `customer`'s requests
    /// transiently.
    pub fn flaky(mut self, customer: impl Into<String>, failures: u32) -> Self {
        self.flaky.insert(customer.into(), failures);
        self
    }

    /// Records every decision in `ledger` from now on.
    pub fn with_ledger(self, ledger: Ledger) -> Self {
        if let Ok(mut state) = self.state.lock() {
            state.ledger = Some(ledger);
        }
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

    fn decide(&self, request: &PaymentRequest, delivery: u32) -> Result<Charge, Transient> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| Transient("simulated gateway state poisoned".into()))?;
        let charge = self.rule(&mut state, request, delivery)?;
        if let Some(ledger) = &mut state.ledger {
            let entry = LedgerEntry {
                idempotency_key: request.idempotency_key.clone(),
                order_id: request.order_id.clone(),
                amount_cents: request.amount_cents,
                charge: charge.clone(),
            };
            // A real gateway that cannot keep its books does not answer: nor does this one.
            ledger
                .record(&entry)
                .map_err(|e| Transient(format!("gateway ledger: {e}")))?;
        }
        Ok(charge)
    }

    fn rule(&self, state: &mut State, request: &PaymentRequest, delivery: u32) -> Result<Charge, Transient> {
        if let Some(&failures) = self.flaky.get(&request.customer_id)
            && delivery <= failures
        {
            return Err(Transient(format!("simulated outage ({delivery} of {failures})")));
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
    async fn charge(&self, request: &PaymentRequest, delivery: u32) -> Result<Charge, Transient> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        self.decide(request, delivery)
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
            g.decide(&request("alice", 10_000, "k1"), 1),
            Ok(Charge::Authorized {
                payment_id: "pay-k1".into()
            })
        );
        assert_eq!(
            g.decide(&request("alice", 10_001, "k2"), 1),
            Ok(Charge::Declined {
                reason: "amount_over_limit".into()
            })
        );
        assert_eq!(
            g.decide(&request("mallory", 100, "k3"), 1),
            Ok(Charge::Declined {
                reason: "customer_blocked".into()
            })
        );
        assert!(g.decide(&request("flaky", 100, "k4"), 1).is_err());
        assert!(g.decide(&request("flaky", 100, "k4"), 2).is_err());
        assert_eq!(
            g.decide(&request("flaky", 100, "k4"), 3),
            Ok(Charge::Authorized {
                payment_id: "pay-k4".into()
            })
        );
        // Each request of a flaky customer fails its own first deliveries, whoever saw
        // the earlier ones (another instance of the function).
        assert!(g.decide(&request("flaky", 100, "k5"), 1).is_err());
        assert!(
            SimulatedGateway::new(10_000)
                .flaky("flaky", 2)
                .decide(&request("flaky", 100, "k5"), 3)
                .is_ok()
        );
        assert_eq!(g.authorizations(), 2);
        assert_eq!(
            g.decisions(),
            4,
            "two authorised, two declined; outages are no decision"
        );
    }

    #[test]
    fn every_decision_and_only_decisions_reach_the_ledger() {
        let dir = std::env::temp_dir().join(format!("cafe-ledger-{}", std::process::id()));
        let path = dir.join("ledger.jsonl");
        let _ = std::fs::remove_file(&path);
        let g = SimulatedGateway::new(1_000)
            .flaky("flaky", 1)
            .with_ledger(Ledger::open(&path).unwrap());
        let _ = g.decide(&request("alice", 500, "k1"), 1);
        let _ = g.decide(&request("alice", 5_000, "k2"), 1);
        let _ = g.decide(&request("flaky", 100, "k3"), 1);
        let _ = g.decide(&request("flaky", 100, "k3"), 2);
        let _ = g.decide(&request("alice", 500, "k1"), 1);
        let keys: Vec<(String, bool)> = Ledger::read(&path)
            .unwrap()
            .into_iter()
            .map(|e| (e.idempotency_key, matches!(e.charge, Charge::Authorized { .. })))
            .collect();
        let owned = |k: &str, ok| (k.to_owned(), ok);
        assert_eq!(
            keys,
            [
                owned("k1", true),
                owned("k2", false),
                owned("k3", true),
                owned("k1", true)
            ],
            "the outage is no decision; the repeat of k1 is one more"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_key_charged_again_is_the_same_payment() {
        let g = SimulatedGateway::default();
        let first = g.decide(&request("alice", 500, "k"), 1);
        assert_eq!(g.decide(&request("alice", 500, "k"), 1), first);
        assert_eq!(g.authorizations(), 1);
        assert_eq!(g.decisions(), 2, "but both calls were decided");
    }
}
