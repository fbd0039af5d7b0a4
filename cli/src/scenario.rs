//! `cafe scenario NAME`: the seed's stress stories as load profiles against the local
//! pipeline, each printing its figures and ending with the invariant checker, so a
//! scenario that went fast but lost something fails.
//!
//! Every scenario runs the same frame as a chaos experiment: the application
//! in-process (API, relay, projectors, saga), the story's commands through the HTTP
//! API on an open-loop schedule (a fixed arrival rate, so an API that cannot keep up
//! shows as latency and refusals, not as a load generator that slowed down), then the
//! pipeline left to go quiet and [`crate::invariants`] checked.
//!
//! End-to-end latency per read model is each event's `occurred_at` to its projector's
//! store write, from the workers' own histogram
//! ([`cafe_consumers::metrics::END_TO_END_SECONDS`]), over the scenario's events only.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cafe_consumers::metrics::{LatencyCounts, Metrics};
use cafe_localstack::supervisor::Stack;
use cafe_producers::auth::{Caller, Role};
use cafe_projections::catalog::{Namespace, ReadModel};
use cafe_replay::Params;
use cafe_replay::storm::Storm;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

mod avalanche;

use crate::invariants::{self, Check, Expected, Verdicts};
use crate::load::{self, Command, LoadReport, Profile};
use crate::{Application, Settings};

/// The stories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// 7:45 AM: orders ramp from `--base` to `--peak` per second over `--ramp` and
    /// hold the peak for `--hold` (the seed's 5M orders a day at 10× is 580/s).
    MorningRush,
    /// Every store restocks its SKUs at once: `--stores` × `--skus` restock commands
    /// at `--rate` per second.
    RestockStorm,
    /// The hourly loyalty recalculation: points earned by `--customers` customers at
    /// `--rate` per second, some of them crossing a tier.
    LoyaltyBatch,
    /// Marketing publishes `--items` menu items at `--rate` per second while
    /// `--readers` clients read the category listings: the cache's hit rate, the reads
    /// that reached DocumentDB, and no stale listing once the changes are projected.
    MenuSyncStorm,
    /// Black Friday: `--orders` at `--rate` per second while the payment function has
    /// no instance, then `--concurrency` instances start at once, all cold, and work
    /// the queue off: their init durations, invocation durations, message ages and
    /// failures.
    ColdStartAvalanche,
    /// Analysts' reports on the warehouse while a replay rebuilds it: the replay's
    /// query storm (`cafe replay storm`) with `--clients`, after an order load that
    /// gives it a history.
    QueryStorm,
}

impl Scenario {
    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::MorningRush => "morning-rush",
            Scenario::RestockStorm => "restock-storm",
            Scenario::LoyaltyBatch => "loyalty-batch",
            Scenario::MenuSyncStorm => "menu-sync-storm",
            Scenario::ColdStartAvalanche => "cold-start-avalanche",
            Scenario::QueryStorm => "query-storm",
        }
    }
}

/// The stories' sizes, as `cafe scenario` takes them (its flags and their defaults).
#[derive(Debug, Clone, clap::Args)]
pub struct ScenarioOptions {
    /// morning-rush: orders per second before the rush.
    #[arg(long, default_value_t = 58, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub base: u32,
    /// morning-rush: orders per second at the peak (the seed's 5M orders a day at 10×).
    #[arg(long, default_value_t = 580, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub peak: u32,
    /// morning-rush: how long the rate climbs.
    #[arg(long, default_value = "30s", value_parser = crate::positive_duration)]
    pub ramp: Duration,
    /// morning-rush: how long the peak lasts.
    #[arg(long, default_value = "60s", value_parser = crate::positive_duration)]
    pub hold: Duration,
    /// restock-storm: stores restocking at once.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub stores: u32,
    /// restock-storm: SKUs each store restocks.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub skus: u32,
    /// loyalty-batch: customers whose points are recalculated.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub customers: u32,
    /// menu-sync-storm: menu items published.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub items: u32,
    /// menu-sync-storm: clients reading the menu listings meanwhile.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub readers: u32,
    /// cold-start-avalanche: orders whose payments wait for the function.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub orders: u32,
    /// cold-start-avalanche: function instances started at once (AWS's concurrency).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub concurrency: u32,
    /// Commands per second (restock-storm, loyalty-batch, menu-sync-storm, the
    /// burst of cold-start-avalanche), or orders per second of the history load
    /// (query-storm).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,
    /// query-storm: how long the history load runs.
    #[arg(long, default_value = "10s", value_parser = crate::positive_duration)]
    pub history: Duration,
    /// query-storm: concurrent analysts.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub clients: u32,
    /// Requests in flight at most.
    #[arg(skip = 512_usize)]
    pub in_flight: usize,
    /// Longest wait for the pipeline to go quiet afterwards.
    #[arg(skip = Duration::from_secs(180))]
    pub patience: Duration,
}

/// One figure of a scenario's table.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// What.
    pub name: String,
    /// Its value, with its unit.
    pub value: String,
}

/// What a scenario measured and found.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// Which.
    pub scenario: Scenario,
    /// The figures, in the order printed.
    pub figures: Vec<Figure>,
    /// The invariants afterwards.
    pub verdicts: Verdicts,
}

impl ScenarioReport {
    /// Whether every invariant holds.
    pub fn passed(&self) -> bool {
        self.verdicts.hold()
    }
}

/// Figures, in order.
#[derive(Default)]
struct Table(Vec<Figure>);

impl Table {
    fn add(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.0.push(Figure {
            name: name.into(),
            value: value.into(),
        });
    }

    /// Latency of a load's answered requests.
    fn api(&mut self, what: &str, r: &LoadReport) {
        self.add(
            format!("API latency p50 / p99 ({what})"),
            format!("{} / {}", ms(r.quantile(0.5)), ms(r.quantile(0.99))),
        );
    }

    /// Sent, accepted and refused (503s apart: the API's own backpressure).
    fn outcome(&mut self, what: &str, r: &LoadReport) {
        let busy = r.refused.iter().filter(|s| **s == 503).count();
        self.add(
            format!("{what} sent / accepted / 503 / other refused"),
            format!(
                "{} / {} / {busy} / {}",
                r.sent,
                r.accepted.len(),
                r.refused.len() - busy
            ),
        );
    }

    /// End to end per application, over what was added since `before`.
    fn end_to_end(&mut self, metrics: &Metrics, before: &BTreeMap<String, LatencyCounts>) {
        for (app, now) in metrics.snapshot().end_to_end {
            let added = before.get(&app).map_or(now.clone(), |b| now.since(b));
            if added.count() == 0 {
                continue;
            }
            let q = |p: f64| {
                added
                    .quantile(p)
                    .map_or("-".to_owned(), |s| format!("{:.0} ms", s * 1000.0))
            };
            self.add(
                format!("end to end p50 / p99: {app}"),
                format!("{} / {} ({} events)", q(0.5), q(0.99), added.count()),
            );
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn per_second(n: usize, d: Duration) -> String {
    format!("{:.0}/s", n as f64 / d.as_secs_f64().max(1e-3))
}

/// Runs one scenario on `stack` (which must be up).
pub async fn run(stack: &Stack, scenario: Scenario, opts: &ScenarioOptions) -> Result<ScenarioReport> {
    let cfg = stack.config().clone();
    let mut settings = Settings::local(cfg.clone());
    // The lag monitor is not part of what is measured; its reads would only add load.
    settings.monitor = None;
    settings.worker_id = format!("scenario-{}-{}", scenario.name(), std::process::id());
    // The avalanche starts the function's instances itself, when the backlog is there.
    settings.saga = scenario != Scenario::ColdStartAvalanche;
    let running = Application::build(settings).await?.start().await?;
    let clients = running.clients().clone();
    let before = Expected::before(&cfg, &clients).await?;
    let base = format!("http://{}", running.addr());
    let http = load::client(running.config())?;
    load::seed_menu(&http, &base).await.context("publishing the menu")?;
    let metrics = running.consumer_metrics().clone();
    let e2e_before: BTreeMap<String, LatencyCounts> = metrics.snapshot().end_to_end.into_iter().collect();
    let totals = running.service().publisher().totals();
    let (events_before, records_before) = (
        totals.events.load(std::sync::atomic::Ordering::Relaxed),
        totals.kinesis_records.load(std::sync::atomic::Ordering::Relaxed),
    );
    let run_tag = load::run_tag();
    let mut table = Table::default();
    // Checks of the story's own, added to the invariants' verdicts.
    let mut own: Vec<Check> = Vec::new();

    let caught_up_models: Vec<String> = match scenario {
        Scenario::MorningRush => {
            let ramp = load::commands(
                &http,
                &base,
                Profile::Ramp {
                    from: f64::from(opts.base),
                    to: f64::from(opts.peak),
                    over: opts.ramp,
                },
                opts.in_flight,
                None,
                |n| order(&run_tag, "r", n),
                tokio::time::sleep(opts.ramp),
            )
            .await;
            let peak = load::commands(
                &http,
                &base,
                Profile::Constant(f64::from(opts.peak)),
                opts.in_flight,
                None,
                |n| order(&run_tag, "p", n),
                tokio::time::sleep(opts.hold),
            )
            .await;
            table.add(
                "schedule",
                format!(
                    "{}/s to {}/s over {}, then {}/s for {}",
                    opts.base,
                    opts.peak,
                    humantime::format_duration(opts.ramp),
                    opts.peak,
                    humantime::format_duration(opts.hold)
                ),
            );
            table.outcome("orders (ramp)", &ramp);
            table.outcome("orders (peak)", &peak);
            table.add("accepted at the peak", per_second(peak.accepted.len(), peak.elapsed));
            table.api("ramp", &ramp);
            table.api("peak", &peak);
            crate::dashboard::applications()
        }
        Scenario::RestockStorm => {
            let total = u64::from(opts.stores) * u64::from(opts.skus);
            let skus = u64::from(opts.skus.max(1));
            let (report, took) = batch(&http, &base, opts, total, |n| {
                let (store, sku) = ((n - 1) / skus, (n - 1) % skus);
                Command {
                    id: format!("restock-{run_tag}-{n}"),
                    path: format!("/v1/stores/store-{store:05}/inventory/sku-{run_tag}-{sku:05}/restock"),
                    body: serde_json::json!({ "quantity": 10 + n % 90 }),
                }
            })
            .await;
            table.add(
                "storm",
                format!("{} stores × {} SKUs at {}/s", opts.stores, opts.skus, opts.rate),
            );
            table.outcome("restocks", &report);
            table.add("restocks accepted", per_second(report.accepted.len(), took));
            table.api("storm", &report);
            vec![ReadModel::Inventory.name().to_owned()]
        }
        Scenario::LoyaltyBatch => {
            let (report, took) = batch(&http, &base, opts, u64::from(opts.customers), |n| Command {
                id: format!("earn-{run_tag}-{n}"),
                path: format!("/v1/loyalty/lb-{run_tag}-{n}/earn"),
                // 100 to 790 points: about a third of the accounts reach gold.
                body: serde_json::json!({ "points": 100 + (n * 37) % 700 }),
            })
            .await;
            table.add("batch", format!("{} customers at {}/s", opts.customers, opts.rate));
            table.outcome("earn commands", &report);
            table.add("commands accepted", per_second(report.accepted.len(), took));
            table.api("batch", &report);
            vec![ReadModel::Orders.name().to_owned()]
        }
        Scenario::MenuSyncStorm => {
            // It waits for the pipeline to go quiet itself, before its freshness check,
            // and reports that wait.
            own.push(menu_sync_storm(&running, &http, &base, &run_tag, opts, &mut table).await?);
            Vec::new()
        }
        Scenario::ColdStartAvalanche => {
            own.push(avalanche::run(&running, &cfg, &http, &base, &run_tag, opts, &mut table).await?);
            Vec::new()
        }
        Scenario::QueryStorm => {
            let report = load::orders(
                &http,
                &base,
                opts.rate,
                opts.in_flight,
                tokio::time::sleep(opts.history),
            )
            .await;
            table.outcome("history orders", &report);
            running.quiet(opts.patience).await?;
            let replayer = crate::read_side::replayer(&cfg, &clients)?;
            let estimate = replayer.history().approximate_count().await;
            let params = Params::full_rebuild(&[ReadModel::Analytics]);
            let storm = Storm {
                clients: opts.clients as usize,
                slots: 5,
                keep: false,
            };
            let r = replayer
                .storm(storm, params, estimate, CancellationToken::new())
                .await
                .context("the query storm")?;
            table.add("analysts / warehouse slots", format!("{} / {}", r.clients, r.slots));
            table.add("queries answered / failed", format!("{} / {}", r.queries, r.errors));
            table.add(
                "query latency p50 / p99 / max",
                format!(
                    "{:.0} ms / {:.0} ms / {:.0} ms",
                    r.latency.p50_ms, r.latency.p99_ms, r.latency.max_ms
                ),
            );
            table.add("slot wait p99", format!("{:.0} ms", r.queue_wait.p99_ms));
            table.add(
                "replay",
                format!(
                    "{} events in {:.1} s ({:.0}/s), finished: {}",
                    r.events_applied, r.replay_secs, r.events_per_sec, r.replay_finished
                ),
            );
            table.add(
                "live projectors' lag p99 / max",
                format!("{} ms / {} ms", r.live_lag_p99_ms, r.max_live_lag_ms),
            );
            if r.errors > 0 {
                bail!("the query storm's queries failed: {:?}", r.first_error);
            }
            Vec::new()
        }
    };

    // From the last answer to the models the story writes being caught up.
    let load_ended = Instant::now();
    if !caught_up_models.is_empty() {
        let caught = at_the_tip(&cfg, &clients, &caught_up_models, opts.patience).await?;
        table.add(
            format!("caught up after the load ({})", caught_up_models.join(", ")),
            caught.map_or("not within the patience".to_owned(), |at| {
                format!("{:.1} s", at.saturating_duration_since(load_ended).as_secs_f64())
            }),
        );
    }
    let events = totals.events.load(std::sync::atomic::Ordering::Relaxed) - events_before;
    let records = totals.kinesis_records.load(std::sync::atomic::Ordering::Relaxed) - records_before;
    if events > 0 {
        table.add(
            "events published / Kinesis records (aggregated; one per event without)",
            format!(
                "{events} / {records} ({:.1} events per record)",
                events as f64 / records.max(1) as f64
            ),
        );
    }
    running.quiet(opts.patience).await?;
    table.end_to_end(&metrics, &e2e_before);
    if scenario == Scenario::LoyaltyBatch {
        let tiers = tiers(&cfg, &clients, &format!("lb-{run_tag}-")).await?;
        let counts: Vec<String> = tiers.iter().map(|(tier, n)| format!("{tier} {n}")).collect();
        table.add("accounts per tier in the read model", counts.join(", "));
    }
    let stopped = running.stop(Duration::from_secs(30)).await?;
    if !stopped.undone.is_empty() {
        bail!("the pipeline did not stop cleanly: {:?}", stopped.undone);
    }
    let mut verdicts = invariants::check(&cfg, &clients, &before).await?;
    verdicts.checks.extend(own);
    Ok(ScenarioReport {
        scenario,
        figures: table.0,
        verdicts,
    })
}

/// Categories the synced items spread over (each a listing the readers ask for).
const MENU_CATEGORIES: u64 = 10;

/// What one menu read saw: when (since the start), whether the cache answered, how long.
struct MenuRead {
    at: Duration,
    hit: bool,
    took: Duration,
}

/// The `n`-th item of a menu sync: its id, category and price.
fn synced_item(run: &str, n: u64) -> (String, String, i64) {
    (
        format!("ms-{run}-{n:05}"),
        format!("sync-{run}-{}", n % MENU_CATEGORIES),
        300 + (n % 400) as i64,
    )
}

/// Publishes `opts.items` menu items while `opts.readers` clients read the category
/// listings, then, once the pipeline is quiet (every change projected and the cached
/// listings invalidated), reads every listing again and counts stale answers: an item
/// missing or at another price than published.
async fn menu_sync_storm(
    running: &crate::Running,
    http: &load::Http,
    base: &str,
    run: &str,
    opts: &ScenarioOptions,
    table: &mut Table,
) -> Result<Check> {
    let started = Instant::now();
    let stop = CancellationToken::new();
    let readers: Vec<_> = (0..opts.readers.max(1))
        .map(|r| {
            let (http, base, run, stop) = (http.clone(), base.to_owned(), run.to_owned(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut errors = 0u64;
                let mut k = u64::from(r);
                while !stop.is_cancelled() {
                    let path = format!("/v1/menu/items?category=sync-{run}-{}", k % MENU_CATEGORIES);
                    k += 1;
                    // Customers browsing, a thousand per reader, so the reads spread over
                    // callers as a sync's readers would (each caller has a rate limit).
                    let browser = Caller {
                        subject: format!("browser-{r}-{}", k % 1_000),
                        role: Role::Customer,
                    };
                    let t = Instant::now();
                    match load::get_cached_as(&http, &base, &path, &browser).await {
                        Ok((200, hit, _)) => seen.push(MenuRead {
                            at: started.elapsed(),
                            hit: hit == Some(true),
                            took: t.elapsed(),
                        }),
                        _ => errors += 1,
                    }
                }
                (seen, errors)
            })
        })
        .collect();
    let (report, _) = batch(http, base, opts, u64::from(opts.items), |n| {
        let (item_id, category, price) = synced_item(run, n);
        Command {
            id: format!("menu-{item_id}"),
            path: "/v1/menu/items".to_owned(),
            body: serde_json::json!({
                "item_id": item_id, "name": format!("Seasonal {n}"), "category": category,
                "price_cents": price, "tags": ["seasonal"],
            }),
        }
    })
    .await;
    let published_at = started.elapsed();
    running.quiet(opts.patience).await?;
    let quiet_at = started.elapsed();
    // A few more seconds of reads after the invalidation, then the readers stop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let readers_stopped = started.elapsed();
    let mut reads = Vec::new();
    let mut errors = 0;
    for r in readers {
        let (seen, e) = r.await.context("a menu reader")?;
        reads.extend(seen);
        errors += e;
    }

    // Every listing against what was published: once right away (a listing filled
    // while the documents model still lagged the cache's invalidation may be stale until
    // the listings' TTL), then twice once the TTL has passed (a miss, then the cache's
    // copy), when none may be.
    let mut expected: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for n in 1..=u64::from(opts.items) {
        let (item_id, category, price) = synced_item(run, n);
        expected.entry(category).or_default().insert(item_id, price);
    }
    let early = stale_listings(http, base, &expected).await?;
    tokio::time::sleep(cafe_projections::cache::LIST_TTL + Duration::from_secs(1)).await;
    let mut stale = stale_listings(http, base, &expected).await?;
    stale.extend(stale_listings(http, base, &expected).await?);
    let checked = 2 * expected.len();

    table.add(
        "sync",
        format!(
            "{} items at {}/s while {} clients read the listings",
            opts.items, opts.rate, opts.readers
        ),
    );
    table.outcome("menu items", &report);
    table.add("items published", per_second(report.accepted.len(), published_at));
    table.api("publishing", &report);
    let hit_rate = |rs: &[&MenuRead]| {
        if rs.is_empty() {
            "-".to_owned()
        } else {
            format!(
                "{:.0} %",
                100.0 * rs.iter().filter(|r| r.hit).count() as f64 / rs.len() as f64
            )
        }
    };
    let during: Vec<&MenuRead> = reads.iter().filter(|r| r.at <= published_at).collect();
    let after: Vec<&MenuRead> = reads.iter().filter(|r| r.at >= quiet_at).collect();
    table.add(
        "quiet after the last item (every change projected, the queue empty)",
        format!("{:.1} s", (quiet_at - published_at).as_secs_f64()),
    );
    table.add("listing reads (failed)", format!("{} ({errors})", reads.len()));
    table.add(
        "cache hit rate while publishing / once quiet",
        format!("{} / {}", hit_rate(&during), hit_rate(&after)),
    );
    // Over time, in windows of a fifth of the run (at least a second).
    let end = readers_stopped;
    let window = (end / 5).max(Duration::from_secs(1));
    let series: Vec<String> = (0..)
        .map(|i| window * i)
        .take_while(|from| *from < end)
        .map(|from| {
            let rs: Vec<&MenuRead> = reads.iter().filter(|r| r.at >= from && r.at < from + window).collect();
            format!("{:.0}s {}", from.as_secs_f64(), hit_rate(&rs))
        })
        .collect();
    table.add("cache hit rate over time", series.join(", "));
    let misses_during = during.iter().filter(|r| !r.hit).count();
    table.add(
        "listing reads that reached DocumentDB while publishing",
        format!("{misses_during} ({})", per_second(misses_during, published_at)),
    );
    let mut took: Vec<Duration> = reads.iter().map(|r| r.took).collect();
    took.sort();
    let q = |p: f64| {
        took.get(((took.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    table.add("listing read p50 / p99", format!("{} / {}", ms(q(0.5)), ms(q(0.99))));
    table.add(
        "stale listings as soon as the pipeline is quiet (within the listings' TTL)",
        format!("{} of {}", early.len(), expected.len()),
    );
    let detail = if stale.is_empty() {
        format!(
            "0 of {checked} listings read once the listings' TTL ({}) had passed",
            humantime::format_duration(cafe_projections::cache::LIST_TTL)
        )
    } else {
        format!("{} of {checked}: {}", stale.len(), stale.join("; "))
    };
    table.add("stale listings after the TTL", detail.clone());
    Ok(Check {
        name: STALE_MENU,
        holds: stale.is_empty(),
        detail,
    })
}

/// The listings of `expected` (category → item → price) that do not hold exactly those
/// items at those prices, each described.
async fn stale_listings(
    http: &load::Http,
    base: &str,
    expected: &BTreeMap<String, BTreeMap<String, i64>>,
) -> Result<Vec<String>> {
    let mut stale = Vec::new();
    for (category, items) in expected {
        let (status, _, body) = load::get_cached(http, base, &format!("/v1/menu/items?category={category}")).await?;
        let listing: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let got: BTreeMap<String, i64> = listing["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| Some((i["item_id"].as_str()?.to_owned(), i["price_cents"].as_i64()?)))
                    .collect()
            })
            .unwrap_or_default();
        if status != 200 || &got != items {
            let fresh = items.iter().filter(|(id, p)| got.get(*id) == Some(*p)).count();
            stale.push(format!("{category}: {fresh} of {} items as published", items.len()));
        }
    }
    Ok(stale)
}

/// The menu sync's own check, reported with the invariants.
pub const STALE_MENU: &str = "no stale menu after sync";

/// `total` commands at the story's rate, all of them (no other end); with the time
/// until the last was answered.
async fn batch(
    http: &load::Http,
    base: &str,
    opts: &ScenarioOptions,
    total: u64,
    make: impl Fn(u64) -> Command,
) -> (LoadReport, Duration) {
    let started = Instant::now();
    let profile = Profile::Constant(f64::from(opts.rate));
    let never = std::future::pending::<()>();
    let report = load::commands(http, base, profile, opts.in_flight, Some(total), make, never).await;
    (report, started.elapsed())
}

/// The `n`-th order of a scenario's phase.
fn order(run: &str, phase: &str, n: u64) -> Command {
    let (_, body) = load::order_body(&format!("{run}{phase}"), n);
    Command {
        id: body["order_id"].as_str().unwrap_or_default().to_owned(),
        path: "/v1/orders".to_owned(),
        body,
    }
}

/// When every one of `apps` has its checkpoints at the stream's tip, read against the
/// stream itself (a worker's own lag is as of its last read, which may predate the
/// load's last records); None after `patience`.
async fn at_the_tip(
    cfg: &cafe_localstack::StackConfig,
    clients: &crate::pipeline::Clients,
    apps: &[String],
    patience: Duration,
) -> Result<Option<Instant>> {
    let probe = crate::read_side::lag_probe(cfg, clients, apps.to_vec());
    let started = Instant::now();
    while started.elapsed() < patience {
        let lags = probe.per_application().await.context("reading the consumers' lag")?;
        if !lags.is_empty() && lags.iter().all(|(_, lag)| lag.is_zero()) {
            return Ok(Some(Instant::now()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(None)
}

/// Accounts per tier among the customers whose id starts with `prefix`, as the serving
/// copy of the loyalty model (PostgreSQL, the orders read model) holds them.
async fn tiers(
    cfg: &cafe_localstack::StackConfig,
    clients: &crate::pipeline::Clients,
    prefix: &str,
) -> Result<BTreeMap<String, i64>> {
    let serving = crate::read_side::pointers(cfg, clients).get(ReadModel::Orders).await?;
    let schema = match serving {
        Namespace::Live => "public".to_owned(),
        Namespace::Shadow(name) => name,
    };
    let (pg, conn) = tokio_postgres::connect(&cfg.postgres_url(&cfg.names.orders_database), tokio_postgres::NoTls)
        .await
        .context("connecting to the loyalty model")?;
    let conn = tokio::spawn(conn);
    let rows = pg
        .query(
            &format!("SELECT tier, count(*) FROM {schema}.loyalty_accounts WHERE customer_id LIKE $1 GROUP BY tier"),
            &[&format!("{prefix}%")],
        )
        .await
        .context("counting the accounts per tier")?;
    drop(pg);
    let _ = conn.await;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect())
}

/// The report, for people.
pub fn print(r: &ScenarioReport) {
    println!("scenario {}", r.scenario.name());
    let width = r.figures.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for f in &r.figures {
        println!("  {:<width$}  {}", f.name, f.value);
    }
    print!("{}", r.verdicts);
    println!("  {}", if r.passed() { "PASSED" } else { "FAILED" });
}
