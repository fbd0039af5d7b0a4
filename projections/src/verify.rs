//! Proof that two copies of a read model agree, at any size.
//!
//! A replay's shadow and the live model can hold millions of rows, so neither is loaded
//! whole. Every row is reduced to a [`Row`]: the aggregate it belongs to, its key, the
//! aggregate version it reflects (where the model keeps one) and a 60-bit hash of its
//! canonical text. Rows fall into [`Buckets`] by their aggregate id, so all rows of one
//! aggregate share a bucket; a bucket's digest is its row count and the sum of its row
//! hashes, which does not depend on the order rows are read in. PostgreSQL and the
//! warehouse compute the digests in SQL; the other stores stream their rows through
//! [`Digests`], holding one counter pair per bucket.
//!
//! Only buckets whose digests differ are read row by row ([`compare`]), a few at a
//! time, and each differing key is judged:
//! - the live copy holds a newer version, or a row the shadow lacks, of an aggregate
//!   that moved after the shadow's end watermark: **live ahead**, not an error (the
//!   [`Watermark`] answers which aggregates moved);
//! - anything else is **differs**: same version with other content, a row the live copy
//!   lacks, a row or version the shadow lacks although the aggregate did not move.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;

use md5::{Digest as _, Md5};
use serde::Serialize;

use crate::error::ProjectionError;

/// Into how many partitions the comparison cuts a model: a bucket is the unit that is
/// read row by row when its digests differ, so more buckets mean smaller reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buckets(u32);

impl Buckets {
    /// The default: 256 buckets (a million rows read back ~4,000 at a time).
    pub const DEFAULT: Buckets = Buckets(256);

    /// `n` buckets, 1 to 65,536.
    pub fn new(n: u32) -> Result<Buckets, ProjectionError> {
        if (1..=65_536).contains(&n) {
            Ok(Buckets(n))
        } else {
            Err(ProjectionError::poison(
                "verify",
                format!("{n} buckets: must be 1 to 65536"),
            ))
        }
    }

    /// How many.
    pub fn count(self) -> u32 {
        self.0
    }

    /// The bucket of an aggregate id: the first 32 bits of its MD5, modulo the count.
    /// The SQL twin is [`Buckets::sql_postgres`].
    pub fn of(self, aggregate: &str) -> u32 {
        let d = Md5::digest(aggregate.as_bytes());
        u32::from_be_bytes([d[0], d[1], d[2], d[3]]) % self.0
    }

    /// The bucket of the text expression `expr`, in PostgreSQL.
    pub fn sql_postgres(self, expr: &str) -> String {
        format!(
            "((('x' || substr(md5({expr}), 1, 8))::bit(32)::bigint % {})::int)",
            self.0
        )
    }
}

/// The hash of a row's canonical text: its MD5's first 60 bits (small enough that SQL
/// can sum them as `bigint` without overflow per row). The SQL twin is
/// [`row_hash_sql_postgres`].
pub fn row_hash(text: &str) -> u64 {
    let d = Md5::digest(text.as_bytes());
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]) >> 4
}

/// [`row_hash`] of the text expression `expr`, in PostgreSQL.
pub fn row_hash_sql_postgres(expr: &str) -> String {
    format!("('x' || substr(md5({expr}), 1, 15))::bit(60)::bigint")
}

/// One row (or key, or document) of a model, reduced to what comparison needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Its bucket.
    pub bucket: u32,
    /// The aggregate it belongs to.
    pub aggregate: String,
    /// Unique within the model (table or kind first).
    pub key: String,
    /// The aggregate version the row reflects, where the model keeps one.
    pub version: Option<u64>,
    /// [`row_hash`] of its canonical text.
    pub hash: u64,
}

impl Row {
    /// A row from its canonical `text`.
    pub fn new(buckets: Buckets, aggregate: &str, key: String, version: Option<u64>, text: &str) -> Row {
        Row {
            bucket: buckets.of(aggregate),
            aggregate: aggregate.to_owned(),
            key,
            version,
            hash: row_hash(text),
        }
    }
}

/// One bucket's digest: order-independent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BucketDigest {
    /// Rows in it.
    pub rows: u64,
    /// Sum of their hashes.
    pub sum: u128,
}

/// A model that can be compared without being loaded.
pub trait Verifiable: Send + Sync {
    /// Every bucket's digest, indexed by bucket.
    fn digests(&self, buckets: Buckets) -> impl Future<Output = Result<Vec<BucketDigest>, ProjectionError>> + Send;

    /// The rows in the buckets `which`.
    fn rows(&self, buckets: Buckets, which: &[u32]) -> impl Future<Output = Result<Vec<Row>, ProjectionError>> + Send;
}

/// Digests accumulated from streamed rows (for stores that cannot compute them in place),
/// and the rows of chosen buckets kept on the way.
#[derive(Debug)]
pub struct Digests {
    buckets: Buckets,
    digests: Vec<BucketDigest>,
    keep: BTreeSet<u32>,
    kept: Vec<Row>,
}

impl Digests {
    /// Counting every bucket, keeping the rows of `keep`.
    pub fn new(buckets: Buckets, keep: &[u32]) -> Digests {
        Digests {
            buckets,
            digests: vec![BucketDigest::default(); buckets.0 as usize],
            keep: keep.iter().copied().collect(),
            kept: Vec::new(),
        }
    }

    /// Adds one row.
    pub fn add(&mut self, aggregate: &str, key: String, version: Option<u64>, text: &str) {
        let row = Row::new(self.buckets, aggregate, key, version, text);
        if let Some(d) = self.digests.get_mut(row.bucket as usize) {
            d.rows += 1;
            d.sum += u128::from(row.hash);
        }
        if self.keep.contains(&row.bucket) {
            self.kept.push(row);
        }
    }

    /// The digests.
    pub fn digests(self) -> Vec<BucketDigest> {
        self.digests
    }

    /// The kept rows.
    pub fn kept(self) -> Vec<Row> {
        self.kept
    }
}

/// Turns SQL result rows `(bucket, count, sum)` into digests.
pub fn digests_from_sql(
    buckets: Buckets,
    rows: impl IntoIterator<Item = (i64, i64, String)>,
) -> Result<Vec<BucketDigest>, ProjectionError> {
    let mut out = vec![BucketDigest::default(); buckets.0 as usize];
    for (bucket, count, sum) in rows {
        let slot = usize::try_from(bucket)
            .ok()
            .and_then(|b| out.get_mut(b))
            .ok_or_else(|| ProjectionError::poison("verify", format!("bucket {bucket} out of range")))?;
        slot.rows = u64::try_from(count).unwrap_or_default();
        slot.sum = sum
            .split('.')
            .next()
            .unwrap_or_default()
            .parse()
            .map_err(|e| ProjectionError::poison("verify", format!("digest sum {sum:?}: {e}")))?;
    }
    Ok(out)
}

/// What the shadow's end watermark says about aggregates.
pub trait Watermark: Send + Sync {
    /// Of `aggregates`, those that have events after the watermark (the live copy may
    /// rightly be ahead of the shadow for them).
    fn moved_after(
        &self,
        aggregates: &[String],
    ) -> impl Future<Output = Result<BTreeSet<String>, ProjectionError>> + Send;
}

/// A watermark after which nothing happened: both copies must hold the same history
/// (two full rebuilds, a rebuild taken after traffic stopped).
#[derive(Debug, Clone, Copy, Default)]
pub struct Settled;

impl Watermark for Settled {
    async fn moved_after(&self, _: &[String]) -> Result<BTreeSet<String>, ProjectionError> {
        Ok(BTreeSet::new())
    }
}

/// A bucket's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Same rows.
    Match,
    /// The live copy only holds newer versions of aggregates that moved after the
    /// watermark.
    LiveAhead,
    /// A row is wrong or missing on one side.
    Differs,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Match => "match",
            Verdict::LiveAhead => "live ahead",
            Verdict::Differs => "differs",
        })
    }
}

/// How one key differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum KeyDiff {
    /// Both copies hold it at the same version (or the model keeps none) with other
    /// content.
    Changed {
        /// The key.
        key: String,
        /// The version both hold.
        version: Option<u64>,
    },
    /// The live copy has a newer version of an aggregate that moved after the
    /// watermark (not an error).
    LiveAhead {
        /// The key.
        key: String,
        /// The live version (none where the model keeps none).
        live: Option<u64>,
        /// The shadow's (none when it lacks the row).
        shadow: Option<u64>,
    },
    /// The live copy lacks a row the shadow has.
    MissingInLive {
        /// The key.
        key: String,
    },
    /// The shadow lacks a row (or a version) of an aggregate that did not move after
    /// the watermark: the rebuild lost it.
    MissingInShadow {
        /// The key.
        key: String,
        /// The live version.
        live: Option<u64>,
        /// The shadow's, if it has the row at an older one.
        shadow: Option<u64>,
    },
    /// The shadow holds a newer version than the live copy.
    LiveBehind {
        /// The key.
        key: String,
        /// The live version.
        live: Option<u64>,
        /// The shadow's.
        shadow: Option<u64>,
    },
}

impl KeyDiff {
    /// The key.
    pub fn key(&self) -> &str {
        match self {
            KeyDiff::Changed { key, .. }
            | KeyDiff::LiveAhead { key, .. }
            | KeyDiff::MissingInLive { key }
            | KeyDiff::MissingInShadow { key, .. }
            | KeyDiff::LiveBehind { key, .. } => key,
        }
    }

    /// Whether it is an error (everything but live ahead).
    pub fn is_error(&self) -> bool {
        !matches!(self, KeyDiff::LiveAhead { .. })
    }
}

/// One bucket's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BucketReport {
    /// The bucket.
    pub bucket: u32,
    /// Its verdict.
    pub verdict: Verdict,
    /// The live digest.
    pub live: BucketDigest,
    /// The shadow's.
    pub shadow: BucketDigest,
    /// Differing keys found in it (errors first).
    pub keys: usize,
}

/// The comparison of two copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Every bucket, in order.
    pub buckets: Vec<BucketReport>,
    /// Differing keys, at most the limit asked for, errors first.
    pub keys: Vec<KeyDiff>,
    /// Differing keys left out of [`Report::keys`].
    pub keys_left_out: usize,
}

impl Report {
    /// Buckets with each verdict.
    pub fn count(&self, verdict: Verdict) -> usize {
        self.buckets.iter().filter(|b| b.verdict == verdict).count()
    }

    /// The worst verdict of any bucket: what a swap is judged on.
    pub fn verdict(&self) -> Verdict {
        self.buckets.iter().map(|b| b.verdict).max().unwrap_or(Verdict::Match)
    }
}

/// How many differing buckets are read back at once: bounds memory to a few buckets'
/// rows whatever the model's size.
const BUCKETS_PER_PASS: usize = 16;

/// Compares `live` with `shadow`: digests first, then the rows of the buckets whose
/// digests differ, judged against `watermark`. Lists at most `max_keys` keys.
pub async fn compare<L: Verifiable, S: Verifiable, W: Watermark>(
    live: &L,
    shadow: &S,
    buckets: Buckets,
    watermark: &W,
    max_keys: usize,
) -> Result<Report, ProjectionError> {
    let (live_digests, shadow_digests) = futures::try_join!(live.digests(buckets), shadow.digests(buckets))?;
    let mut report = Report {
        buckets: (0..buckets.0)
            .map(|b| {
                let i = b as usize;
                let (l, s) = (
                    live_digests.get(i).copied().unwrap_or_default(),
                    shadow_digests.get(i).copied().unwrap_or_default(),
                );
                BucketReport {
                    bucket: b,
                    verdict: Verdict::Match,
                    live: l,
                    shadow: s,
                    keys: 0,
                }
            })
            .collect(),
        keys: Vec::new(),
        keys_left_out: 0,
    };
    let differing: Vec<u32> = report
        .buckets
        .iter()
        .filter(|b| b.live != b.shadow)
        .map(|b| b.bucket)
        .collect();
    let (mut errors, mut ahead, mut total) = (Vec::new(), Vec::new(), 0);
    for pass in differing.chunks(BUCKETS_PER_PASS) {
        let (live_rows, shadow_rows) = futures::try_join!(live.rows(buckets, pass), shadow.rows(buckets, pass))?;
        for diff in judge(live_rows, shadow_rows, watermark).await? {
            let (bucket, diff) = diff;
            if let Some(b) = report.buckets.get_mut(bucket as usize) {
                b.keys += 1;
                let verdict = if diff.is_error() {
                    Verdict::Differs
                } else {
                    Verdict::LiveAhead
                };
                b.verdict = b.verdict.max(verdict);
            }
            total += 1;
            let list = if diff.is_error() { &mut errors } else { &mut ahead };
            if list.len() < max_keys {
                list.push(diff);
            }
        }
    }
    // Errors first; what is merely ahead fills the rest of the list.
    report.keys = errors;
    report.keys.extend(ahead);
    report.keys.truncate(max_keys);
    report.keys_left_out = total - report.keys.len();
    Ok(report)
}

/// Judges the rows of some buckets, key by key; answers `(bucket, diff)` per differing
/// key.
async fn judge<W: Watermark>(
    live: Vec<Row>,
    shadow: Vec<Row>,
    watermark: &W,
) -> Result<Vec<(u32, KeyDiff)>, ProjectionError> {
    let mut shadow: HashMap<String, Row> = shadow.into_iter().map(|r| (r.key.clone(), r)).collect();
    let mut out = Vec::new();
    // Keys whose verdict depends on whether their aggregate moved after the watermark.
    let mut pending: Vec<(Row, Option<Row>)> = Vec::new();
    for l in live {
        match shadow.remove(&l.key) {
            Some(s) if s.hash == l.hash => {}
            Some(s) => match (l.version, s.version) {
                (Some(lv), Some(sv)) if lv > sv => pending.push((l, Some(s))),
                (Some(lv), Some(sv)) if lv < sv => out.push((
                    l.bucket,
                    KeyDiff::LiveBehind {
                        key: l.key,
                        live: Some(lv),
                        shadow: Some(sv),
                    },
                )),
                _ => out.push((
                    l.bucket,
                    KeyDiff::Changed {
                        key: l.key,
                        version: l.version,
                    },
                )),
            },
            None => pending.push((l, None)),
        }
    }
    for (_, s) in shadow {
        out.push((s.bucket, KeyDiff::MissingInLive { key: s.key }));
    }
    let aggregates: Vec<String> = pending
        .iter()
        .map(|(l, _)| l.aggregate.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let moved = if aggregates.is_empty() {
        BTreeSet::new()
    } else {
        watermark.moved_after(&aggregates).await?
    };
    for (l, s) in pending {
        let shadow_version = s.as_ref().and_then(|s| s.version);
        let diff = if moved.contains(&l.aggregate) {
            KeyDiff::LiveAhead {
                key: l.key,
                live: l.version,
                shadow: shadow_version,
            }
        } else {
            KeyDiff::MissingInShadow {
                key: l.key,
                live: l.version,
                shadow: shadow_version,
            }
        };
        out.push((l.bucket, diff));
    }
    out.sort_by(|a, b| (a.0, a.1.key()).cmp(&(b.0, b.1.key())));
    Ok(out)
}

/// Rows grouped per bucket, for the SQL adapters' `rows` answers.
pub fn rows_from_sql(rows: impl IntoIterator<Item = (i64, String, String, Option<i64>, i64)>) -> Vec<Row> {
    rows.into_iter()
        .map(|(bucket, aggregate, key, version, hash)| Row {
            bucket: u32::try_from(bucket).unwrap_or(u32::MAX),
            aggregate,
            key,
            version: version.and_then(|v| u64::try_from(v).ok()),
            hash: u64::try_from(hash).unwrap_or_default(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// A model held in memory, for the judging logic.
    struct Rows(Vec<(String, String, Option<u64>, String)>);

    impl Verifiable for Rows {
        async fn digests(&self, buckets: Buckets) -> Result<Vec<BucketDigest>, ProjectionError> {
            let mut d = Digests::new(buckets, &[]);
            for (agg, key, v, text) in &self.0 {
                d.add(agg, key.clone(), *v, text);
            }
            Ok(d.digests())
        }

        async fn rows(&self, buckets: Buckets, which: &[u32]) -> Result<Vec<Row>, ProjectionError> {
            let mut d = Digests::new(buckets, which);
            for (agg, key, v, text) in &self.0 {
                d.add(agg, key.clone(), *v, text);
            }
            Ok(d.kept())
        }
    }

    struct Moved(Vec<&'static str>);

    impl Watermark for Moved {
        async fn moved_after(&self, aggregates: &[String]) -> Result<BTreeSet<String>, ProjectionError> {
            Ok(aggregates
                .iter()
                .filter(|a| self.0.contains(&a.as_str()))
                .cloned()
                .collect())
        }
    }

    fn row(agg: &str, key: &str, v: u64, text: &str) -> (String, String, Option<u64>, String) {
        (agg.to_owned(), key.to_owned(), Some(v), text.to_owned())
    }

    fn model(extra: Vec<(String, String, Option<u64>, String)>) -> Rows {
        let mut rows: Vec<_> = (0..200)
            .map(|i| row(&format!("o-{i}"), &format!("orders:o-{i}"), 3, &format!("total {i}")))
            .collect();
        rows.extend(extra);
        Rows(rows)
    }

    #[tokio::test]
    async fn equal_copies_match_in_every_bucket_whatever_the_row_order() {
        let live = model(vec![]);
        let mut shadow = model(vec![]);
        shadow.0.reverse();
        let r = compare(&live, &shadow, Buckets::new(16).unwrap(), &Settled, 10)
            .await
            .unwrap();
        assert_eq!(r.verdict(), Verdict::Match);
        assert_eq!(r.count(Verdict::Match), 16);
        assert!(r.keys.is_empty());
    }

    #[tokio::test]
    async fn each_kind_of_difference_is_told_apart() {
        let mut live = model(vec![row("o-new", "orders:o-new", 1, "placed after")]);
        let shadow = model(vec![row("o-lost", "orders:o-lost", 2, "deleted live")]);
        live.0[5] = row("o-5", "orders:o-5", 3, "total 99999"); // a changed total
        live.0[6] = row("o-6", "orders:o-6", 4, "total 6 then more"); // moved on
        live.0[7] = row("o-7", "orders:o-7", 4, "total 7 then more"); // newer, never moved
        let moved = Moved(vec!["o-new", "o-6"]);
        let r = compare(&live, &shadow, Buckets::new(8).unwrap(), &moved, 100)
            .await
            .unwrap();
        let by_key: BTreeMap<&str, &KeyDiff> = r.keys.iter().map(|k| (k.key(), k)).collect();
        assert_eq!(
            by_key["orders:o-5"],
            &KeyDiff::Changed {
                key: "orders:o-5".into(),
                version: Some(3)
            }
        );
        assert!(matches!(
            by_key["orders:o-6"],
            KeyDiff::LiveAhead {
                live: Some(4),
                shadow: Some(3),
                ..
            }
        ));
        assert!(matches!(
            by_key["orders:o-new"],
            KeyDiff::LiveAhead {
                live: Some(1),
                shadow: None,
                ..
            }
        ));
        assert!(matches!(
            by_key["orders:o-7"],
            KeyDiff::MissingInShadow {
                live: Some(4),
                shadow: Some(3),
                ..
            }
        ));
        assert!(matches!(by_key["orders:o-lost"], KeyDiff::MissingInLive { .. }));
        assert_eq!(r.keys.len(), 5);
        assert_eq!(r.verdict(), Verdict::Differs);
        // Errors are listed before keys that are merely ahead.
        assert!(!r.keys[r.keys.len() - 1].is_error() && r.keys[0].is_error());
        let buckets = Buckets::new(8).unwrap();
        let verdict_of = |agg: &str| r.buckets[buckets.of(agg) as usize].verdict;
        assert_eq!(verdict_of("o-5"), Verdict::Differs);
        if buckets.of("o-new") != buckets.of("o-5")
            && buckets.of("o-new") != buckets.of("o-7")
            && buckets.of("o-new") != buckets.of("o-lost")
        {
            assert_eq!(verdict_of("o-new"), Verdict::LiveAhead);
        }
    }

    #[tokio::test]
    async fn a_live_copy_only_ahead_is_not_an_error_and_the_key_list_is_bounded() {
        let live = Rows(
            (0..50)
                .map(|i| row(&format!("a{i}"), &format!("k{i}"), 2, "new"))
                .collect(),
        );
        let shadow = Rows(
            (0..50)
                .map(|i| row(&format!("a{i}"), &format!("k{i}"), 1, "old"))
                .collect(),
        );
        let all: Vec<&'static str> = (0..50).map(|i| &*format!("a{i}").leak()).collect();
        let r = compare(&live, &shadow, Buckets::DEFAULT, &Moved(all), 7).await.unwrap();
        assert_eq!(r.verdict(), Verdict::LiveAhead);
        assert_eq!((r.keys.len(), r.keys_left_out), (7, 43));
        let r = compare(&live, &shadow, Buckets::DEFAULT, &Settled, 7).await.unwrap();
        assert_eq!(r.verdict(), Verdict::Differs);
    }

    #[test]
    fn sql_sums_are_read_exactly() {
        let d = digests_from_sql(Buckets::new(2).unwrap(), [(1, 3, "3458764513820540927000".to_owned())]).unwrap();
        assert_eq!(d[1].rows, 3);
        assert_eq!(d[1].sum, 3_458_764_513_820_540_927_000);
        assert!(digests_from_sql(Buckets::new(2).unwrap(), [(2, 1, "1".to_owned())]).is_err());
    }
}
