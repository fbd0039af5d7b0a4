//! [`Replayer`]: plans, creates, runs, verifies and drops replays.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cafe_consumers::Outcome;
use cafe_consumers::lag::LagProbe;
use cafe_producers::store::{EventKey, HistoryPage, HistoryReader};
use cafe_projections::Positioned;
use cafe_projections::catalog::{AnyProjection, Endpoints, Namespace, ReadModel};
use cafe_projections::projector::apply_isolating;
use cafe_projections::serving::LiveSide;
use cafe_projections::verify::{self, Buckets, Report};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::error::ReplayError;
use crate::governor::Governor;
use crate::progress::Progress;
use crate::record::{Filter, Meta, Params, ReplayId, Replays, Segment, ShardRange, Source, State, Swapped, Verified};
use crate::stream;
use crate::watermark::StoreWatermark;

/// What a replay would read, per Scan segment.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Events that occurred after this would be left out.
    pub watermark: DateTime<Utc>,
    /// Per Scan segment (from the event store).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentPlan>,
    /// Per shard (from the stream).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardPlan>,
}

/// One shard's part of a plan from the stream.
#[derive(Debug, Clone, Serialize)]
pub struct ShardPlan {
    /// The shard.
    pub shard: String,
    /// The sequence number of its first record read.
    pub first: Option<String>,
    /// Of its last record read (the bound: `--shard-range`'s end, or records that
    /// arrived by the watermark's margin).
    pub last: Option<String>,
    /// What they hold.
    #[serde(flatten)]
    pub counts: Counts,
}

/// One segment's part of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct SegmentPlan {
    /// Its number.
    pub segment: u32,
    /// Its first event's key.
    pub first: Option<EventKey>,
    /// Its last event's key.
    pub last: Option<EventKey>,
    /// What it holds.
    #[serde(flatten)]
    pub counts: Counts,
}

/// A source partition's events in a plan: how many, how many a replay would take, and
/// when those occurred.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Events read.
    pub events: u64,
    /// Of which the replay would take.
    pub selected: u64,
    /// When the earliest and the latest of those occurred.
    pub occurred: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Counts {
    /// Counts one event that occurred `at`, taken by the replay or not.
    fn add(&mut self, at: DateTime<Utc>, taken: bool) {
        self.events += 1;
        if taken {
            self.selected += 1;
            self.occurred = Some(self.occurred.map_or((at, at), |(a, b)| (a.min(at), b.max(at))));
        }
    }
}

impl Plan {
    /// Every partition's counts, segments or shards.
    pub fn counts(&self) -> impl Iterator<Item = Counts> + Clone + '_ {
        self.segments
            .iter()
            .map(|s| s.counts)
            .chain(self.shards.iter().map(|s| s.counts))
    }

    /// Events a replay would take, over every partition.
    pub fn selected(&self) -> u64 {
        self.counts().map(|c| c.selected).sum()
    }

    /// The rate the selected events were recorded at: their count over the time from
    /// the first to the last (events/s; `None` for fewer than two instants).
    pub fn recorded_rate(&self) -> Option<f64> {
        let counts = self.counts();
        let spans = counts.clone().filter_map(|c| c.occurred);
        let first = spans.clone().map(|(a, _)| a).min()?;
        let last = spans.map(|(_, b)| b).max()?;
        let secs = (last - first).num_milliseconds() as f64 / 1000.0;
        let events: u64 = counts.map(|c| c.selected).sum();
        (secs > 0.0).then(|| events as f64 / secs)
    }
}

/// How a run ended.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    /// Whether every segment was read to its end (else it was stopped: resume it).
    pub finished: bool,
    /// Events read, over every run of this replay.
    pub read: u64,
    /// Events applied.
    pub applied: u64,
    /// Events a model refused as poison.
    pub refused: u64,
    /// Seconds this run waited on the rate limit.
    pub throttled_secs: f64,
    /// How long this run took.
    pub took: Duration,
    /// What the pacing did, and the live lag it saw.
    pub pacing: crate::governor::Report,
}

/// Runs replays of `H`'s history into the catalog's stores.
pub struct Replayer<H> {
    history: H,
    replays: Replays,
    pub(crate) at: Endpoints,
    pub(crate) live: LiveSide,
    stream: Option<(aws_sdk_kinesis::Client, String)>,
    before_flip: Option<BeforeFlip>,
    lag: Option<LagProbe>,
}

/// What a swap runs between its first catch-up and moving the pointers (fault
/// injection: traffic the old copies take in that window must reach the new ones).
pub type BeforeFlip = Arc<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>;

impl<H> std::fmt::Debug for Replayer<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replayer")
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

/// How a swap went.
#[derive(Debug, Clone, Serialize)]
pub struct SwapOutcome {
    /// The models now served by the replay's shadows.
    pub models: Vec<String>,
    /// Events applied after the watermark (both catch-up passes).
    pub caught_up: u64,
    /// Whether verification was overridden.
    pub forced: bool,
    /// How long it took.
    pub took: Duration,
}

/// How far before the watermark the catch-up starts reading the stream: records carry
/// their arrival time, events their occurrence time, and the two clocks differ by the
/// command's latency and skew. Reading earlier only repeats events (idempotent).
const CATCH_UP_MARGIN: chrono::Duration = chrono::Duration::seconds(60);

/// How long a swap waits after moving the pointers before its last catch-up: every
/// follower looks at the pointers at least this often, plus a batch in flight.
const SWAP_GRACE: Duration = Duration::from_secs(4);

/// The longest a transient store failure holds a segment before the next attempt.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

impl<H: HistoryReader> Replayer<H> {
    /// Over `history`, recording in `replays`, with the stores at `at`; `live` says
    /// which copies are live (the serving pointers but in tests).
    pub fn new(history: H, replays: Replays, at: Endpoints, live: LiveSide) -> Self {
        Replayer {
            history,
            replays,
            at,
            live,
            stream: None,
            before_flip: None,
            lag: None,
        }
    }

    /// The event store it reads.
    pub fn history(&self) -> &H {
        &self.history
    }

    /// With the live lag the governor holds to its objective.
    pub fn with_lag_probe(mut self, probe: LagProbe) -> Self {
        self.lag = Some(probe);
        self
    }

    /// Fault injection: `hook` runs between a swap's first catch-up and the pointer
    /// move, widening the window in which the old copies still take events (what the
    /// second catch-up must bring over).
    pub fn with_before_flip(mut self, hook: BeforeFlip) -> Self {
        self.before_flip = Some(hook);
        self
    }

    /// With the stream a swap catches shadows up from.
    pub fn with_stream(mut self, kinesis: aws_sdk_kinesis::Client, stream: impl Into<String>) -> Self {
        self.stream = Some((kinesis, stream.into()));
        self
    }

    /// The watermark a replay created now with `filter` would get.
    pub fn watermark_now(filter: &Filter) -> DateTime<Utc> {
        let settled = Utc::now() - chrono::Duration::from_std(crate::SETTLE).unwrap_or_default();
        filter.until.map_or(settled, |u| u.min(settled))
    }

    /// What a replay with `filter` would read (reads the whole history, writes nothing).
    pub async fn plan(&self, filter: &Filter, segments: u32, page_size: u32) -> Result<Plan, ReplayError> {
        filter.check()?;
        let watermark = Self::watermark_now(filter);
        let plans = (0..segments.max(1)).map(|segment| async move {
            let mut plan = SegmentPlan {
                segment,
                first: None,
                last: None,
                counts: Counts::default(),
            };
            let mut after = None;
            loop {
                let page = self
                    .history
                    .read_page(segment, segments.max(1), after.as_ref(), page_size)
                    .await?;
                for (key, e) in &page.events {
                    plan.first.get_or_insert_with(|| key.clone());
                    plan.last = Some(key.clone());
                    let taken = filter.takes(
                        e.aggregate_id.aggregate_type(),
                        &key.aggregate_id,
                        e.occurred_at,
                        watermark,
                    );
                    plan.counts.add(e.occurred_at, taken);
                }
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            Ok::<_, ReplayError>(plan)
        });
        Ok(Plan {
            watermark,
            segments: futures::future::try_join_all(plans).await?,
            shards: Vec::new(),
        })
    }

    /// The shard ranges a stream replay reads: every shard when none is named, else the
    /// named ones, each checked (the shard exists, its start sequence is in it).
    async fn stream_ranges(&self, ranges: Vec<ShardRange>) -> Result<Vec<ShardRange>, ReplayError> {
        let Some((kinesis, stream)) = &self.stream else {
            return Err(ReplayError::BadInput(
                "a replay from the stream needs the stream configured".into(),
            ));
        };
        let all = stream::shards(kinesis, stream).await?;
        if ranges.is_empty() {
            return Ok(all
                .into_iter()
                .map(|shard| ShardRange {
                    shard,
                    from_sequence: None,
                    to_sequence: None,
                })
                .collect());
        }
        for range in &ranges {
            if !all.contains(&range.shard) {
                return Err(ReplayError::BadInput(format!("{stream} has no shard {}", range.shard)));
            }
            if let Some(from) = &range.from_sequence {
                stream::check_sequence(kinesis, stream, &range.shard, from).await?;
            }
        }
        Ok(ranges)
    }

    /// A reader of `range`: after `position` (a resumed segment), else from the
    /// range's start sequence or `since` (a margin early: records carry arrival times,
    /// events occurrence times), or the shard's oldest record; to the range's end or
    /// records that arrived past the watermark's margin.
    async fn range_reader(
        &self,
        range: &ShardRange,
        position: Option<&str>,
        since: Option<DateTime<Utc>>,
        watermark: DateTime<Utc>,
    ) -> Result<stream::ShardReader<'_>, ReplayError> {
        let Some((kinesis, stream)) = &self.stream else {
            return Err(ReplayError::BadInput(
                "a replay from the stream needs the stream configured".into(),
            ));
        };
        let start = match (position, &range.from_sequence, since) {
            (Some(pos), _, _) => stream::Start::AfterSequence(pos.to_owned()),
            (None, Some(from), _) => stream::Start::AtSequence(from.clone()),
            (None, None, Some(since)) => stream::Start::At(since - CATCH_UP_MARGIN),
            (None, None, None) => stream::Start::TrimHorizon,
        };
        let bound = stream::Bound {
            to_sequence: range.to_sequence.clone(),
            arrived_by: Some(watermark + CATCH_UP_MARGIN),
        };
        stream::ShardReader::open(kinesis, stream, &range.shard, &start, bound).await
    }

    /// What a replay from the stream with `filter` would read, per shard: its first and
    /// last sequence number up to the watermark's bound, and event counts (reads the
    /// shards, writes nothing).
    pub async fn plan_stream(&self, filter: &Filter, ranges: Vec<ShardRange>) -> Result<Plan, ReplayError> {
        filter.check()?;
        let ranges = self.stream_ranges(ranges).await?;
        let watermark = Self::watermark_now(filter);
        let plans = ranges.into_iter().map(|range| async move {
            let mut reader = self.range_reader(&range, None, filter.since, watermark).await?;
            let mut plan = ShardPlan {
                shard: range.shard.clone(),
                first: None,
                last: None,
                counts: Counts::default(),
            };
            while let Some(batch) = reader.next().await? {
                for p in &batch.events {
                    plan.first.get_or_insert_with(|| p.sequence.clone());
                    plan.last = Some(p.sequence.clone());
                    let e = &p.event;
                    let taken = filter.takes(
                        e.aggregate_id.aggregate_type(),
                        &e.aggregate_id.to_string(),
                        e.occurred_at,
                        watermark,
                    );
                    plan.counts.add(e.occurred_at, taken);
                }
            }
            Ok::<_, ReplayError>(plan)
        });
        Ok(Plan {
            watermark,
            segments: Vec::new(),
            shards: futures::future::try_join_all(plans).await?,
        })
    }

    /// Creates a replay: checks every parameter, connects every shadow (creating its
    /// schema, table or indexes), then writes the record. Bad input writes nothing.
    pub async fn create(&self, mut params: Params, total_estimate: Option<u64>) -> Result<Meta, ReplayError> {
        params.filter.check()?;
        if let Source::Stream { shards } = &mut params.source {
            *shards = self.stream_ranges(std::mem::take(shards)).await?;
            params.segments = u32::try_from(shards.len()).unwrap_or(u32::MAX);
        }
        let models = params.read_models()?;
        if models.is_empty() {
            return Err(ReplayError::BadInput("name at least one read model to rebuild".into()));
        }
        if params.segments == 0 || params.page_size == 0 {
            return Err(ReplayError::BadInput(
                "segments and page size must be at least 1".into(),
            ));
        }
        let meta = Meta {
            id: ReplayId::new(),
            watermark: Self::watermark_now(&params.filter),
            params,
            created_at: Utc::now(),
            state: State::Running,
            finished_at: None,
            total_estimate,
            throttled_secs: 0.0,
            verified: None,
            swapped: None,
        };
        self.shadows(&meta).await?;
        self.replays.save(&meta).await?;
        Ok(meta)
    }

    async fn shadows(&self, meta: &Meta) -> Result<Vec<AnyProjection>, ReplayError> {
        let ns = meta.id.namespace();
        let mut out = Vec::new();
        for model in meta.params.read_models()? {
            out.push(model.connect(&self.at, &ns).await?);
        }
        Ok(out)
    }

    /// A replay's record and checkpoints.
    pub async fn status(&self, id: &ReplayId) -> Result<(Meta, Vec<Segment>), ReplayError> {
        self.replays.load(id).await
    }

    /// Every replay, newest first.
    pub async fn list(&self) -> Result<Vec<Meta>, ReplayError> {
        self.replays.list().await
    }

    /// Runs (or resumes) replay `id` until every segment is read or `stop` fires;
    /// progress on a bar when `tty`, else a log line every `every`.
    pub async fn run(
        &self,
        id: &ReplayId,
        stop: CancellationToken,
        tty: bool,
        every: Duration,
    ) -> Result<RunOutcome, ReplayError> {
        let started = Instant::now();
        let (mut meta, segments) = self.replays.load(id).await?;
        if meta.state == State::Dropped {
            return Err(ReplayError::BadInput(format!(
                "replay {id} was dropped; start a new one"
            )));
        }
        let models = self.shadows(&meta).await?;
        let already: u64 = segments.iter().map(|s| s.read).sum();
        let progress = Progress::new(meta.total_estimate, already, tty, every);
        let governor = Governor::new(meta.params.slo, meta.params.max_rate, meta.params.page_size);
        let ctx = RunContext {
            meta: &meta,
            models: &models,
            progress: &progress,
            governor: &governor,
            stop: &stop,
        };
        let done = CancellationToken::new();
        let sampler = self.sample_lag(&governor, done.clone());
        let ctx = &ctx;
        let runs = segments.into_iter().map(|segment| {
            let span = info_span!("replay_segment", replay = %id, segment = segment.segment);
            let range = match &meta.params.source {
                Source::Stream { shards } => shards.get(segment.segment as usize).cloned(),
                Source::EventStore => None,
            };
            async move {
                match range {
                    Some(range) => self.shard(ctx, segment, range).await,
                    None => self.segment(ctx, segment).await,
                }
            }
            .instrument(span)
        });
        let (results, ()) = tokio::join!(
            async {
                let r = futures::future::try_join_all(runs).await;
                done.cancel();
                r
            },
            sampler
        );
        let results = results?;
        progress.finish();
        let throttled: f64 = results.iter().map(|(_, t)| t).sum();
        let finished = results.iter().all(|(s, _)| s.done);
        let sum = |f: fn(&Segment) -> u64| results.iter().map(|(s, _)| f(s)).sum();
        meta.throttled_secs += throttled;
        if finished {
            meta.state = State::Finished;
            meta.finished_at = Some(Utc::now());
        }
        self.replays.save(&meta).await?;
        Ok(RunOutcome {
            finished,
            read: sum(|s| s.read),
            applied: sum(|s| s.applied),
            refused: sum(|s| s.refused),
            throttled_secs: throttled,
            took: started.elapsed(),
            pacing: governor.report(),
        })
    }

    /// Reads the live lag once a second for `governor` until `done`.
    async fn sample_lag(&self, governor: &Governor, done: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = done.cancelled() => return,
                _ = tick.tick() => {}
            }
            let lag = match &self.lag {
                Some(probe) => probe.worst().await,
                None => Some(Duration::ZERO),
            };
            governor.tick(lag);
        }
    }

    /// One segment, page by page, from its checkpoint; answers its last checkpoint and
    /// the seconds it waited on the rate limit.
    async fn segment(&self, ctx: &RunContext<'_>, mut seg: Segment) -> Result<(Segment, f64), ReplayError> {
        let p = &ctx.meta.params;
        let shard = format!("replay-{}-{}", ctx.meta.id, seg.segment);
        let mut throttled = 0.0;
        while !seg.done && !ctx.stop.is_cancelled() {
            let page = self
                .history
                .read_page(seg.segment, p.segments, seg.after.as_ref(), p.page_size)
                .await?;
            let take = &page.events;
            let taken: Vec<Positioned> = take
                .iter()
                .filter(|(key, e)| {
                    p.filter.takes(
                        e.aggregate_id.aggregate_type(),
                        &key.aggregate_id,
                        e.occurred_at,
                        ctx.meta.watermark,
                    )
                })
                .enumerate()
                .map(|(i, (_, e))| Positioned {
                    event: e.clone(),
                    // Increasing across pages and runs (the page count is checkpointed),
                    // so a projection's own per-shard checkpoint only skips what it has.
                    sequence: format!("{:020}", seg.pages * 1_000_000 + i as u64 + 1),
                    sub: 0,
                })
                .collect();
            throttled += ctx.governor.acquire(taken.len()).await;
            for model in ctx.models {
                let started = Instant::now();
                seg.refused += self.apply(model, &shard, &taken, ctx.stop).await?;
                ctx.governor.record_write(started.elapsed());
            }
            seg.read += take.len() as u64;
            seg.applied += taken.len() as u64;
            seg.pages += 1;
            seg.done = page.next.is_none();
            if let Some(after) = next_after(&page) {
                seg.after = Some(after);
            }
            self.replays.save_segment(&ctx.meta.id, &seg).await?;
            ctx.progress.add(take.len() as u64);
        }
        debug!(
            read = seg.read,
            applied = seg.applied,
            done = seg.done,
            "segment stopped"
        );
        Ok((seg, throttled))
    }

    /// One shard of a stream replay, from its checkpoint (or its range's start, or
    /// `--since`) to its range's end or the watermark: records that arrived more than
    /// [`CATCH_UP_MARGIN`] after the watermark end it, and events that occurred after
    /// the watermark are left out (the stand-in's arrival times are rounded, so the
    /// events' own times decide).
    async fn shard(
        &self,
        ctx: &RunContext<'_>,
        mut seg: Segment,
        range: ShardRange,
    ) -> Result<(Segment, f64), ReplayError> {
        if seg.done {
            return Ok((seg, 0.0));
        }
        let p = &ctx.meta.params;
        let shard_name = format!("replay-{}-{}", ctx.meta.id, range.shard);
        let mut reader = self
            .range_reader(&range, seg.position.as_deref(), p.filter.since, ctx.meta.watermark)
            .await?;
        let mut throttled = 0.0;
        while let Some(batch) = reader.next().await? {
            if ctx.stop.is_cancelled() {
                return Ok((seg, throttled));
            }
            let read = batch.events.len() as u64;
            let taken: Vec<Positioned> = batch
                .events
                .into_iter()
                .filter(|e| {
                    let ev = &e.event;
                    p.filter.takes(
                        ev.aggregate_id.aggregate_type(),
                        &ev.aggregate_id.to_string(),
                        ev.occurred_at,
                        ctx.meta.watermark,
                    )
                })
                .collect();
            throttled += ctx.governor.acquire(taken.len()).await;
            for model in ctx.models {
                let started = Instant::now();
                seg.refused += self.apply(model, &shard_name, &taken, ctx.stop).await?;
                ctx.governor.record_write(started.elapsed());
            }
            seg.read += read;
            seg.applied += taken.len() as u64;
            seg.pages += 1;
            seg.position = Some(batch.last);
            self.replays.save_segment(&ctx.meta.id, &seg).await?;
            ctx.progress.add(read);
        }
        seg.done = true;
        self.replays.save_segment(&ctx.meta.id, &seg).await?;
        Ok((seg, throttled))
    }

    /// Applies to `shadows` every event of every shard from `from` (per shard: after its
    /// sequence number, or records that arrived since `since`) to the tip, as `filter`
    /// takes them; answers where each shard was left and how many events were applied.
    async fn catch_up(
        &self,
        shadows: &[AnyProjection],
        filter: &Filter,
        mut from: std::collections::BTreeMap<String, String>,
        since: DateTime<Utc>,
    ) -> Result<(std::collections::BTreeMap<String, String>, u64), ReplayError> {
        let Some((kinesis, stream)) = &self.stream else {
            return Err(ReplayError::BadInput("a swap needs the stream to catch up from".into()));
        };
        let mut applied = 0;
        for shard in stream::shards(kinesis, stream).await? {
            let start = match from.get(&shard) {
                Some(after) => stream::Start::AfterSequence(after.clone()),
                None => stream::Start::At(since),
            };
            let mut reader =
                stream::ShardReader::open(kinesis, stream, &shard, &start, stream::Bound::default()).await?;
            let name = format!("catch-up-{shard}");
            while let Some(batch) = reader.next().await? {
                let taken: Vec<Positioned> = batch
                    .events
                    .into_iter()
                    .filter(|p| {
                        let e = &p.event;
                        filter.takes(
                            e.aggregate_id.aggregate_type(),
                            &e.aggregate_id.to_string(),
                            e.occurred_at,
                            DateTime::<Utc>::MAX_UTC,
                        )
                    })
                    .collect();
                for model in shadows {
                    self.apply(model, &name, &taken, &CancellationToken::new()).await?;
                }
                applied += taken.len() as u64;
                from.insert(shard.clone(), batch.last);
            }
        }
        Ok((from, applied))
    }

    /// Applies `events` to `model`, retrying transient failures with backoff; answers
    /// how many events it refused as poison (logged, never parked: a replay has no
    /// parking lot of its own, and the live projector parked them already).
    async fn apply(
        &self,
        model: &AnyProjection,
        shard: &str,
        events: &[Positioned],
        stop: &CancellationToken,
    ) -> Result<u64, ReplayError> {
        let mut backoff = Duration::from_millis(100);
        let mut rest = events;
        let mut refused = 0;
        while !rest.is_empty() {
            let outcomes = apply_isolating(model, shard, rest).await;
            let mut done = 0;
            let mut retry = None;
            for (i, o) in outcomes.iter().enumerate() {
                match o {
                    Outcome::Done => done = i + 1,
                    Outcome::Park(reason) => {
                        if let Some(p) = rest.get(i) {
                            warn!(model = %model.model(), aggregate = %p.event.aggregate_id, version = p.event.version, %reason, "event refused");
                        }
                        refused += 1;
                        done = i + 1;
                    }
                    Outcome::Retry(reason) | Outcome::Defer(reason) => {
                        retry = Some(reason.clone());
                        break;
                    }
                }
            }
            rest = rest.get(done..).unwrap_or_default();
            if let Some(reason) = retry {
                if stop.is_cancelled() {
                    return Err(ReplayError::Projection(cafe_projections::ProjectionError::transient(
                        "replay",
                        format!("stopped while {} was failing: {reason}", model.model()),
                    )));
                }
                warn!(model = %model.model(), %reason, backoff_ms = backoff.as_millis() as u64, "transient failure; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        Ok(refused)
    }

    /// Compares each shadow of replay `id` with the live copy, judging rows newer in
    /// the live copy against the event store. Refused while the replay runs.
    pub async fn verify(
        &self,
        id: &ReplayId,
        buckets: Buckets,
        max_keys: usize,
    ) -> Result<Vec<(ReadModel, Report)>, ReplayError> {
        let (mut meta, _) = self.replays.load(id).await?;
        match meta.state {
            State::Finished => {}
            State::Running => {
                return Err(ReplayError::BadInput(format!(
                    "replay {id} has not finished (resume it with --resume {id}); verify compares finished replays"
                )));
            }
            State::Swapped => {
                return Err(ReplayError::BadInput(format!(
                    "replay {id} was swapped in: its shadows are the live models now"
                )));
            }
            State::Dropped => return Err(ReplayError::BadInput(format!("replay {id} was dropped"))),
        }
        let watermark = StoreWatermark::new(&self.history, meta.watermark);
        let mut out = Vec::new();
        for shadow in self.shadows(&meta).await? {
            let model = shadow.model();
            let ns = self.live.namespace(model).await?;
            let live = model.connect(&self.at, &ns).await?;
            let report = verify::compare(&live, &shadow, buckets, &watermark, max_keys).await?;
            out.push((model, report));
        }
        meta.verified = Some(Verified {
            at: Utc::now(),
            verdicts: out.iter().map(|(m, r)| (m.name().to_owned(), r.verdict())).collect(),
        });
        self.replays.save(&meta).await?;
        Ok(out)
    }

    /// Makes replay `id`'s shadows the live models: refused unless its last
    /// verification found every partition matching or live-ahead (`force` overrides).
    /// Catches the shadows up with the stream from before the watermark, moves the
    /// serving pointers (one write per model), waits until every follower moved, and
    /// catches up once more with what the old copies took meanwhile, so no event is
    /// lost across the swap while traffic runs. The old copies stay until `drop`.
    pub async fn swap(&self, id: &ReplayId, force: bool) -> Result<SwapOutcome, ReplayError> {
        let started = Instant::now();
        let (mut meta, _) = self.replays.load(id).await?;
        match meta.state {
            State::Finished => {}
            State::Running => return Err(ReplayError::BadInput(format!("replay {id} has not finished"))),
            State::Swapped => return Err(ReplayError::BadInput(format!("replay {id} was swapped in already"))),
            State::Dropped => return Err(ReplayError::BadInput(format!("replay {id} was dropped"))),
        }
        if !force {
            let Some(verified) = &meta.verified else {
                return Err(ReplayError::BadInput(format!(
                    "replay {id} has not been verified: run cafe replay verify {id} first (--force swaps anyway)"
                )));
            };
            let differing: Vec<&str> = verified
                .verdicts
                .iter()
                .filter(|(_, v)| **v == verify::Verdict::Differs)
                .map(|(m, _)| m.as_str())
                .collect();
            if !differing.is_empty() {
                return Err(ReplayError::BadInput(format!(
                    "verification of replay {id} found differences in {} (--force swaps anyway)",
                    differing.join(", ")
                )));
            }
        }
        let LiveSide::Serving(pointers) = &self.live else {
            return Err(ReplayError::BadInput("a swap needs the serving pointers".into()));
        };
        if self.stream.is_none() {
            return Err(ReplayError::BadInput("a swap needs the stream to catch up from".into()));
        }
        let shadows = self.shadows(&meta).await?;
        let since = meta.watermark - CATCH_UP_MARGIN;
        let (reached, first) = self
            .catch_up(&shadows, &meta.params.filter, Default::default(), since)
            .await?;
        if let Some(hook) = &self.before_flip {
            hook().await;
        }
        let mut previous = std::collections::BTreeMap::new();
        let ns = meta.id.namespace();
        for model in meta.params.read_models()? {
            let before = pointers.get(model).await?;
            pointers.set(model, &ns).await?;
            previous.insert(model.name().to_owned(), before.to_string());
        }
        tokio::time::sleep(SWAP_GRACE).await;
        // Shards the first pass found empty are read from the same time again.
        let (_, second) = self.catch_up(&shadows, &meta.params.filter, reached, since).await?;
        let caught_up = first + second;
        meta.state = State::Swapped;
        meta.swapped = Some(Swapped {
            at: Utc::now(),
            forced: force,
            previous,
            caught_up,
        });
        self.replays.save(&meta).await?;
        Ok(SwapOutcome {
            models: meta.params.models.clone(),
            caught_up,
            forced: force,
            took: started.elapsed(),
        })
    }

    /// Drops what replay `id` leaves: its shadows, or, once swapped in, the copies that
    /// served before it. A copy that serves is never dropped.
    pub async fn drop(&self, id: &ReplayId) -> Result<Vec<(ReadModel, Namespace)>, ReplayError> {
        let (mut meta, _) = self.replays.load(id).await?;
        let mut dropped = Vec::new();
        for model in meta.params.read_models()? {
            let target = match &meta.swapped {
                Some(s) => match s.previous.get(model.name()).map(String::as_str) {
                    Some("live") | None => Namespace::Live,
                    Some(name) => Namespace::shadow(name)?,
                },
                None => meta.id.namespace(),
            };
            let serving = self.live.namespace(model).await?;
            if serving == target {
                return Err(ReplayError::BadInput(format!(
                    "the {model} copy in {target} serves: swap another copy in before dropping it"
                )));
            }
            match &target {
                Namespace::Live => model.drop_base(&self.at).await?,
                shadow => model.drop(&self.at, shadow).await?,
            }
            dropped.push((model, target));
        }
        meta.state = State::Dropped;
        self.replays.save(&meta).await?;
        Ok(dropped)
    }
}

struct RunContext<'a> {
    meta: &'a Meta,
    models: &'a [AnyProjection],
    progress: &'a Progress,
    governor: &'a Governor,
    stop: &'a CancellationToken,
}

/// Where a segment goes on after `page`: after its last event, or where the store says
/// when the page is empty; `None` at the segment's end.
fn next_after(page: &HistoryPage) -> Option<EventKey> {
    page.next.as_ref()?;
    page.events.last().map(|(k, _)| k.clone()).or_else(|| page.next.clone())
}

#[cfg(test)]
mod tests {
    use cafe_events::EventEnvelope;
    use cafe_projections::history::{self, HistoryConfig};

    use super::*;

    fn page(events: &[EventEnvelope], next: bool) -> HistoryPage {
        HistoryPage {
            events: events
                .iter()
                .map(|e| {
                    (
                        EventKey {
                            aggregate_id: e.aggregate_id.to_string(),
                            version: e.version,
                        },
                        e.clone(),
                    )
                })
                .collect(),
            next: next.then(|| EventKey {
                aggregate_id: "x".into(),
                version: 1,
            }),
        }
    }

    #[test]
    fn a_segment_goes_on_after_its_last_event_or_where_the_store_says() {
        let history = history::generate(HistoryConfig::default());
        let full = page(&history[..3], true);
        assert_eq!(next_after(&full).map(|k| k.version), Some(history[2].version));
        assert_eq!(
            next_after(&page(&[], true)).map(|k| k.aggregate_id),
            Some("x".to_owned())
        );
        assert_eq!(next_after(&page(&history[..3], false)), None);
    }

    #[test]
    fn the_recorded_rate_is_the_selected_events_over_their_span() {
        let at = |s: i64| DateTime::<Utc>::from_timestamp(1_800_000_000 + s, 0).unwrap_or_default();
        let segment = |selected, occurred| SegmentPlan {
            segment: 0,
            first: None,
            last: None,
            counts: Counts {
                events: selected,
                selected,
                occurred,
            },
        };
        let plan = Plan {
            watermark: at(100),
            segments: vec![
                segment(300, Some((at(10), at(40)))),
                segment(100, Some((at(0), at(20)))),
                segment(0, None),
            ],
            shards: Vec::new(),
        };
        assert_eq!(plan.recorded_rate(), Some(10.0), "400 events over 40 s");
        let one_instant = Plan {
            watermark: at(100),
            segments: vec![segment(1, Some((at(5), at(5))))],
            shards: Vec::new(),
        };
        assert_eq!(one_instant.recorded_rate(), None);
    }
}
