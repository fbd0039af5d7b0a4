//! Which aggregates moved after a replay's watermark, asked of the event store: the
//! live copy may rightly be ahead of the shadow for exactly those.

use std::collections::BTreeSet;

use cafe_producers::store::HistoryReader;
use cafe_projections::ProjectionError;
use cafe_projections::verify::Watermark;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};

/// How many aggregates' histories are read at once.
const CONCURRENCY: usize = 16;

/// The event store's answer about a watermark.
#[derive(Debug)]
pub struct StoreWatermark<'a, H> {
    history: &'a H,
    watermark: DateTime<Utc>,
}

impl<'a, H: HistoryReader> StoreWatermark<'a, H> {
    /// Over `history`, for a replay that stopped at `watermark`.
    pub fn new(history: &'a H, watermark: DateTime<Utc>) -> Self {
        StoreWatermark { history, watermark }
    }
}

impl<H: HistoryReader> StoreWatermark<'_, H> {
    /// `aggregate`, if it has an event after the watermark.
    async fn check(&self, aggregate: String) -> Result<Option<String>, ProjectionError> {
        let events = self
            .history
            .history_of(&aggregate)
            .await
            .map_err(|e| ProjectionError::transient("dynamodb", e))?;
        Ok(events
            .iter()
            .any(|e| e.occurred_at > self.watermark)
            .then_some(aggregate))
    }
}

impl<H: HistoryReader> Watermark for StoreWatermark<'_, H> {
    async fn moved_after(&self, aggregates: &[String]) -> Result<BTreeSet<String>, ProjectionError> {
        // Built first, so the stream's type holds no closure (whose higher-ranked
        // lifetimes defeat the `Send` proof the trait's future needs).
        let checks: Vec<_> = aggregates.iter().cloned().map(|a| self.check(a)).collect();
        let moved: Vec<Option<String>> = futures::stream::iter(checks)
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        Ok(moved.into_iter().flatten().collect())
    }
}
