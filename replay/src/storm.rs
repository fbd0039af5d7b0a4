//! The query storm: analysts hammering the warehouse while a replay rebuilds into it
//! (the seed's quarter-end story: 500 concurrent queries while history is reloaded).
//!
//! K clients each run the analytics reports one after another, against the live
//! facts, through a bounded number of warehouse slots: a semaphore in front of a pool
//! of as many connections, as Redshift's concurrency slots queue what exceeds them
//! (WLM's default manual queue runs 5). A query's latency runs from when its client
//! asks to when the answer is in, so the wait for a slot is part of it and is also
//! reported on its own. The clients are closed-loop on purpose: K analysts, each
//! waiting for their answer before asking again, is the story; the replay is what
//! runs at a fixed (or unlimited) pace beside them.
//!
//! The storm's replay is an ordinary one ([`Replayer::create`] and
//! [`Replayer::run`]): its shadows are dropped afterwards unless kept.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cafe_producers::store::HistoryReader;
use cafe_projections::analytics::Warehouse;
use cafe_projections::analytics::reports::{Reports, Window};
use cafe_projections::catalog::ReadModel;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::error::ReplayError;
use crate::rebuild::Replayer;
use crate::record::{Params, ReplayId};

/// The reports a client runs, in turn.
pub const REPORTS: [&str; 4] = ["sales-by-store-hour", "top-items", "loyalty-tiers", "basket-size"];

/// The storm's shape.
#[derive(Debug, Clone, Copy)]
pub struct Storm {
    /// Concurrent clients (K).
    pub clients: usize,
    /// Warehouse slots: queries running at once; the rest wait.
    pub slots: usize,
    /// Keep the replay's shadows afterwards (else they are dropped).
    pub keep: bool,
}

/// A latency distribution, in milliseconds (nearest rank).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Latencies {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Maximum.
    pub max_ms: f64,
}

impl Latencies {
    /// The distribution of `samples`.
    pub fn of(samples: &[Duration]) -> Latencies {
        let mut s = samples.to_vec();
        s.sort_unstable();
        let at = |q: f64| {
            let rank = ((s.len() as f64 * q).ceil() as usize).clamp(1, s.len().max(1)) - 1;
            s.get(rank).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        Latencies {
            n: s.len(),
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: s.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        }
    }
}

/// What a storm measured.
#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    /// Concurrent clients.
    pub clients: usize,
    /// Warehouse slots.
    pub slots: usize,
    /// Queries answered.
    pub queries: usize,
    /// Queries that failed.
    pub errors: usize,
    /// The first failure's message, if any.
    pub first_error: Option<String>,
    /// From asking to the answer (slot wait included).
    pub latency: Latencies,
    /// The wait for a slot alone.
    pub queue_wait: Latencies,
    /// Per report, from asking to the answer.
    pub by_report: BTreeMap<&'static str, Latencies>,
    /// Queries answered per second over the replay.
    pub queries_per_sec: f64,
    /// The replay.
    pub replay: ReplayId,
    /// Whether it read every segment to its end.
    pub replay_finished: bool,
    /// Events it applied.
    pub events_applied: u64,
    /// How long it ran.
    pub replay_secs: f64,
    /// Events applied per second.
    pub events_per_sec: f64,
    /// The live projectors' worst lag while it ran (sampled every second).
    pub max_live_lag_ms: u64,
    /// Its p99.
    pub live_lag_p99_ms: u64,
    /// Whether the replay's shadows were dropped afterwards.
    pub dropped: bool,
}

#[derive(Default)]
struct Samples {
    latency: Vec<Duration>,
    wait: Vec<Duration>,
    by_report: BTreeMap<&'static str, Vec<Duration>>,
    errors: usize,
    first_error: Option<String>,
}

impl<H: HistoryReader + Send + Sync> Replayer<H> {
    /// Runs a replay with `params` while `storm.clients` clients run the reports on the
    /// live facts (whichever copy the serving pointer names) until it ends or `stop`
    /// fires.
    pub async fn storm(
        &self,
        storm: Storm,
        params: Params,
        total_estimate: Option<u64>,
        stop: CancellationToken,
    ) -> Result<StormReport, ReplayError> {
        if storm.clients == 0 || storm.slots == 0 {
            return Err(ReplayError::BadInput("clients and slots must be at least 1".into()));
        }
        let live = self.live.namespace(ReadModel::Analytics).await?;
        let (warehouse, schema) = self.at.warehouse(&live, storm.slots)?;
        // Facts that cannot be read are a failure before anything is written.
        Reports::new(&warehouse, &schema)?.loyalty_tiers().await?;
        let meta = self.create(params, total_estimate).await?;
        let warehouse = Arc::new(warehouse);
        let schema: Arc<str> = schema.into();
        let slots = Arc::new(Semaphore::new(storm.slots));
        let samples = Arc::new(Mutex::new(Samples::default()));
        let done = CancellationToken::new();
        let clients: Vec<_> = (0..storm.clients)
            .map(|client| {
                let (warehouse, schema, slots, samples, done) = (
                    warehouse.clone(),
                    schema.clone(),
                    slots.clone(),
                    samples.clone(),
                    done.clone(),
                );
                tokio::spawn(async move {
                    let mut turn = client;
                    while !done.is_cancelled() {
                        let report = REPORTS[turn % REPORTS.len()];
                        turn += 1;
                        let asked = Instant::now();
                        // A client still waiting for a slot when the replay ends goes
                        // home: its query would only run after the storm.
                        let slot = tokio::select! {
                            () = done.cancelled() => return,
                            slot = slots.acquire() => slot,
                        };
                        let Ok(_slot) = slot else { return };
                        let waited = asked.elapsed();
                        let answer = query(&*warehouse, &schema, report).await;
                        let took = asked.elapsed();
                        let Ok(mut s) = samples.lock() else { return };
                        match answer {
                            Ok(()) => {
                                s.latency.push(took);
                                s.wait.push(waited);
                                s.by_report.entry(report).or_default().push(took);
                            }
                            Err(e) => {
                                s.errors += 1;
                                s.first_error.get_or_insert_with(|| format!("{report}: {e}"));
                            }
                        }
                    }
                })
            })
            .collect();
        let started = Instant::now();
        let outcome = self.run(&meta.id, stop, false, Duration::from_secs(5)).await;
        let storm_secs = started.elapsed().as_secs_f64();
        done.cancel();
        for c in clients {
            let _ = c.await;
        }
        let outcome = outcome?;
        let dropped = if storm.keep {
            false
        } else {
            self.drop(&meta.id).await?;
            true
        };
        let s = samples.lock().map(|mut s| std::mem::take(&mut *s)).unwrap_or_default();
        let replay_secs = outcome.took.as_secs_f64();
        Ok(StormReport {
            clients: storm.clients,
            slots: storm.slots,
            queries: s.latency.len(),
            errors: s.errors,
            first_error: s.first_error,
            latency: Latencies::of(&s.latency),
            queue_wait: Latencies::of(&s.wait),
            by_report: s.by_report.iter().map(|(k, v)| (*k, Latencies::of(v))).collect(),
            queries_per_sec: s.latency.len() as f64 / storm_secs.max(f64::EPSILON),
            replay: meta.id,
            replay_finished: outcome.finished,
            events_applied: outcome.applied,
            replay_secs,
            events_per_sec: outcome.applied as f64 / replay_secs.max(f64::EPSILON),
            max_live_lag_ms: millis(outcome.pacing.live_lag_max),
            live_lag_p99_ms: millis(outcome.pacing.live_lag_p99),
            dropped,
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs one report over the whole history.
async fn query<W: Warehouse>(warehouse: &W, schema: &str, report: &str) -> Result<(), ReplayError> {
    let reports = Reports::new(warehouse, schema)?;
    let all = Window::default();
    match report {
        "sales-by-store-hour" => reports.sales_by_store_hour(all).await?,
        "top-items" => reports.top_items(all, 10).await?,
        "loyalty-tiers" => reports.loyalty_tiers().await?,
        _ => reports.basket_size(all).await?,
    };
    Ok(())
}

impl StormReport {
    /// The figures as a table.
    pub fn render(&self) -> String {
        let row = |name: &str, l: &Latencies| {
            format!(
                "  {name:<22} {:>8} {:>9.1} {:>9.1} {:>9.1} {:>9.1}\n",
                l.n, l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms
            )
        };
        let mut out = format!(
            "query storm: {} clients, {} warehouse slots, replay {} ({})\n",
            self.clients,
            self.slots,
            self.replay,
            if self.dropped {
                "shadows dropped"
            } else {
                "shadows kept"
            }
        );
        out.push_str(&format!(
            "  {:<22} {:>8} {:>9} {:>9} {:>9} {:>9}\n",
            "ms", "queries", "p50", "p95", "p99", "max"
        ));
        out.push_str(&row("query (wait + run)", &self.latency));
        out.push_str(&row("  of which slot wait", &self.queue_wait));
        for (name, l) in &self.by_report {
            out.push_str(&row(&format!("  {name}"), l));
        }
        out.push_str(&format!(
            "  queries {} ({:.1}/s), errors {}\n",
            self.queries, self.queries_per_sec, self.errors
        ));
        if let Some(e) = &self.first_error {
            out.push_str(&format!("  first error: {e}\n"));
        }
        out.push_str(&format!(
            "  replay: {} events in {:.1} s ({:.0} events/s){}; live lag p99 {} ms, max {} ms\n",
            self.events_applied,
            self.replay_secs,
            self.events_per_sec,
            if self.replay_finished { "" } else { ", stopped early" },
            self.live_lag_p99_ms,
            self.max_live_lag_ms
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_are_nearest_rank() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let l = Latencies::of(&ms);
        assert_eq!(
            (l.n, l.p50_ms, l.p95_ms, l.p99_ms, l.max_ms),
            (100, 50.0, 95.0, 99.0, 100.0)
        );
        assert_eq!(Latencies::of(&[]), Latencies::default());
        assert_eq!(Latencies::of(&[Duration::from_millis(7)]).p99_ms, 7.0);
    }
}
