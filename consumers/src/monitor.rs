//! The lag monitor: what an SRE's lag dashboard shows, gathered in one place and kept
//! for the last few minutes.
//!
//! Every tick it samples each application's shards ([`LagProbe::samples`]: checkpoint,
//! time lag, owner, lease counter), judges each shard over its sliding window
//! ([`crate::status`]), and, where it has them, adds the process's own metrics
//! (MillisBehindLatest, events/s, end-to-end latency quantiles, from
//! [`Metrics::snapshot`]) and the parking lot's count and oldest age. The result is one
//! [`LagReport`]: the dashboard's `/v1/lag`, `cafe lag --watch`'s table. The same
//! figures come from one computation, so the page and the terminal cannot disagree.
//!
//! One look costs, per application, a Query of the lease table and per held shard a
//! GetShardIterator and a two-record GetRecords; the parking lot is read less often.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::lag::LagProbe;
use crate::metrics::{LatencyCounts, Metrics, Snapshot};
use crate::parking::DynamoParkingLot;
use crate::status::{Rules, Sample, Status, roll_up};

/// How the monitor looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorConfig {
    /// Time between looks.
    pub every: Duration,
    /// The status rules (their times also set how long each shard's window is kept).
    pub rules: Rules,
    /// How much history the charts get.
    pub history: Duration,
    /// Time between reads of the parking lot.
    pub parked_every: Duration,
    /// Rates and latency quantiles are over this much of the recent past.
    pub recent: Duration,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            every: Duration::from_secs(1),
            rules: Rules::default(),
            history: Duration::from_secs(10 * 60),
            parked_every: Duration::from_secs(10),
            recent: Duration::from_secs(10),
        }
    }
}

/// One shard of one application, now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShardReport {
    /// The shard.
    pub shard: String,
    /// Its status over the window.
    pub status: Status,
    /// The age of the oldest event its checkpoint has not passed (zero: nothing waits).
    pub lag_ms: u64,
    /// MillisBehindLatest of the owner's last read (when the owner is this process).
    pub millis_behind_latest: Option<i64>,
    /// Events applied per second, recently (when the owner is this process).
    pub events_per_s: Option<f64>,
    /// Who holds the lease.
    pub owner: Option<String>,
    /// Since when the lease counter stands still, in ms: the heartbeat's age.
    pub heartbeat_age_ms: u64,
    /// Where the checkpoint stands.
    pub checkpoint: String,
}

/// One application (a read model's projector, the payment-requests consumer), now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplicationReport {
    /// The application.
    pub application: String,
    /// Its worst shard's status.
    pub status: Status,
    /// The largest shard lag now.
    pub lag_ms: u64,
    /// All shards' lags summed: the work waiting, in shard-milliseconds.
    pub total_lag_ms: u64,
    /// Events applied per second, recently (when its workers run in this process).
    pub events_per_s: Option<f64>,
    /// End-to-end latency (applied time minus occurred_at), recently: median.
    pub end_to_end_p50_ms: Option<f64>,
    /// The same, 99th percentile.
    pub end_to_end_p99_ms: Option<f64>,
    /// Records in the parking lot (when it is read).
    pub parked: Option<u64>,
    /// Age of the oldest parked record's event, in seconds.
    pub parked_oldest_age_s: Option<f64>,
    /// Its shards.
    pub shards: Vec<ShardReport>,
}

/// Columns of the charts: one time axis, one series per key (an application, or
/// `application/shard`), `None` where a series had no value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Unix seconds of each look.
    pub t: Vec<f64>,
    /// Lag in seconds per application and per application/shard.
    pub lag_s: BTreeMap<String, Vec<Option<f64>>>,
    /// Events/s per application.
    pub events_per_s: BTreeMap<String, Vec<Option<f64>>>,
}

impl History {
    fn push(&mut self, t: f64, lag: &[(String, f64)], rates: &[(String, Option<f64>)], keep: Duration) {
        let n = self.t.len();
        self.t.push(t);
        for (key, v) in lag {
            self.lag_s.entry(key.clone()).or_insert_with(|| vec![None; n]);
            if let Some(series) = self.lag_s.get_mut(key) {
                series.push(Some(*v));
            }
        }
        for (key, v) in rates {
            self.events_per_s.entry(key.clone()).or_insert_with(|| vec![None; n]);
            if let Some(series) = self.events_per_s.get_mut(key) {
                series.push(*v);
            }
        }
        // Series without a value this time get a gap.
        for series in self.lag_s.values_mut().chain(self.events_per_s.values_mut()) {
            series.resize(n + 1, None);
        }
        let cutoff = t - keep.as_secs_f64();
        let drop = self.t.iter().take_while(|x| **x < cutoff).count();
        if drop > 0 {
            self.t.drain(..drop);
            for series in self.lag_s.values_mut().chain(self.events_per_s.values_mut()) {
                series.drain(..drop.min(series.len()));
            }
            self.lag_s.retain(|_, s| s.iter().any(Option::is_some));
            self.events_per_s.retain(|_, s| s.iter().any(Option::is_some));
        }
    }
}

/// Everything the dashboard shows, as of the last look.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LagReport {
    /// When the last look was taken (None before the first).
    pub at: Option<DateTime<Utc>>,
    /// Time between looks, in ms.
    pub every_ms: u64,
    /// Per application, in the order watched.
    pub applications: Vec<ApplicationReport>,
    /// The charts' data.
    pub history: History,
    /// Why the last look failed, if it did (the report keeps the look before).
    pub error: Option<String>,
}

/// A handle to the monitor's latest report; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct LagView(Arc<RwLock<LagReport>>);

impl LagView {
    /// The latest report.
    pub fn report(&self) -> LagReport {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut LagReport)) {
        f(&mut self.0.write().unwrap_or_else(|p| p.into_inner()));
    }
}

/// The monitor; see the module docs.
#[derive(Debug)]
pub struct LagMonitor {
    probe: LagProbe,
    cfg: MonitorConfig,
    parking: Option<DynamoParkingLot>,
    metrics: Option<Metrics>,
    /// Per (application, shard): its samples, oldest first.
    windows: BTreeMap<(String, String), VecDeque<Sample>>,
    /// Per (application, shard): the lease counter and since when it has that value.
    heartbeats: BTreeMap<(String, String), (u64, DateTime<Utc>)>,
    /// Per application: parked count and oldest age, and when it was read.
    parked: BTreeMap<String, (u64, Option<f64>)>,
    parked_read: Option<DateTime<Utc>>,
    /// Readings of the process's metrics, oldest first, over `recent`.
    readings: VecDeque<(DateTime<Utc>, Snapshot)>,
    view: LagView,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn checkpoint_text(c: &crate::lease::Checkpoint) -> String {
    use crate::lease::Checkpoint;
    match c {
        Checkpoint::TrimHorizon => "TRIM_HORIZON".into(),
        Checkpoint::Latest => "LATEST".into(),
        Checkpoint::AtTimestamp => "AT_TIMESTAMP".into(),
        Checkpoint::ShardEnd => "SHARD_END".into(),
        Checkpoint::Sequence { sequence, sub } if *sub == 0 => sequence.clone(),
        Checkpoint::Sequence { sequence, sub } => format!("{sequence}/{sub}"),
    }
}

impl LagMonitor {
    /// A monitor of the applications `probe` names.
    pub fn new(probe: LagProbe, cfg: MonitorConfig) -> LagMonitor {
        let view = LagView::default();
        view.update(|r| r.every_ms = millis(cfg.every));
        LagMonitor {
            probe,
            cfg,
            parking: None,
            metrics: None,
            windows: BTreeMap::new(),
            heartbeats: BTreeMap::new(),
            parked: BTreeMap::new(),
            parked_read: None,
            readings: VecDeque::new(),
            view,
        }
    }

    /// Also reports each application's parked records.
    pub fn with_parking(mut self, parking: DynamoParkingLot) -> LagMonitor {
        self.parking = Some(parking);
        self
    }

    /// Also reports what this process's workers measure (MillisBehindLatest, events/s,
    /// end-to-end latency).
    pub fn with_metrics(mut self, metrics: Metrics) -> LagMonitor {
        self.metrics = Some(metrics);
        self
    }

    /// The handle the HTTP endpoint and the terminal read.
    pub fn view(&self) -> LagView {
        self.view.clone()
    }

    /// Looks every `every` until `shutdown`.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.look().await;
        }
    }

    /// One look; the report is updated (or, when the look failed, its error is).
    pub async fn look(&mut self) {
        let samples = match self.probe.samples().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "lag monitor: could not sample");
                self.view.update(|r| r.error = Some(e.to_string()));
                return;
            }
        };
        let now = samples
            .iter()
            .flat_map(|(_, shards)| shards.iter().map(|(_, s)| s.at))
            .next()
            .unwrap_or_else(Utc::now);
        self.read_parked(now).await;
        let recent = self.recent_metrics(now);
        let keep = self.cfg.rules.stall_after.max(self.cfg.rules.dead_after) + 2 * self.cfg.every;
        let mut seen = Vec::new();
        let mut apps = Vec::with_capacity(samples.len());
        for (app, shards) in samples {
            let mut shard_reports = Vec::with_capacity(shards.len());
            for (shard, sample) in shards {
                let key = (app.clone(), shard.clone());
                let beat = self.heartbeats.entry(key.clone()).or_insert((sample.heartbeat, now));
                if beat.0 != sample.heartbeat {
                    *beat = (sample.heartbeat, now);
                }
                let heartbeat_age_ms = millis((now - beat.1).to_std().unwrap_or_default());
                let window = self.windows.entry(key.clone()).or_default();
                window.push_back(sample.clone());
                while window
                    .front()
                    .is_some_and(|s| (now - s.at).to_std().unwrap_or_default() > keep)
                {
                    window.pop_front();
                }
                let own = recent.shard(&app, &shard);
                shard_reports.push(ShardReport {
                    shard: shard.clone(),
                    // Judged with the others by the roll-up below.
                    status: Status::Ok,
                    lag_ms: millis(sample.lag),
                    millis_behind_latest: own.and_then(|s| s.0),
                    events_per_s: own.and_then(|s| s.1),
                    owner: sample.owner.clone(),
                    heartbeat_age_ms,
                    checkpoint: checkpoint_text(&sample.checkpoint),
                });
                seen.push(key);
            }
            let windows: Vec<(String, Vec<Sample>)> = shard_reports
                .iter()
                .map(|s| {
                    let w = self
                        .windows
                        .get(&(app.clone(), s.shard.clone()))
                        .map(|w| w.iter().cloned().collect())
                        .unwrap_or_default();
                    (s.shard.clone(), w)
                })
                .collect();
            let rollup = roll_up(windows.iter().map(|(k, v)| (k.as_str(), v.as_slice())), &self.cfg.rules);
            for (report, (_, status)) in shard_reports.iter_mut().zip(&rollup.shards) {
                report.status = *status;
            }
            let (parked, parked_oldest_age_s) = match self.parked.get(&app) {
                Some((n, age)) => (Some(*n), *age),
                None => (None, None),
            };
            let latency = recent.latency(&app);
            apps.push(ApplicationReport {
                status: rollup.status,
                lag_ms: millis(rollup.max_lag),
                total_lag_ms: millis(rollup.total_lag),
                events_per_s: recent.application_rate(&app),
                end_to_end_p50_ms: latency.as_ref().and_then(|l| l.quantile(0.5)).map(|s| s * 1e3),
                end_to_end_p99_ms: latency.as_ref().and_then(|l| l.quantile(0.99)).map(|s| s * 1e3),
                parked,
                parked_oldest_age_s,
                shards: shard_reports,
                application: app,
            });
        }
        // Shards no longer leased (a resharding's parents deleted) drop out.
        self.windows.retain(|k, _| seen.contains(k));
        self.heartbeats.retain(|k, _| seen.contains(k));
        let t = now.timestamp_millis() as f64 / 1e3;
        let mut lag = Vec::new();
        let mut rates = Vec::new();
        for a in &apps {
            lag.push((a.application.clone(), a.lag_ms as f64 / 1e3));
            for s in &a.shards {
                lag.push((format!("{}/{}", a.application, s.shard), s.lag_ms as f64 / 1e3));
            }
            rates.push((a.application.clone(), a.events_per_s));
        }
        let history_keep = self.cfg.history;
        self.view.update(|r| {
            r.at = Some(now);
            r.applications = apps;
            r.error = None;
            r.history.push(t, &lag, &rates, history_keep);
        });
    }

    async fn read_parked(&mut self, now: DateTime<Utc>) {
        let Some(parking) = &self.parking else { return };
        let due = self
            .parked_read
            .is_none_or(|at| (now - at).to_std().unwrap_or_default() >= self.cfg.parked_every);
        if !due {
            return;
        }
        self.parked_read = Some(now);
        for app in &self.probe.applications {
            match parking.list(app).await {
                Ok(records) => {
                    let oldest = records
                        .iter()
                        .filter_map(|p| cafe_events::envelope::occurred_at_of(&p.record.data))
                        .min()
                        .map(|at| (now - at).num_milliseconds().max(0) as f64 / 1e3);
                    self.parked.insert(app.clone(), (records.len() as u64, oldest));
                }
                Err(e) => tracing::warn!(application = %app, error = %e, "lag monitor: could not read the parking lot"),
            }
        }
    }

    /// The process's metrics now against a reading from about `recent` ago.
    fn recent_metrics(&mut self, now: DateTime<Utc>) -> Recent {
        let Some(metrics) = &self.metrics else {
            return Recent::default();
        };
        let snapshot = metrics.snapshot();
        let recent = self.cfg.recent;
        while self.readings.len() > 1
            && self
                .readings
                .get(1)
                .is_some_and(|(at, _)| (now - *at).to_std().unwrap_or_default() >= recent)
        {
            self.readings.pop_front();
        }
        let out = match self.readings.front() {
            Some((then, before)) => Recent {
                secs: (now - *then).num_milliseconds() as f64 / 1e3,
                now: Some(snapshot.clone()),
                before: Some(before.clone()),
            },
            None => Recent {
                secs: 0.0,
                now: Some(snapshot.clone()),
                before: None,
            },
        };
        self.readings.push_back((now, snapshot));
        out
    }
}

/// The process's metrics over the recent past.
#[derive(Debug, Default)]
struct Recent {
    secs: f64,
    now: Option<Snapshot>,
    before: Option<Snapshot>,
}

impl Recent {
    /// (MillisBehindLatest, events/s) of a shard this process reads.
    fn shard(&self, app: &str, shard: &str) -> Option<(Option<i64>, Option<f64>)> {
        let now = self
            .now
            .as_ref()?
            .shards
            .iter()
            .find(|s| s.application == app && s.shard == shard)?;
        let rate = self.before.as_ref().and_then(|b| {
            let before = b.shards.iter().find(|s| s.application == app && s.shard == shard);
            (self.secs > 0.0).then(|| (now.records - before.map_or(0, |s| s.records)) as f64 / self.secs)
        });
        Some((now.millis_behind_latest, rate))
    }

    fn application_rate(&self, app: &str) -> Option<f64> {
        let (now, before) = (self.now.as_ref()?, self.before.as_ref()?);
        if self.secs <= 0.0 {
            return None;
        }
        let sum = |s: &Snapshot| -> u64 {
            s.shards
                .iter()
                .filter(|x| x.application == app)
                .map(|x| x.records)
                .sum()
        };
        let (n, b) = (sum(now), sum(before));
        now.shards
            .iter()
            .any(|x| x.application == app)
            .then(|| n.saturating_sub(b) as f64 / self.secs)
    }

    fn latency(&self, app: &str) -> Option<LatencyCounts> {
        let now = self.now.as_ref()?.end_to_end.iter().find(|(a, _)| a == app)?.1.clone();
        Some(
            match self
                .before
                .as_ref()
                .and_then(|b| b.end_to_end.iter().find(|(a, _)| a == app))
            {
                Some((_, before)) => now.since(before),
                None => now,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn history_keeps_columns_aligned_gaps_as_none_and_drops_what_is_too_old() {
        let mut h = History::default();
        let keep = Duration::from_secs(10);
        h.push(100.0, &[("a".into(), 1.0)], &[("a".into(), Some(5.0))], keep);
        h.push(
            101.0,
            &[("a".into(), 2.0), ("b".into(), 3.0)],
            &[("a".into(), None)],
            keep,
        );
        h.push(102.0, &[("b".into(), 4.0)], &[], keep);
        assert_eq!(h.t, vec![100.0, 101.0, 102.0]);
        assert_eq!(h.lag_s["a"], vec![Some(1.0), Some(2.0), None]);
        assert_eq!(h.lag_s["b"], vec![None, Some(3.0), Some(4.0)]);
        assert_eq!(h.events_per_s["a"], vec![Some(5.0), None, None]);
        // 112 keeps only 102 and later: "a" has no value left and goes.
        h.push(112.0, &[("b".into(), 0.0)], &[], keep);
        assert_eq!(h.t, vec![102.0, 112.0]);
        assert!(!h.lag_s.contains_key("a"));
        assert!(!h.events_per_s.contains_key("a"));
        assert_eq!(h.lag_s["b"], vec![Some(4.0), Some(0.0)]);
    }
}
