//! The MemoryDB read model: on-hand stock per store and SKU.
//!
//! One hash per store, `{prefix}inventory:{store}`, with field `{sku}` = on hand and
//! `{sku}#v` = the stock item's version. The events say the absolute count
//! (`on_hand_after`), so a batch folds to one (on hand, version) per SKU and nothing is
//! ever incremented: replays cannot double count. A Lua script sets each SKU only when
//! the stored version is lower, which makes the write idempotent and safe against a
//! slower worker still holding an older batch; the check and the write are one atomic
//! step on the server, which a read-then-write from here could not be. The script is
//! called once per store touched by the batch, with that store's one key, so each call
//! goes to the shard serving the store on a cluster (MemoryDB always is one); the calls
//! go out together (one pipeline, or side by side on a cluster): about one round trip
//! per batch.

use std::collections::BTreeMap;

use cafe_events::{AggregateId, DomainEvent};
use redis::Script;
use serde::Serialize;

use crate::error::ProjectionError;
use crate::projector::{Batch, Projection};
use crate::redis_scripts::{self, RedisConnection};
use crate::verify::{BucketDigest, Buckets, Digests, Row, Verifiable};

/// ARGV is (sku, on_hand, version) triples; answers how many SKUs moved.
const SET_NEWER: &str = r"
local moved = 0
for i = 1, #ARGV, 3 do
  local stored = tonumber(redis.call('HGET', KEYS[1], ARGV[i] .. '#v') or '0')
  if stored < tonumber(ARGV[i + 2]) then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1], ARGV[i] .. '#v', ARGV[i + 2])
    moved = moved + 1
  end
end
return moved
";

/// The inventory projector and its query.
#[derive(Clone)]
pub struct RedisInventory {
    con: RedisConnection,
    prefix: String,
    script: Script,
}

impl std::fmt::Debug for RedisInventory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisInventory").field("prefix", &self.prefix).finish()
    }
}

/// One SKU's stock in a store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StockView {
    /// The SKU.
    pub sku: String,
    /// Units on hand.
    pub on_hand: i64,
    /// The stock item aggregate's version this reflects.
    pub version: u64,
}

impl RedisInventory {
    /// Connects to `url`; every key starts with `prefix` (one deployment, or one test).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, ProjectionError> {
        Ok(RedisInventory {
            con: redis_scripts::connect(url).await?,
            prefix: prefix.to_owned(),
            script: Script::new(SET_NEWER),
        })
    }

    fn key(&self, store_id: &str) -> String {
        format!("{}inventory:{store_id}", self.prefix)
    }

    /// Deletes every key of this copy (a shadow or scratch copy being dropped): only the
    /// inventory's own keys under the prefix.
    pub async fn delete_all(&self) -> Result<(), ProjectionError> {
        redis_scripts::delete_prefixed(&self.con, &self.key("")).await?;
        Ok(())
    }

    /// A store's stock, sorted by SKU (empty for an unknown store).
    pub async fn store(&self, store_id: &str) -> Result<Vec<StockView>, ProjectionError> {
        let mut con = self.con.clone();
        let fields: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(self.key(store_id))
            .query_async(&mut con)
            .await?;
        Ok(stock_views(&fields))
    }
}

/// Pairs `{sku}` with `{sku}#v`; a field without its partner (never written so by us) is
/// skipped.
fn stock_views(fields: &BTreeMap<String, String>) -> Vec<StockView> {
    fields
        .iter()
        .filter(|(k, _)| !k.ends_with("#v"))
        .filter_map(|(sku, on_hand)| {
            Some(StockView {
                sku: sku.clone(),
                on_hand: on_hand.parse().ok()?,
                version: fields.get(&format!("{sku}#v"))?.parse().ok()?,
            })
        })
        .collect()
}

impl Projection for RedisInventory {
    fn name(&self) -> &'static str {
        "inventory"
    }

    async fn apply(&self, batch: Batch<'_>) -> Result<(), ProjectionError> {
        // store -> sku -> (on hand, version): the last event of each stock item wins.
        let mut stores: BTreeMap<&str, BTreeMap<&str, (i64, u64)>> = BTreeMap::new();
        for p in batch.events {
            let e = &p.event;
            let AggregateId::StockItem(store, sku) = &e.aggregate_id else {
                continue;
            };
            let on_hand = match &e.event {
                DomainEvent::StockRestocked(x) => x.on_hand_after,
                DomainEvent::StockAdjusted(x) => x.on_hand_after,
                DomainEvent::StockReserved(x) => x.on_hand_after,
                DomainEvent::StockDepleted(_) => 0,
                _ => continue,
            };
            stores
                .entry(store.as_str())
                .or_default()
                .insert(sku.as_str(), (on_hand, e.version));
        }
        if stores.is_empty() {
            return Ok(());
        }
        let mut invocations = Vec::with_capacity(stores.len());
        for (store, skus) in &stores {
            let mut inv = self.script.prepare_invoke();
            inv.key(self.key(store));
            for (sku, (on_hand, version)) in skus {
                inv.arg(*sku).arg(*on_hand).arg(*version);
            }
            invocations.push(inv);
        }
        redis_scripts::run_scripts(&self.con, &[&invocations], &[&self.script]).await
    }

    async fn snapshot(&self) -> Result<Vec<String>, ProjectionError> {
        let mut con = self.con.clone();
        let marker = self.key("");
        let mut out = Vec::new();
        for key in redis_scripts::keys(&self.con, &marker).await? {
            let store = &key[marker.len()..];
            let fields: BTreeMap<String, String> = redis::cmd("HGETALL").arg(&key).query_async(&mut con).await?;
            for s in stock_views(&fields) {
                out.push(format!("inventory {store} {} {} v{}", s.sku, s.on_hand, s.version));
            }
        }
        Ok(out)
    }
}

impl RedisInventory {
    /// One pass over every store's hash; a stock item (`store#sku`) is one row.
    async fn verify_pass(&self, buckets: Buckets, keep: &[u32]) -> Result<Digests, ProjectionError> {
        let mut con = self.con.clone();
        let marker = self.key("");
        let mut d = Digests::new(buckets, keep);
        for key in redis_scripts::keys(&self.con, &marker).await? {
            let store = &key[marker.len()..];
            let fields: BTreeMap<String, String> = redis::cmd("HGETALL").arg(&key).query_async(&mut con).await?;
            for s in stock_views(&fields) {
                let aggregate = format!("{store}{}{}", cafe_events::aggregate::STOCK_ITEM_SEPARATOR, s.sku);
                d.add(
                    &aggregate,
                    aggregate.clone(),
                    Some(s.version),
                    &format!("{} v{}", s.on_hand, s.version),
                );
            }
        }
        Ok(d)
    }
}

/// Digests streamed from a key scan.
impl Verifiable for RedisInventory {
    async fn digests(&self, buckets: Buckets) -> Result<Vec<BucketDigest>, ProjectionError> {
        Ok(self.verify_pass(buckets, &[]).await?.digests())
    }

    async fn rows(&self, buckets: Buckets, which: &[u32]) -> Result<Vec<Row>, ProjectionError> {
        Ok(self.verify_pass(buckets, which).await?.kept())
    }
}
