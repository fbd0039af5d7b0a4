//! The SLO governor: a replay shares its stores with the live projectors, so it replays
//! as fast as it can while live projection lag and the stores' latency stay within
//! their objectives.
//!
//! Every second it reads the live applications' lag ([`cafe_consumers::lag`]) and the
//! p99 of its own batch writes over the last second, and sets its rate: halved when the
//! lag passes three quarters of its objective or the store p99 passes its objective,
//! raised by a quarter (and 50 events/s) when the lag is under half the objective, held
//! in between; never above `--max-rate` nor below a floor. The margins are there
//! because the reading is coarse and late: the live projectors checkpoint about once a
//! second, so a healthy projector already reads up to a second or so behind. Without
//! the governor the same readings are still taken and reported, so two runs compare
//! side by side.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cafe_consumers::lag::p99;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// The objectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slo {
    /// Live projection lag at most this.
    pub live_lag: Duration,
    /// A store write's p99 at most this.
    pub store_p99: Duration,
}

impl Default for Slo {
    /// 2 s of live lag and a 1 s store p99: `cafe replay rebuild`'s defaults.
    fn default() -> Self {
        Slo {
            live_lag: Duration::from_secs(2),
            store_p99: Duration::from_secs(1),
        }
    }
}

/// The rate a governed replay starts at and never goes below (events/s).
const START: f64 = 200.0;
const FLOOR: f64 = 20.0;

/// Why the rate is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Live lag passed three quarters of its objective.
    LiveLag,
    /// The store p99 passed its objective.
    StoreLatency,
    /// Still ramping up from the last cut.
    Ramp,
    /// `--max-rate`.
    MaxRate,
}

struct State {
    rate: f64,
    reason: Reason,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    writes: Vec<Duration>,
    lags: Vec<Duration>,
    store_p99s: Vec<Duration>,
    waited: BTreeMap<Reason, f64>,
    peak_rate: f64,
    /// Events let through since the last tick, and when that was.
    taken: u64,
    since: Instant,
}

/// What a replay's pacing did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Whether the governor set the rate (else only `--max-rate` did).
    pub governed: bool,
    /// Live lag samples taken (one a second).
    pub samples: usize,
    /// Their p99 and maximum.
    pub live_lag_p99: Duration,
    /// The maximum.
    pub live_lag_max: Duration,
    /// The worst one-second p99 of the replay's store writes.
    pub store_p99_max: Duration,
    /// The highest rate the governor allowed (events/s).
    pub peak_rate: f64,
    /// Seconds spent waiting for the pace, by why the pace was what it was.
    pub waited: BTreeMap<Reason, f64>,
}

/// Paces a replay.
pub struct Governor {
    slo: Option<Slo>,
    max_rate: Option<u32>,
    burst: u32,
    state: Mutex<State>,
}

impl std::fmt::Debug for Governor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Governor")
            .field("slo", &self.slo)
            .field("max_rate", &self.max_rate)
            .finish_non_exhaustive()
    }
}

fn limiter(rate: f64, burst: u32) -> Option<Arc<DefaultDirectRateLimiter>> {
    let per_second = NonZeroU32::new(rate.round().clamp(1.0, f64::from(u32::MAX)) as u32)?;
    let burst = NonZeroU32::new(burst.min(per_second.get()).max(1))?;
    Some(Arc::new(RateLimiter::direct(
        Quota::per_second(per_second).allow_burst(burst),
    )))
}

impl Governor {
    /// Governed by `slo` when given, capped by `max_rate`; batches of up to `burst`.
    pub fn new(slo: Option<Slo>, max_rate: Option<u32>, burst: u32) -> Governor {
        let cap = max_rate.map_or(f64::INFINITY, f64::from);
        let (rate, reason) = match slo {
            Some(_) => (START.min(cap), Reason::Ramp),
            None => (cap, Reason::MaxRate),
        };
        Governor {
            slo,
            max_rate,
            burst: burst.max(1),
            state: Mutex::new(State {
                rate,
                reason,
                limiter: rate.is_finite().then(|| limiter(rate, burst)).flatten(),
                writes: Vec::new(),
                lags: Vec::new(),
                store_p99s: Vec::new(),
                waited: BTreeMap::new(),
                peak_rate: if rate.is_finite() { rate } else { 0.0 },
                taken: 0,
                since: Instant::now(),
            }),
        }
    }

    /// Waits until `n` events may go; answers the seconds waited.
    pub async fn acquire(&self, n: usize) -> f64 {
        let (limiter, reason) = match self.state.lock() {
            Ok(mut s) => {
                s.taken += n as u64;
                (s.limiter.clone(), s.reason)
            }
            Err(_) => return 0.0,
        };
        let Some(limiter) = limiter else { return 0.0 };
        let started = Instant::now();
        let mut left = u32::try_from(n).unwrap_or(u32::MAX);
        while left > 0 {
            let chunk = left.min(self.burst);
            if let Some(c) = NonZeroU32::new(chunk)
                && limiter.until_n_ready(c).await.is_err()
            {
                // More than the limiter's burst (the rate fell under the batch size):
                // one event at a time.
                let _ = limiter.until_ready().await;
                left -= 1;
                continue;
            }
            left -= chunk;
        }
        let waited = started.elapsed().as_secs_f64();
        if let Ok(mut s) = self.state.lock() {
            *s.waited.entry(reason).or_default() += waited;
        }
        waited
    }

    /// How long one batch write to a store took.
    pub fn record_write(&self, took: Duration) {
        if let Ok(mut s) = self.state.lock() {
            s.writes.push(took);
        }
    }

    /// One second's readings: the live lag (the worst shard of any live application;
    /// `None` when it could not be read, which holds the rate where it is). Sets the
    /// next second's rate.
    pub fn tick(&self, live_lag: Option<Duration>) {
        let Ok(mut s) = self.state.lock() else { return };
        let elapsed = s.since.elapsed().as_secs_f64().max(0.001);
        let achieved = s.taken as f64 / elapsed;
        s.taken = 0;
        s.since = Instant::now();
        self.set_rate(&mut s, live_lag, achieved);
    }

    /// [`tick`](Self::tick) with the rate that went through said rather than counted.
    fn set_rate(&self, s: &mut State, live_lag: Option<Duration>, achieved: f64) {
        let store_p99 = p99(&s.writes);
        s.writes.clear();
        s.store_p99s.push(store_p99);
        let Some(live_lag) = live_lag else { return };
        s.lags.push(live_lag);
        let Some(slo) = self.slo else { return };
        let cap = self.max_rate.map_or(f64::INFINITY, f64::from);
        // A cut halves what actually went through, not a rate the replay never reached
        // (the stores, not the pace, may have been the bound): a cut must bite at once.
        // For the same reason a raise goes at most to twice what went through.
        let cut = (s.rate.min(achieved.max(FLOOR)) * 0.5).max(FLOOR);
        let (rate, reason) = if live_lag > slo.live_lag * 3 / 4 {
            (cut, Reason::LiveLag)
        } else if store_p99 > slo.store_p99 {
            (cut, Reason::StoreLatency)
        } else if live_lag > slo.live_lag / 2 {
            (s.rate, s.reason)
        } else {
            let next = (s.rate * 1.25 + 50.0).min((achieved * 2.0).max(START));
            if next >= cap {
                (cap, Reason::MaxRate)
            } else {
                (next, Reason::Ramp)
            }
        };
        s.rate = rate;
        s.reason = reason;
        s.peak_rate = s.peak_rate.max(rate);
        s.limiter = if rate.is_finite() {
            limiter(rate, self.burst)
        } else {
            None
        };
    }

    /// The current rate (events/s; infinite when unpaced).
    pub fn rate(&self) -> f64 {
        self.state.lock().map(|s| s.rate).unwrap_or(f64::NAN)
    }

    /// What pacing did so far.
    pub fn report(&self) -> Report {
        let Ok(s) = self.state.lock() else {
            return Report {
                governed: self.slo.is_some(),
                samples: 0,
                live_lag_p99: Duration::ZERO,
                live_lag_max: Duration::ZERO,
                store_p99_max: Duration::ZERO,
                peak_rate: 0.0,
                waited: BTreeMap::new(),
            };
        };
        Report {
            governed: self.slo.is_some(),
            samples: s.lags.len(),
            live_lag_p99: p99(&s.lags),
            live_lag_max: s.lags.iter().max().copied().unwrap_or_default(),
            store_p99_max: s.store_p99s.iter().max().copied().unwrap_or_default(),
            peak_rate: s.peak_rate,
            waited: s.waited.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Governor {
        /// One tick in which `achieved` events/s went through.
        fn tick_at(&self, live_lag: Option<Duration>, achieved: f64) {
            let mut s = self.state.lock().unwrap();
            self.set_rate(&mut s, live_lag, achieved);
        }

        /// One tick in which the replay kept to its pace.
        fn tick_kept(&self, live_lag: Option<Duration>) {
            let rate = self.rate();
            self.tick_at(live_lag, if rate.is_finite() { rate } else { 1e9 });
        }
    }

    const SLO: Slo = Slo {
        live_lag: Duration::from_secs(2),
        store_p99: Duration::from_millis(250),
    };

    #[test]
    fn lag_near_the_objective_halves_the_rate_and_calm_raises_it_to_the_cap() {
        let g = Governor::new(Some(SLO), Some(1000), 100);
        assert_eq!(g.rate(), 200.0);
        g.tick_kept(Some(Duration::from_millis(200)));
        assert_eq!(g.rate(), 300.0);
        g.tick_kept(Some(Duration::from_millis(1200)));
        assert_eq!(g.rate(), 300.0, "between half and three quarters: held");
        g.tick_kept(Some(Duration::from_millis(1600)));
        assert_eq!(g.rate(), 150.0);
        for _ in 0..20 {
            g.tick_kept(Some(Duration::ZERO));
        }
        assert_eq!(g.rate(), 1000.0, "capped by --max-rate");
        for _ in 0..20 {
            g.tick_kept(Some(Duration::from_secs(5)));
        }
        assert_eq!(g.rate(), FLOOR, "never below the floor");
        let r = g.report();
        assert_eq!(r.samples, 43);
        assert_eq!(r.live_lag_max, Duration::from_secs(5));
        assert_eq!(r.peak_rate, 1000.0);
    }

    #[test]
    fn a_cut_halves_what_went_through_and_a_raise_stays_near_it() {
        let g = Governor::new(Some(SLO), None, 100);
        for _ in 0..30 {
            g.tick_kept(Some(Duration::ZERO));
        }
        let paced = g.rate();
        assert!(paced > 10_000.0, "{paced}");
        // The stores only took 1,000/s of that pace: a cut goes to 500, not paced/2.
        g.tick_at(Some(Duration::from_secs(3)), 1000.0);
        assert_eq!(g.rate(), 500.0);
        // Calm again, but only 200/s went through: the pace goes to 400, not 675.
        g.tick_at(Some(Duration::ZERO), 200.0);
        assert_eq!(g.rate(), 400.0);
    }

    #[test]
    fn a_slow_store_halves_the_rate_too() {
        let g = Governor::new(Some(SLO), None, 100);
        for _ in 0..10 {
            g.record_write(Duration::from_millis(400));
        }
        g.tick_kept(Some(Duration::ZERO));
        assert_eq!(g.rate(), 100.0);
        assert_eq!(g.report().store_p99_max, Duration::from_millis(400));
        // An unreadable lag holds the rate.
        g.tick_kept(None);
        assert_eq!(g.rate(), 100.0);
    }

    #[test]
    fn ungoverned_it_only_measures() {
        let g = Governor::new(None, None, 100);
        assert!(g.rate().is_infinite());
        g.tick_kept(Some(Duration::from_secs(9)));
        g.tick_kept(None);
        assert!(g.rate().is_infinite());
        assert_eq!(g.report().live_lag_max, Duration::from_secs(9));
    }
}
