//! The invariants every stress scenario and chaos experiment ends with: one checker,
//! so "nothing was lost" means the same thing after each of them.
//!
//! - **Read models equal a rebuild.** Every read model is rebuilt from the event store
//!   into shadow copies (the replay's own rebuild, unpaced) and compared partition by
//!   partition with the live copy (the replay's verifier); any differing row fails.
//!   A live copy ahead of the watermark is fine (it moved after the rebuild began).
//! - **Every event reached the stream.** No event keeps its pending marker past the
//!   relay's threshold: the outbox publishes before it clears, so a marker left behind
//!   is an event the stream may not have.
//! - **No payment decided twice.** No order holds more than one payment decision
//!   (authorized or declined) in the event store: the function's idempotency must keep
//!   a redelivered or concurrently retried request from deciding again.
//! - **The gateway charged each payment once.** The simulated gateway's own books (its
//!   ledger, a line per decision) hold no payment decided twice, and every charge it
//!   authorised is recorded on its order (money taken is never unknown to the order).
//! - **Parked and dead-lettered are exactly the injected poison**: per consumer
//!   application, the parked records' count and reasons; the payment DLQ's depth.
//! - **No process left behind**: every process the experiment started has exited.
//! - **Every accepted order stored** (where the experiment hurts the API itself): each
//!   order answered 201 has its events in the event store.
//!
//! The checker reads; it changes nothing live (the shadows it builds are dropped).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use cafe_consumers::parking::DynamoParkingLot;
use cafe_events::DomainEvent;
use cafe_lambda_payment::gateway::{Charge, Ledger, LedgerEntry};
use cafe_localstack::StackConfig;
use cafe_producers::store::{EventStore, HistoryReader};
use cafe_projections::catalog::ReadModel;
use cafe_projections::verify::{Buckets, Verdict};
use cafe_replay::Params;
use futures::StreamExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Clients;

/// What one consumer application's parking lot must hold: what was there before the
/// experiment, plus the poison it injected, each with a reason naming why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedParked {
    /// The consumer application.
    pub application: String,
    /// Parked before the experiment (not its doing; any reason).
    pub already: usize,
    /// Injected on purpose.
    pub count: usize,
    /// Text the injected records' reasons contain.
    pub reason: String,
}

/// What the experiment did on purpose, so the checker can tell it from damage.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Expected {
    /// Per application, what its parking lot must hold (an application not named must
    /// have parked nothing).
    pub parked: Vec<ExpectedParked>,
    /// Messages the payment DLQ must hold (there before, or dead-lettered on purpose).
    pub dead_letters: u64,
    /// Processes the experiment started, which must all have exited.
    pub processes: Vec<u32>,
    /// Orders an API answered 201 for, which must all be in the event store (checked
    /// where the experiment hurts the API itself: one query per order).
    pub accepted: Vec<String>,
}

/// One invariant's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Which invariant.
    pub name: &'static str,
    /// Whether it holds.
    pub holds: bool,
    /// What was found (the first offenders when it does not hold).
    pub detail: String,
}

/// Every invariant's result.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verdicts {
    /// In the order checked.
    pub checks: Vec<Check>,
}

impl Verdicts {
    /// Whether every invariant holds.
    pub fn hold(&self) -> bool {
        self.checks.iter().all(|c| c.holds)
    }

    /// The invariants that do not hold.
    pub fn broken(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.holds)
    }

    fn push(&mut self, name: &'static str, holds: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name,
            holds,
            detail: detail.into(),
        });
    }
}

impl std::fmt::Display for Verdicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for c in &self.checks {
            let mark = if c.holds { "ok    " } else { "BROKEN" };
            writeln!(f, "  {mark} {:<30} {}", c.name, c.detail)?;
        }
        Ok(())
    }
}

impl Expected {
    /// The stack as it is now (parked records, dead letters): what an experiment about
    /// to start must not be blamed for.
    pub async fn before(cfg: &StackConfig, clients: &Clients) -> Result<Expected> {
        let lot = DynamoParkingLot::new(clients.dynamodb.clone(), &cfg.names.parked_table);
        let mut parked = Vec::new();
        for application in crate::dashboard::applications() {
            parked.push(ExpectedParked {
                already: parked_now(&lot, &application).await?.len(),
                application,
                count: 0,
                reason: String::new(),
            });
        }
        Ok(Expected {
            parked,
            dead_letters: dlq_depth(cfg, clients).await?,
            processes: Vec::new(),
            accepted: Vec::new(),
        })
    }

    /// Adds `count` records parked on purpose by every application in `applications`.
    pub fn with_poison(mut self, applications: &[String], count: usize, reason: &str) -> Expected {
        for p in self.parked.iter_mut().filter(|p| applications.contains(&p.application)) {
            p.count += count;
            reason.clone_into(&mut p.reason);
        }
        self
    }
}

async fn parked_now(lot: &DynamoParkingLot, application: &str) -> Result<Vec<cafe_consumers::parking::Parked>> {
    lot.list(application)
        .await
        .with_context(|| format!("listing {application}'s parked records"))
}

async fn dlq_depth(cfg: &StackConfig, clients: &Clients) -> Result<u64> {
    let dlq = crate::payments::queue_url(&clients.sqs, &cfg.names.payments_dlq).await?;
    crate::payments::depth(&clients.sqs, &dlq).await
}

/// Names of the invariants, as reported.
pub const READ_MODELS: &str = "read models = rebuild";
/// See [`READ_MODELS`].
pub const OUTBOX: &str = "every event on the stream";
/// See [`READ_MODELS`].
pub const PAYMENTS: &str = "no payment decided twice";
/// See [`READ_MODELS`].
pub const GATEWAY: &str = "gateway charged each once";
/// See [`READ_MODELS`].
pub const PARKED: &str = "parked = injected poison";
/// See [`READ_MODELS`].
pub const DEAD_LETTERS: &str = "DLQ = injected poison";
/// See [`READ_MODELS`].
pub const PROCESSES: &str = "no process left behind";
/// See [`READ_MODELS`].
pub const ACCEPTED: &str = "every accepted order stored";

/// Checks every invariant on the stack. Call it once the pipeline is quiet (the load
/// stopped, the projectors caught up, the saga's queue empty): it waits out the
/// replay's settle time first, so the rebuild's watermark covers every event.
pub async fn check(cfg: &StackConfig, clients: &Clients, expected: &Expected) -> Result<Verdicts> {
    let mut v = Verdicts::default();
    tokio::time::sleep(cafe_replay::SETTLE + Duration::from_secs(1)).await;
    read_models(cfg, clients, &mut v).await?;
    outbox(cfg, clients, &mut v).await?;
    payments(cfg, clients, &mut v).await?;
    parked(cfg, clients, expected, &mut v).await?;
    dead_letters(cfg, clients, expected, &mut v).await?;
    processes(expected, &mut v);
    accepted(cfg, clients, expected, &mut v).await?;
    Ok(v)
}

/// Every order an API answered 201 for has its events in the store: a crash after the
/// answer must not take back what it promised.
async fn accepted(cfg: &StackConfig, clients: &Clients, expected: &Expected, v: &mut Verdicts) -> Result<()> {
    if expected.accepted.is_empty() {
        return Ok(());
    }
    let store = store(cfg, clients);
    let mut missing = Vec::new();
    for order in &expected.accepted {
        let history = store
            .history_of(order)
            .await
            .with_context(|| format!("reading order {order}"))?;
        if history.is_empty() {
            missing.push(order.as_str());
        }
    }
    let detail = if missing.is_empty() {
        format!("all {} accepted orders are in the event store", expected.accepted.len())
    } else {
        format!(
            "{} of {} accepted orders are not in the event store: {}",
            missing.len(),
            expected.accepted.len(),
            missing.iter().take(5).copied().collect::<Vec<_>>().join(", ")
        )
    };
    v.push(ACCEPTED, missing.is_empty(), detail);
    Ok(())
}

async fn read_models(cfg: &StackConfig, clients: &Clients, v: &mut Verdicts) -> Result<()> {
    let replayer = crate::read_side::replayer(cfg, clients)?;
    let params = Params::full_rebuild(&ReadModel::ALL);
    let meta = replayer
        .create(params, None)
        .await
        .context("creating the check's rebuild")?;
    let outcome = replayer
        .run(&meta.id, CancellationToken::new(), false, Duration::from_secs(3600))
        .await
        .context("rebuilding the read models")?;
    let buckets = Buckets::new(256).context("buckets")?;
    let reports = replayer.verify(&meta.id, buckets, 5).await;
    // The shadows go whatever the verdict: a check leaves nothing behind.
    let dropped = replayer.drop(&meta.id).await;
    let reports = reports.context("comparing the rebuild with the live read models")?;
    dropped.context("dropping the check's shadows")?;
    for (model, report) in &reports {
        let differ = report.count(Verdict::Differs);
        let holds = differ == 0 && outcome.finished;
        let keys: Vec<String> = report
            .keys
            .iter()
            .filter(|k| k.is_error())
            .map(|k| format!("{k:?}"))
            .collect();
        let detail = if holds {
            format!(
                "{model}: {} partitions match, {} live ahead ({} events rebuilt)",
                report.count(Verdict::Match),
                report.count(Verdict::LiveAhead),
                outcome.applied
            )
        } else {
            format!("{model}: {differ} partitions differ: {}", keys.join("; "))
        };
        v.push(READ_MODELS, holds, detail);
    }
    Ok(())
}

async fn outbox(cfg: &StackConfig, clients: &Clients, v: &mut Verdicts) -> Result<()> {
    let store = store(cfg, clients);
    let threshold = cafe_producers::relay::RelayConfig::default().older_than;
    let pending = store
        .pending(threshold, 100)
        .await
        .context("reading the pending markers")?;
    let detail = if pending.is_empty() {
        format!("no event pending longer than {}", humantime::format_duration(threshold))
    } else {
        let first: Vec<String> = pending
            .iter()
            .take(5)
            .map(|e| format!("{} v{}", e.aggregate_id, e.version))
            .collect();
        format!(
            "{}{} events pending longer than {}: {}",
            pending.len(),
            if pending.len() == 100 { "+" } else { "" },
            humantime::format_duration(threshold),
            first.join(", ")
        )
    };
    v.push(OUTBOX, pending.is_empty(), detail);
    Ok(())
}

async fn payments(cfg: &StackConfig, clients: &Clients, v: &mut Verdicts) -> Result<()> {
    let store = store(cfg, clients);
    let mut decisions: BTreeMap<String, u32> = BTreeMap::new();
    let mut authorized: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut pages = std::pin::pin!(store.read_all(4, 1000));
    while let Some(page) = pages.next().await {
        for e in page.context("reading the event store")? {
            match &e.event {
                DomainEvent::PaymentAuthorized(paid) => {
                    authorized
                        .entry(e.aggregate_id.to_string())
                        .or_default()
                        .push(paid.payment_id.clone());
                }
                DomainEvent::PaymentDeclined(_) => {}
                _ => continue,
            }
            *decisions.entry(e.aggregate_id.to_string()).or_default() += 1;
        }
    }
    let path = cfg.gateway_ledger();
    let ledger = Ledger::read(&path).with_context(|| format!("reading the gateway ledger {}", path.display()))?;
    let (holds, detail) = books(&ledger, &authorized);
    v.push(GATEWAY, holds, detail);
    let twice: Vec<String> = decisions
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(order, n)| format!("{order} ×{n}"))
        .collect();
    let detail = if twice.is_empty() {
        format!("{} orders decided, each once", decisions.len())
    } else {
        format!(
            "{} orders decided more than once: {}",
            twice.len(),
            twice.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        )
    };
    v.push(PAYMENTS, twice.is_empty(), detail);
    Ok(())
}

/// The gateway's books against the event store's payments (`authorized`: per order, the
/// payment ids its `PaymentAuthorized` events carry). Only one way: a payment decided by
/// a gateway that keeps no books (a test's own) is not the ledger's to vouch for.
fn books(ledger: &[LedgerEntry], authorized: &BTreeMap<String, Vec<String>>) -> (bool, String) {
    let mut per_key: BTreeMap<&str, u32> = BTreeMap::new();
    for entry in ledger {
        *per_key.entry(&entry.idempotency_key).or_default() += 1;
    }
    let twice: Vec<String> = per_key
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(key, n)| format!("{key} ×{n}"))
        .collect();
    let unrecorded: Vec<String> = ledger
        .iter()
        .filter_map(|e| match &e.charge {
            Charge::Authorized { payment_id }
                if !authorized.get(&e.order_id).is_some_and(|ids| ids.contains(payment_id)) =>
            {
                Some(format!("{} ({payment_id})", e.order_id))
            }
            _ => None,
        })
        .collect();
    let first = |v: &[String]| v.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    let mut problems = Vec::new();
    if !twice.is_empty() {
        problems.push(format!(
            "{} payments decided more than once: {}",
            twice.len(),
            first(&twice)
        ));
    }
    if !unrecorded.is_empty() {
        problems.push(format!(
            "{} charges not recorded on their order: {}",
            unrecorded.len(),
            first(&unrecorded)
        ));
    }
    if problems.is_empty() {
        let detail = format!(
            "{} decisions in the gateway's ledger, one per payment, each on its order",
            ledger.len()
        );
        (true, detail)
    } else {
        (false, problems.join("; "))
    }
}

async fn parked(cfg: &StackConfig, clients: &Clients, expected: &Expected, v: &mut Verdicts) -> Result<()> {
    let lot = DynamoParkingLot::new(clients.dynamodb.clone(), &cfg.names.parked_table);
    for application in crate::dashboard::applications() {
        let parked = parked_now(&lot, &application).await?;
        let want = expected.parked.iter().find(|p| p.application == application);
        let (already, count) = want.map_or((0, 0), |w| (w.already, w.count));
        let injected =
            |p: &&cafe_consumers::parking::Parked| want.is_some_and(|w| count > 0 && p.reason.contains(&w.reason));
        let matching = parked.iter().filter(injected).count();
        let holds = parked.len() == already + count && matching >= count;
        let detail = if holds {
            let before = if already > 0 {
                format!(" ({already} from before)")
            } else {
                String::new()
            };
            format!("{application}: {count} parked, as injected{before}")
        } else {
            let others: Vec<&str> = parked
                .iter()
                .filter(|p| !injected(p))
                .map(|p| p.reason.as_str())
                .take(3)
                .collect();
            format!(
                "{application}: {} parked, {count} injected, {already} from before; other reasons: {}",
                parked.len(),
                others.join(" | ")
            )
        };
        v.push(PARKED, holds, detail);
    }
    Ok(())
}

async fn dead_letters(cfg: &StackConfig, clients: &Clients, expected: &Expected, v: &mut Verdicts) -> Result<()> {
    let depth = dlq_depth(cfg, clients).await?;
    v.push(
        DEAD_LETTERS,
        depth == expected.dead_letters,
        format!("{depth} in the payment DLQ, {} expected", expected.dead_letters),
    );
    Ok(())
}

fn processes(expected: &Expected, v: &mut Verdicts) {
    let alive: Vec<u32> = expected
        .processes
        .iter()
        .copied()
        .filter(|&pid| std::path::Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid))
        .collect();
    v.push(
        PROCESSES,
        alive.is_empty(),
        if alive.is_empty() {
            format!("{} started, all exited", expected.processes.len())
        } else {
            format!("still running: {alive:?}")
        },
    );
}

/// A process that exited but was not reaped yet is gone for our purpose.
fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(true)
}

/// The event store the pipeline writes, as the checker reads it.
pub(crate) fn store(cfg: &StackConfig, clients: &Clients) -> cafe_producers::store::DynamoEventStore {
    cafe_producers::store::DynamoEventStore::new(
        clients.dynamodb.clone(),
        &cfg.names.events_table,
        &cfg.names.idempotency_table,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, order: &str, charge: Charge) -> LedgerEntry {
        LedgerEntry {
            idempotency_key: key.into(),
            order_id: order.into(),
            amount_cents: 445,
            charge,
        }
    }

    fn paid(id: &str) -> Charge {
        Charge::Authorized { payment_id: id.into() }
    }

    #[test]
    fn the_books_break_on_a_payment_decided_twice_or_a_charge_its_order_never_saw() {
        let declined = Charge::Declined {
            reason: "customer_blocked".into(),
        };
        let store: BTreeMap<String, Vec<String>> = [("order-o-1".to_owned(), vec!["pay-k1".to_owned()])].into();
        let fine = [
            entry("k1", "order-o-1", paid("pay-k1")),
            entry("k2", "order-o-2", declined.clone()),
        ];
        assert!(books(&fine, &store).0, "{}", books(&fine, &store).1);

        let twice = [
            entry("k2", "order-o-2", declined.clone()),
            entry("k2", "order-o-2", declined),
        ];
        let (holds, detail) = books(&twice, &store);
        assert!(!holds && detail.contains("k2 ×2"), "{detail}");

        let unknown = [entry("k3", "order-o-3", paid("pay-k3"))];
        let (holds, detail) = books(&unknown, &store);
        assert!(!holds && detail.contains("order-o-3 (pay-k3)"), "{detail}");
    }
}
