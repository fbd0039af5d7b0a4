//! A replay's record: its parameters, its end watermark and its per-segment checkpoints,
//! kept in the replays table under the replay's id. Nothing here is shared with the
//! live consumers: their leases and checkpoints live in the lease table.

use std::collections::HashMap;
use std::fmt;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::AttributeValue;
use cafe_events::AggregateType;
use cafe_producers::store::EventKey;
use cafe_projections::catalog::{Namespace, ReadModel};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::ReplayError;

/// A replay's id: twelve hex digits, also the suffix of its shadow namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ReplayId(String);

impl ReplayId {
    /// A new id (random bits of a UUIDv7).
    pub fn new() -> ReplayId {
        let simple = uuid::Uuid::now_v7().simple().to_string();
        ReplayId(simple[simple.len() - 12..].to_owned())
    }

    /// An id typed by an operator: checked before it reaches a store.
    pub fn parse(s: &str) -> Result<ReplayId, ReplayError> {
        if s.len() == 12 && s.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)) {
            Ok(ReplayId(s.to_owned()))
        } else {
            Err(ReplayError::Unknown(s.to_owned()))
        }
    }

    /// The namespace of this replay's shadow copies.
    pub fn namespace(&self) -> Namespace {
        Namespace::Shadow(format!("replay_{}", self.0))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for ReplayId {
    fn default() -> Self {
        ReplayId::new()
    }
}

impl fmt::Display for ReplayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which events a replay takes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// Only events that occurred at or after this.
    pub since: Option<DateTime<Utc>>,
    /// Only events that occurred at or before this (the watermark is the earlier of
    /// this and the creation time less the settle time).
    pub until: Option<DateTime<Utc>>,
    /// Only aggregates of this type (its `as_str` name).
    pub aggregate_type: Option<String>,
    /// Only this aggregate (its id as text).
    pub aggregate: Option<String>,
}

impl Filter {
    /// Checks the filter: a reversed range or an unknown type is bad input.
    pub fn check(&self) -> Result<(), ReplayError> {
        if let (Some(since), Some(until)) = (self.since, self.until)
            && since > until
        {
            return Err(ReplayError::BadInput(format!(
                "the time range is reversed: --since {} is after --until {}",
                since.to_rfc3339(),
                until.to_rfc3339()
            )));
        }
        if let Some(t) = &self.aggregate_type
            && !AggregateType::ALL.iter().any(|a| a.as_str() == t)
        {
            let known: Vec<&str> = AggregateType::ALL.iter().map(|a| a.as_str()).collect();
            return Err(ReplayError::BadInput(format!(
                "no aggregate type is called {t:?}; the types are {}",
                known.join(", ")
            )));
        }
        Ok(())
    }

    /// Whether an event of `aggregate` (of type `kind`) that occurred at `at` is taken,
    /// given the replay's `watermark`.
    pub fn takes(&self, kind: AggregateType, aggregate: &str, at: DateTime<Utc>, watermark: DateTime<Utc>) -> bool {
        at <= watermark
            && self.since.is_none_or(|s| at >= s)
            && self.aggregate_type.as_deref().is_none_or(|t| t == kind.as_str())
            && self.aggregate.as_deref().is_none_or(|a| a == aggregate)
    }
}

/// Where a replay reads its events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Source {
    /// The DynamoDB event store: the whole history, by parallel Scan segments.
    #[default]
    EventStore,
    /// The Kinesis stream (its retention window), one segment per shard.
    Stream {
        /// The shards read, each from a sequence number or its start (or `--since`),
        /// to a sequence number or the watermark.
        shards: Vec<ShardRange>,
    },
}

/// One shard's part of a stream replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRange {
    /// The shard.
    pub shard: String,
    /// The first record read (none: its start, or `--since`).
    pub from_sequence: Option<String>,
    /// The last record read (none: up to the watermark).
    pub to_sequence: Option<String>,
}

impl ShardRange {
    /// `SHARD`, `SHARD:FROM..` or `SHARD:FROM..TO`, as an operator types it.
    pub fn parse(s: &str) -> Result<ShardRange, ReplayError> {
        let bad = || {
            ReplayError::BadInput(format!(
                "shard range {s:?}: expected SHARD, SHARD:FROM.. or SHARD:FROM..TO (sequence numbers)"
            ))
        };
        let digits = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
        let Some((shard, range)) = s.split_once(':') else {
            return if s.is_empty() {
                Err(bad())
            } else {
                Ok(ShardRange {
                    shard: s.to_owned(),
                    from_sequence: None,
                    to_sequence: None,
                })
            };
        };
        let (from, to) = range.split_once("..").ok_or_else(bad)?;
        if shard.is_empty() || !digits(from) || !(to.is_empty() || digits(to)) {
            return Err(bad());
        }
        // Kinesis writes sequence numbers without leading zeros; compared as text by
        // length first, so an operator's zeros go.
        let bare = |v: &str| match v.trim_start_matches('0') {
            "" => "0".to_owned(),
            t => t.to_owned(),
        };
        let range = ShardRange {
            shard: shard.to_owned(),
            from_sequence: Some(bare(from)),
            to_sequence: (!to.is_empty()).then(|| bare(to)),
        };
        if let (Some(f), Some(t)) = (&range.from_sequence, &range.to_sequence)
            && cafe_consumers::retrieval::is_before(t, f)
        {
            return Err(ReplayError::BadInput(format!("shard range {s:?} is reversed")));
        }
        Ok(range)
    }
}

/// What a replay was asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Where it reads.
    #[serde(default)]
    pub source: Source,
    /// The read models it rebuilds (by catalog name).
    pub models: Vec<String>,
    /// Which events.
    pub filter: Filter,
    /// Parallel Scan segments (a stream replay: one per shard).
    pub segments: u32,
    /// Events per Scan page.
    pub page_size: u32,
    /// Events per second at most (none: as fast as the stores take them).
    pub max_rate: Option<u32>,
    /// The objectives the governor holds live projection to (none: ungoverned).
    #[serde(default)]
    pub slo: Option<crate::governor::Slo>,
}

impl Params {
    /// Every event of the event store into `models`, four Scan segments of a thousand,
    /// unpaced: the rebuild the invariant checker, a chaos repair and the query storm
    /// run, where nothing but the rebuild itself is being asked for.
    pub fn full_rebuild(models: &[ReadModel]) -> Params {
        Params {
            source: Source::EventStore,
            models: models.iter().map(|m| m.name().to_owned()).collect(),
            filter: Filter::default(),
            segments: 4,
            page_size: 1000,
            max_rate: None,
            slo: None,
        }
    }

    /// The read models, parsed.
    pub fn read_models(&self) -> Result<Vec<ReadModel>, ReplayError> {
        self.models
            .iter()
            .map(|m| m.parse::<ReadModel>().map_err(ReplayError::from))
            .collect()
    }
}

/// Where a replay is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Created; reading (or killed while reading: resume it).
    Running,
    /// Every segment read to its end.
    Finished,
    /// Its shadows serve as the live models.
    Swapped,
    /// Its shadows were dropped.
    Dropped,
}

/// A replay's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// Its id.
    pub id: ReplayId,
    /// What it was asked.
    pub params: Params,
    /// Events that occurred after this are not replayed.
    pub watermark: DateTime<Utc>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// Where it is.
    pub state: State,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// The event store's item count when it started (an estimate on AWS, refreshed
    /// there every few hours): the progress bar's length.
    pub total_estimate: Option<u64>,
    /// Seconds spent waiting on the rate limit.
    pub throttled_secs: f64,
    /// The last verification's verdict per model.
    #[serde(default)]
    pub verified: Option<Verified>,
    /// The swap, once done.
    #[serde(default)]
    pub swapped: Option<Swapped>,
}

/// A verification's outcome, as a swap judges it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// When.
    pub at: DateTime<Utc>,
    /// Per model (catalog name): its worst partition's verdict.
    pub verdicts: std::collections::BTreeMap<String, cafe_projections::verify::Verdict>,
}

/// A swap's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Swapped {
    /// When it finished.
    pub at: DateTime<Utc>,
    /// Whether it overrode verification.
    pub forced: bool,
    /// Per model (catalog name): the copy that served before (`live` for the base
    /// names), kept until the replay is dropped.
    pub previous: std::collections::BTreeMap<String, String>,
    /// Events applied by the catch-up after the watermark.
    pub caught_up: u64,
}

/// One Scan segment's checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// Its number.
    pub segment: u32,
    /// The key of the last event applied (none: from the segment's start).
    pub after: Option<EventKey>,
    /// A stream replay's: the sequence number of the last record applied.
    #[serde(default)]
    pub position: Option<String>,
    /// Pages applied.
    pub pages: u64,
    /// Events read (taken or not).
    pub read: u64,
    /// Events applied.
    pub applied: u64,
    /// Events a model refused as poison (logged with their key).
    pub refused: u64,
    /// Whether the segment was read to its end.
    pub done: bool,
}

/// A replay's progress in figures: what `cafe replay status` prints and the lag
/// dashboard shows, computed once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Its id.
    pub id: String,
    /// Where it is.
    pub state: State,
    /// The read models it rebuilds.
    pub models: Vec<String>,
    /// Events read so far (taken or not).
    pub read: u64,
    /// Events applied so far.
    pub applied: u64,
    /// The event store's item count when it started (approximate on AWS).
    pub total_estimate: Option<u64>,
    /// Read over the estimate, at most 1 (None without an estimate).
    pub fraction: Option<f64>,
    /// Segments in all.
    pub segments: usize,
    /// Segments read to their end.
    pub segments_done: usize,
    /// Events read per second since creation (until finished).
    pub events_per_s: f64,
    /// Seconds left at that rate, while running and short of the estimate. The estimate
    /// is approximate (DynamoDB refreshes its item count about every six hours), so the
    /// ETA is too; none once it is passed.
    pub eta_s: Option<f64>,
    /// Seconds spent waiting on the rate limit.
    pub throttled_secs: f64,
}

impl Summary {
    /// The figures of `meta` and its `segments` at `now`.
    pub fn of(meta: &Meta, segments: &[Segment], now: DateTime<Utc>) -> Summary {
        let read: u64 = segments.iter().map(|s| s.read).sum();
        let applied: u64 = segments.iter().map(|s| s.applied).sum();
        let until = meta.finished_at.unwrap_or(now);
        let secs = (until - meta.created_at).num_milliseconds().max(1) as f64 / 1000.0;
        let rate = read as f64 / secs;
        let eta_s = match (meta.state, meta.total_estimate) {
            (State::Running, Some(total)) if total > read && rate > 0.0 => Some((total - read) as f64 / rate),
            _ => None,
        };
        Summary {
            id: meta.id.as_str().to_owned(),
            state: meta.state,
            models: meta.params.models.clone(),
            read,
            applied,
            total_estimate: meta.total_estimate,
            fraction: meta
                .total_estimate
                .filter(|t| *t > 0)
                .map(|t| (read as f64 / t as f64).min(1.0)),
            segments: segments.len(),
            segments_done: segments.iter().filter(|s| s.done).count(),
            events_per_s: rate,
            eta_s,
            throttled_secs: meta.throttled_secs,
        }
    }
}

/// The replays table.
#[derive(Debug, Clone)]
pub struct Replays {
    client: Client,
    table: String,
}

/// A string attribute of an item, empty when it has none.
fn text(item: &HashMap<String, AttributeValue>, name: &str) -> String {
    item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default()
}

fn record_error(e: impl fmt::Display) -> ReplayError {
    ReplayError::Record(e.to_string())
}

impl Replays {
    /// Over an existing table.
    pub fn new(client: Client, table: impl Into<String>) -> Replays {
        Replays {
            client,
            table: table.into(),
        }
    }

    async fn put(&self, id: &ReplayId, part: String, doc: String) -> Result<(), ReplayError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("replay_id", AttributeValue::S(id.as_str().to_owned()))
            .item("part", AttributeValue::S(part))
            .item("doc", AttributeValue::S(doc))
            .send()
            .await
            .map_err(|e| record_error(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        Ok(())
    }

    /// Writes a replay's record (creating or updating it).
    pub async fn save(&self, meta: &Meta) -> Result<(), ReplayError> {
        let doc = serde_json::to_string(meta).map_err(record_error)?;
        self.put(&meta.id, "meta".to_owned(), doc).await
    }

    /// Writes a segment's checkpoint.
    pub async fn save_segment(&self, id: &ReplayId, segment: &Segment) -> Result<(), ReplayError> {
        let doc = serde_json::to_string(segment).map_err(record_error)?;
        self.put(id, format!("segment#{:05}", segment.segment), doc).await
    }

    /// A replay's record and its segments' checkpoints (segments never checkpointed
    /// read as fresh).
    pub async fn load(&self, id: &ReplayId) -> Result<(Meta, Vec<Segment>), ReplayError> {
        let items: Vec<HashMap<String, AttributeValue>> = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("replay_id = :id")
            .expression_attribute_values(":id", AttributeValue::S(id.as_str().to_owned()))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| record_error(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        let doc = |item: &HashMap<String, AttributeValue>| text(item, "doc");
        let part = |item: &HashMap<String, AttributeValue>| text(item, "part");
        let meta: Meta = items
            .iter()
            .find(|i| part(i) == "meta")
            .map(|i| serde_json::from_str(&doc(i)).map_err(record_error))
            .transpose()?
            .ok_or_else(|| ReplayError::Unknown(id.to_string()))?;
        let mut segments: Vec<Segment> = (0..meta.params.segments)
            .map(|segment| Segment {
                segment,
                ..Segment::default()
            })
            .collect();
        for item in items.iter().filter(|i| part(i).starts_with("segment#")) {
            let s: Segment = serde_json::from_str(&doc(item)).map_err(record_error)?;
            if let Some(slot) = segments.get_mut(s.segment as usize) {
                *slot = s;
            }
        }
        Ok((meta, segments))
    }

    /// Every replay's record, newest first.
    pub async fn list(&self) -> Result<Vec<Meta>, ReplayError> {
        let items: Vec<HashMap<String, AttributeValue>> = self
            .client
            .scan()
            .table_name(&self.table)
            .filter_expression("part = :meta")
            .expression_attribute_values(":meta", AttributeValue::S("meta".to_owned()))
            .into_paginator()
            .items()
            .send()
            .collect::<Result<Vec<_>, _>>()
            .await
            .map_err(|e| record_error(aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
        let mut out = items
            .iter()
            .filter_map(|i| i.get("doc").and_then(|d| d.as_s().ok()))
            .map(|d| serde_json::from_str::<Meta>(d).map_err(record_error))
            .collect::<Result<Vec<_>, _>>()?;
        out.sort_by_key(|m| std::cmp::Reverse(m.created_at));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_gives_progress_rate_and_an_eta_only_while_running_short_of_the_estimate() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let mut meta = Meta {
            id: ReplayId::new(),
            params: Params {
                source: Source::default(),
                models: vec!["orders".into()],
                filter: Filter::default(),
                segments: 2,
                page_size: 100,
                max_rate: None,
                slo: None,
            },
            watermark: t("2026-11-30T10:00:00Z"),
            created_at: t("2026-11-30T10:00:00Z"),
            state: State::Running,
            finished_at: None,
            total_estimate: Some(1_000),
            throttled_secs: 1.5,
            verified: None,
            swapped: None,
        };
        let seg = |read, done| Segment {
            read,
            applied: read,
            done,
            ..Segment::default()
        };
        let segments = [seg(200, true), seg(300, false)];
        let now = t("2026-11-30T10:00:10Z");
        let s = Summary::of(&meta, &segments, now);
        assert_eq!((s.read, s.segments, s.segments_done), (500, 2, 1));
        assert!((s.events_per_s - 50.0).abs() < 1e-9);
        assert_eq!(s.fraction, Some(0.5));
        assert_eq!(s.eta_s, Some(10.0));
        // Past the (approximate) estimate: no ETA, progress capped.
        let more = [seg(700, true), seg(600, true)];
        let s = Summary::of(&meta, &more, now);
        assert_eq!((s.eta_s, s.fraction), (None, Some(1.0)));
        // Finished: the rate is over its own run, not until now.
        meta.state = State::Finished;
        meta.finished_at = Some(t("2026-11-30T10:00:05Z"));
        let s = Summary::of(&meta, &segments, t("2026-11-30T11:00:00Z"));
        assert!((s.events_per_s - 100.0).abs() < 1e-9);
        assert_eq!(s.eta_s, None);
    }

    #[test]
    fn ids_are_checked_and_name_their_namespace() {
        let id = ReplayId::new();
        assert_eq!(ReplayId::parse(id.as_str()).ok(), Some(id.clone()));
        assert_eq!(id.namespace(), Namespace::shadow(&format!("replay_{id}")).unwrap());
        for bad in ["", "0123456789ab0", "0123456789AB", "../../etc/pa", "0123456789ag"] {
            assert!(matches!(ReplayId::parse(bad), Err(ReplayError::Unknown(_))), "{bad:?}");
        }
    }

    #[test]
    fn shard_ranges_parse_as_typed_and_refuse_malformed_or_reversed_ones() {
        let r = ShardRange::parse("shardId-000000000001:00100..200").unwrap();
        assert_eq!(r.shard, "shardId-000000000001");
        assert_eq!(
            (r.from_sequence.as_deref(), r.to_sequence.as_deref()),
            (Some("100"), Some("200"))
        );
        let open = ShardRange::parse("s:5..").unwrap();
        assert_eq!((open.from_sequence.as_deref(), open.to_sequence), (Some("5"), None));
        assert_eq!(ShardRange::parse("s").unwrap().from_sequence, None);
        // Compared as numbers: 99 comes before 0100.
        assert!(ShardRange::parse("s:99..0100").is_ok());
        for bad in ["", ":1..", "s:x..", "s:1", "s:1..y", "s:1999..200"] {
            assert!(ShardRange::parse(bad).is_err_and(|e| e.is_usage()), "{bad}");
        }
    }

    #[test]
    fn filters_refuse_a_reversed_range_and_unknown_types() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let reversed = Filter {
            since: Some(t("2026-11-30T10:00:00Z")),
            until: Some(t("2026-11-30T09:00:00Z")),
            ..Filter::default()
        };
        assert!(reversed.check().unwrap_err().is_usage());
        let typo = Filter {
            aggregate_type: Some("orders".into()),
            ..Filter::default()
        };
        let err = typo.check().unwrap_err();
        assert!(err.to_string().contains("stock_item"), "{err}");
        assert!(Filter::default().check().is_ok());
    }

    #[test]
    fn an_event_is_taken_only_inside_every_bound() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let wm = t("2026-11-30T12:00:00Z");
        let f = Filter {
            since: Some(t("2026-11-30T08:00:00Z")),
            aggregate_type: Some("order".into()),
            ..Filter::default()
        };
        assert!(f.takes(AggregateType::Order, "o-1", t("2026-11-30T09:00:00Z"), wm));
        assert!(!f.takes(AggregateType::Order, "o-1", t("2026-11-30T12:00:01Z"), wm));
        assert!(!f.takes(AggregateType::Order, "o-1", t("2026-11-30T07:59:59Z"), wm));
        assert!(!f.takes(AggregateType::MenuItem, "m-1", t("2026-11-30T09:00:00Z"), wm));
    }
}
