//! `cafe replay …`: wiring of `cafe-replay` (plan, rebuild, status, verify, swap, drop,
//! storm) to the local stack or AWS. No logic: that is the library's.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use cafe_localstack::StackConfig;
use cafe_producers::store::DynamoEventStore;
use cafe_projections::catalog::ReadModel;
use cafe_projections::verify::{Buckets, Verdict};
use cafe_replay::governor::Slo;
use cafe_replay::record::ShardRange;
use cafe_replay::record::{State, Summary};
use cafe_replay::storm::Storm;
use cafe_replay::{Filter, Params, ReplayError, ReplayId, Replayer};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::pipeline::Clients;

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(subcommand)]
    action: Action,
    /// Reach the AWS services the SDK's default chain names (credentials, region,
    /// `AWS_ENDPOINT_URL_*`) instead of the local stack; the warehouse is Redshift's Data
    /// API when `CAFE_REDSHIFT_WORKGROUP` or `CAFE_REDSHIFT_CLUSTER` is set.
    #[arg(long, global = true)]
    aws: bool,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// What a rebuild would read, per source partition (a Scan segment of the event
    /// store, or a shard of the stream): first and last event (or sequence number), event
    /// counts, and the end watermark. Reads the whole source; writes nothing.
    Plan {
        /// Where the history would come from.
        #[arg(long, value_enum, default_value_t = Source::EventStore)]
        from: Source,
        #[command(flatten)]
        filter: FilterArgs,
        /// With `--from stream`: only these shards (as for `rebuild`).
        #[arg(long, value_parser = shard_range)]
        shard_range: Vec<ShardRange>,
        /// Parallel Scan segments.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
        segments: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild read models into shadow copies (their own schema, table, database or
    /// key prefix), never touching the live ones. Bounded: events after the watermark
    /// fixed at the start are left out. Ctrl-C stops it; `--resume ID` continues it.
    Rebuild {
        /// The read models to rebuild (comma-separated): orders, active_orders,
        /// documents, cache, inventory, analytics.
        #[arg(long, value_delimiter = ',', required_unless_present = "resume")]
        projector: Vec<ReadModel>,
        /// Where the history comes from.
        #[arg(long, value_enum, default_value_t = Source::EventStore)]
        from: Source,
        #[command(flatten)]
        filter: FilterArgs,
        /// With `--from stream`: read only these shards, each `SHARD`, `SHARD:FROM..` or
        /// `SHARD:FROM..TO` (sequence numbers; repeat the flag per shard).
        #[arg(long, value_parser = shard_range)]
        shard_range: Vec<ShardRange>,
        /// Events per second at most (default: as fast as the stores take them).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_rate: Option<u32>,
        /// The governor keeps the live projectors' lag under this (it halves the
        /// replay's rate when the lag passes three quarters of it, raises it under half).
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        live_lag_slo: Duration,
        /// The governor keeps the p99 of the replay's own batch writes (one page, up to
        /// --page-size events, to one store) under this.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        store_p99_slo: Duration,
        /// No governor: as fast as the stores take it (or --max-rate). Live lag is still
        /// measured and reported.
        #[arg(long)]
        no_governor: bool,
        /// Parallel Scan segments.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
        segments: u32,
        /// Events per Scan page (and per batch applied).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        page_size: u32,
        /// Continue replay ID from its checkpoints (its own parameters apply).
        #[arg(long)]
        resume: Option<String>,
        /// Without a terminal, a progress line this often.
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        progress_every: Duration,
    },
    /// Replays, or one replay, with their progress.
    Status {
        /// A replay id (default: every replay).
        id: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare a finished replay's shadows with the live read models, per partition:
    /// match, live ahead (the live model moved on after the watermark) or differs
    /// (with the keys). Exits 1 when anything differs.
    Verify {
        /// The replay.
        id: String,
        /// Partitions (hash buckets of the aggregate id).
        #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=65_536))]
        buckets: u32,
        /// Differing keys to list at most, per model.
        #[arg(long, default_value_t = 20)]
        max_keys: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a verified replay's shadows the live read models: catches them up with the
    /// stream, moves the serving pointers (projectors and queries follow within a
    /// second, no restart), and catches up once more. Refused unless the last verify
    /// found nothing that differs; the previous copies are kept until `drop`.
    Swap {
        /// The replay.
        id: String,
        /// Swap even if verification found differences or never ran.
        #[arg(long)]
        force: bool,
    },
    /// Drop what a replay leaves: its shadows, or after a swap the copies that served
    /// before it. A copy that serves is never dropped.
    Drop {
        /// The replay.
        id: String,
    },
    /// The query storm: a replay at full speed (or a multiple of the recorded rate)
    /// while K concurrent clients run the analytics reports on the live warehouse
    /// through a bounded number of slots. Prints query latency (p50/p95/p99/max), slot
    /// wait, errors, events/s replayed and the live projectors' worst lag. The replay's
    /// shadows are dropped afterwards unless --keep.
    Storm {
        /// Concurrent clients (analysts), each running the reports one after another.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        clients: u32,
        /// Queries the warehouse runs at once (its concurrency slots; the pool holds as
        /// many connections); the rest wait.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=500))]
        slots: u32,
        /// The read models the replay rebuilds (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "analytics")]
        projector: Vec<ReadModel>,
        #[command(flatten)]
        filter: FilterArgs,
        /// Replay at this multiple of the rate the history was recorded at (its events
        /// over the time from the first to the last); default: full speed.
        #[arg(long, conflicts_with = "max_rate")]
        rate_multiple: Option<f64>,
        /// Events per second at most (default: full speed).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        max_rate: Option<u32>,
        /// Pace the replay by the SLO governor (2 s live lag, 1 s store p99) instead
        /// of full speed.
        #[arg(long)]
        governed: bool,
        /// Parallel Scan segments.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
        segments: u32,
        /// Events per Scan page (and per batch applied).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        page_size: u32,
        /// Keep the replay's shadows (to verify or swap them).
        #[arg(long)]
        keep: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where a rebuild reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Source {
    /// The DynamoDB event store: the whole history, by parallel Scan segments.
    EventStore,
    /// The Kinesis stream: what its retention window holds, one segment per shard, by
    /// time (`--since`/`--until`) or by `--shard-range`.
    Stream,
}

fn shard_range(s: &str) -> Result<ShardRange, String> {
    ShardRange::parse(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args)]
struct FilterArgs {
    /// Only events that occurred at or after this (RFC 3339).
    #[arg(long, value_parser = crate::analytics::rfc3339)]
    since: Option<DateTime<Utc>>,
    /// Only events that occurred at or before this (RFC 3339).
    #[arg(long, value_parser = crate::analytics::rfc3339)]
    until: Option<DateTime<Utc>>,
    /// Only aggregates of this type: order, stock_item, loyalty_account, menu_item.
    #[arg(long)]
    aggregate_type: Option<String>,
    /// Only this aggregate (its id).
    #[arg(long)]
    aggregate: Option<String>,
}

impl From<FilterArgs> for Filter {
    fn from(a: FilterArgs) -> Filter {
        Filter {
            since: a.since,
            until: a.until,
            aggregate_type: a.aggregate_type,
            aggregate: a.aggregate,
        }
    }
}

/// Runs `cafe replay`; a usage error (bad input, unknown id) prints its message and
/// exits 2 with nothing written.
pub async fn run(cfg: &StackConfig, args: ReplayArgs, stop: CancellationToken) -> Result<ExitCode> {
    let clients = Clients::new(cfg, args.aws).await;
    let mut replayer = crate::read_side::replayer(cfg, &clients)?;
    let estimate = replayer.history().approximate_count().await;
    let pause = match std::env::var(cafe_settings::vars::FAULT_SWAP_PAUSE_MS) {
        Ok(ms) => Duration::from_millis(ms.parse().context(cafe_settings::vars::FAULT_SWAP_PAUSE_MS)?),
        Err(_) => Duration::ZERO,
    };
    if !pause.is_zero() {
        replayer = replayer.with_before_flip(std::sync::Arc::new(move || Box::pin(tokio::time::sleep(pause))));
    }
    match act(&replayer, args.action, estimate, stop).await {
        Ok(code) => Ok(code),
        Err(e) if e.is_usage() => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e.into()),
    }
}

async fn act(
    replayer: &Replayer<DynamoEventStore>,
    action: Action,
    estimate: Option<u64>,
    stop: CancellationToken,
) -> Result<ExitCode, ReplayError> {
    match action {
        Action::Plan {
            from,
            filter,
            shard_range,
            segments,
            json,
        } => {
            let plan = match from {
                Source::EventStore if !shard_range.is_empty() => {
                    return Err(ReplayError::BadInput("--shard-range needs --from stream".into()));
                }
                Source::EventStore => replayer.plan(&filter.into(), segments, 1000).await?,
                Source::Stream => replayer.plan_stream(&filter.into(), shard_range).await?,
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&plan).unwrap_or_default());
            } else {
                println!(
                    "end watermark: {} (events after it are left out)",
                    plan.watermark.to_rfc3339()
                );
                if !plan.segments.is_empty() {
                    println!("{:>7}  {:>9}  {:>9}  first .. last", "segment", "events", "selected");
                }
                for s in &plan.segments {
                    let key = |k: &Option<cafe_producers::store::EventKey>| {
                        k.as_ref()
                            .map_or("-".to_owned(), |k| format!("{} v{}", k.aggregate_id, k.version))
                    };
                    println!(
                        "{:>7}  {:>9}  {:>9}  {} .. {}",
                        s.segment,
                        s.counts.events,
                        s.counts.selected,
                        key(&s.first),
                        key(&s.last)
                    );
                }
                if !plan.shards.is_empty() {
                    println!(
                        "{:<22}  {:>9}  {:>9}  first .. last sequence number",
                        "shard", "events", "selected"
                    );
                }
                for s in &plan.shards {
                    println!(
                        "{:<22}  {:>9}  {:>9}  {} .. {}",
                        s.shard,
                        s.counts.events,
                        s.counts.selected,
                        s.first.as_deref().unwrap_or("-"),
                        s.last.as_deref().unwrap_or("-")
                    );
                }
                println!("a rebuild would apply {} events", plan.selected());
            }
            Ok(ExitCode::SUCCESS)
        }
        Action::Rebuild {
            projector,
            from,
            shard_range,
            filter,
            max_rate,
            live_lag_slo,
            store_p99_slo,
            no_governor,
            segments,
            page_size,
            resume,
            progress_every,
        } => {
            let id = match resume {
                Some(id) => {
                    let id = ReplayId::parse(&id)?;
                    let (meta, _) = replayer.status(&id).await?;
                    println!("resuming replay {id} (watermark {})", meta.watermark.to_rfc3339());
                    id
                }
                None => {
                    let source = match from {
                        Source::EventStore if !shard_range.is_empty() => {
                            return Err(ReplayError::BadInput("--shard-range needs --from stream".into()));
                        }
                        Source::EventStore => cafe_replay::record::Source::EventStore,
                        Source::Stream => cafe_replay::record::Source::Stream { shards: shard_range },
                    };
                    let params = Params {
                        source,
                        models: projector.iter().map(|m| m.name().to_owned()).collect(),
                        filter: filter.into(),
                        segments,
                        page_size,
                        max_rate,
                        slo: (!no_governor).then_some(Slo {
                            live_lag: live_lag_slo,
                            store_p99: store_p99_slo,
                        }),
                    };
                    let meta = replayer.create(params, estimate).await?;
                    println!(
                        "replay {}: shadows in namespace {}, end watermark {}",
                        meta.id,
                        meta.id.namespace(),
                        meta.watermark.to_rfc3339()
                    );
                    meta.id
                }
            };
            let tty = std::io::stderr().is_terminal();
            let out = replayer.run(&id, stop, tty, progress_every).await?;
            let rate = out.applied as f64 / out.took.as_secs_f64().max(f64::EPSILON);
            println!(
                "replay {id}: {} events read, {} applied, {} refused in {:.1} s ({rate:.0} events/s), {:.1} s throttled",
                out.read,
                out.applied,
                out.refused,
                out.took.as_secs_f64(),
                out.throttled_secs
            );
            let p = &out.pacing;
            let waited: Vec<String> = p
                .waited
                .iter()
                .filter(|(_, s)| **s >= 0.05)
                .map(|(r, s)| {
                    format!(
                        "{s:.1} s {}",
                        serde_json::to_value(r)
                            .ok()
                            .and_then(|v| v.as_str().map(str::to_owned))
                            .unwrap_or_default()
                    )
                })
                .collect();
            println!(
                "pacing: {}; live lag p99 {} ms, max {} ms over {} samples; store write p99 max {} ms; peak rate {}; waited {}",
                if p.governed { "governed" } else { "not governed" },
                p.live_lag_p99.as_millis(),
                p.live_lag_max.as_millis(),
                p.samples,
                p.store_p99_max.as_millis(),
                if p.peak_rate > 0.0 && p.peak_rate.is_finite() {
                    format!("{:.0} events/s", p.peak_rate)
                } else {
                    "unlimited".to_owned()
                },
                if waited.is_empty() {
                    "nothing".to_owned()
                } else {
                    waited.join(", ")
                }
            );
            if out.finished {
                println!("finished; next: cafe replay verify {id}");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("stopped; continue with: cafe replay rebuild --resume {id}");
                Ok(ExitCode::from(130))
            }
        }
        Action::Status { id, json } => {
            let metas = match id {
                Some(id) => vec![replayer.status(&ReplayId::parse(&id)?).await?],
                None => {
                    let mut out = Vec::new();
                    for meta in replayer.list().await? {
                        out.push(replayer.status(&meta.id).await?);
                    }
                    out
                }
            };
            if json {
                let all: Vec<_> = metas
                    .iter()
                    .map(|(m, s)| serde_json::json!({ "replay": m, "segments": s }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
                return Ok(ExitCode::SUCCESS);
            }
            if metas.is_empty() {
                println!("no replays");
            }
            for (meta, segments) in metas {
                let sum = Summary::of(&meta, &segments, Utc::now());
                let state = match meta.state {
                    State::Running => "running (or stopped: resume it)",
                    State::Finished => "finished",
                    State::Swapped => "swapped in (its shadows serve)",
                    State::Dropped => "dropped",
                };
                println!(
                    "{}  {state}  models {}  watermark {}",
                    meta.id,
                    meta.params.models.join(","),
                    meta.watermark.to_rfc3339()
                );
                let of = sum.total_estimate.map_or(String::new(), |t| format!(" of ~{t}"));
                let eta = sum
                    .eta_s
                    .map_or(String::new(), |s| format!(", ETA ~{s:.0} s at that rate"));
                println!(
                    "    {}{of} events read, {} applied, segments {}/{}, {:.0} events/s since creation{eta}, {:.1} s throttled",
                    sum.read, sum.applied, sum.segments_done, sum.segments, sum.events_per_s, sum.throttled_secs
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Action::Verify {
            id,
            buckets,
            max_keys,
            json,
        } => {
            let id = ReplayId::parse(&id)?;
            let buckets = Buckets::new(buckets)?;
            let reports = replayer.verify(&id, buckets, max_keys).await?;
            let differs = reports.iter().any(|(_, r)| r.verdict() == Verdict::Differs);
            if json {
                let all: Vec<_> = reports
                    .iter()
                    .map(|(m, r)| serde_json::json!({ "model": m.name(), "verdict": r.verdict(), "report": r }))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
            } else {
                for (model, r) in &reports {
                    println!(
                        "{model}: {} — {} partitions match, {} live ahead, {} differ",
                        r.verdict(),
                        r.count(Verdict::Match),
                        r.count(Verdict::LiveAhead),
                        r.count(Verdict::Differs)
                    );
                    // Partitions that are only ahead are counted above; the wrong ones
                    // are listed.
                    for b in r.buckets.iter().filter(|b| b.verdict == Verdict::Differs) {
                        println!(
                            "    partition {:>5}: {} ({} live rows, {} shadow rows, {} keys)",
                            b.bucket, b.verdict, b.live.rows, b.shadow.rows, b.keys
                        );
                    }
                    for k in &r.keys {
                        println!("    {}", serde_json::to_string(k).unwrap_or_default());
                    }
                    if r.keys_left_out > 0 {
                        println!("    … and {} more keys", r.keys_left_out);
                    }
                }
            }
            Ok(if differs { ExitCode::FAILURE } else { ExitCode::SUCCESS })
        }
        Action::Swap { id, force } => {
            let id = ReplayId::parse(&id)?;
            if force {
                eprintln!("warning: --force: swapping replay {id} in without a clean verification");
            }
            let out = replayer.swap(&id, force).await?;
            println!(
                "swapped replay {id} in for {}: {} events caught up after the watermark, {:.1} s; the previous copies stay until cafe replay drop {id}",
                out.models.join(", "),
                out.caught_up,
                out.took.as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        Action::Storm {
            clients,
            slots,
            projector,
            filter,
            rate_multiple,
            max_rate,
            governed,
            segments,
            page_size,
            keep,
            json,
        } => {
            let filter: Filter = filter.into();
            let max_rate = match rate_multiple {
                None => max_rate,
                Some(m) if !(m.is_finite() && m > 0.0) => {
                    return Err(ReplayError::BadInput(format!(
                        "--rate-multiple must be above 0, not {m}"
                    )));
                }
                Some(m) => {
                    let plan = replayer.plan(&filter, segments, page_size).await?;
                    let recorded = plan.recorded_rate().ok_or_else(|| {
                        ReplayError::BadInput("the history holds too few events to have a recorded rate".into())
                    })?;
                    let rate = (recorded * m).round().clamp(1.0, f64::from(u32::MAX)) as u32;
                    eprintln!("recorded at {recorded:.0} events/s: replaying at {rate} events/s (×{m})");
                    Some(rate)
                }
            };
            let params = Params {
                source: cafe_replay::record::Source::EventStore,
                models: projector.iter().map(|m| m.name().to_owned()).collect(),
                filter,
                segments,
                page_size,
                max_rate,
                slo: governed.then(Slo::default),
            };
            let storm = Storm {
                clients: clients as usize,
                slots: slots as usize,
                keep,
            };
            let report = replayer.storm(storm, params, estimate, stop).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                print!("{}", report.render());
            }
            Ok(if report.errors == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Action::Drop { id } => {
            let id = ReplayId::parse(&id)?;
            for (model, ns) in replayer.drop(&id).await? {
                println!("dropped the {model} copy in {ns}");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
