//! The ElastiCache layer: menu items and loyalty balances, written through by a
//! projector and read cache-aside by the API.
//!
//! # Keys (all under a prefix)
//! - `menu:item:{id}`: hash `{v, json}`, the item as [`MenuItemView`] JSON; a retired
//!   item is a tombstone (`retired: true`) at the retire's version rather than a deleted
//!   key, so a replayed `MenuItemPublished` (older version) cannot bring it back.
//! - `loyalty:{customer}`: hash `{v, customer_id, balance, tier}`.
//! - `menu:lists`: hash of cached listings (`all`, `cat:{category}`) plus `#gen`, a token
//!   that changes on every menu change. Every menu change deletes the whole hash: a
//!   retire does not say the item's category, menus change a few times a day, and one
//!   key is invalidated in one atomic step, with no list of categories to keep right.
//!
//! # Why writes cannot go backwards
//! Every write is a Lua compare-and-set on `v`: the projector's write-through and the
//! readers' cache-aside fills alike only land when their version is newer than the one
//! stored, so a fill that read the source before a change can never overwrite the
//! change. Listings carry no version; their fill only lands if `#gen` is still the token
//! the reader saw before it read the source, so a listing read before an invalidation
//! is dropped instead of resurrecting the old menu. The source itself is another
//! consumer (the documents model) and may lag this one: a listing filled after an
//! invalidation from a source that has not yet applied the change is stale, and the gen
//! check cannot see it. The listings' TTL ([`LIST_TTL`], counted from the last menu
//! change) bounds that: a listing is at most that much older than the source.
//!
//! # Loyalty events carry half an account
//! `PointsEarned`/`PointsRedeemed` carry the balance but no tier, `TierChanged` the tier
//! but no balance. The script completes the missing half from the cached value only when
//! that value is exactly the state the batch continues from (stored version `>=` the
//! batch's first version − 1) or the batch starts the account (version 1: balance 0,
//! green, like the PostgreSQL model). Otherwise, after an eviction, a flush, or a fill
//! from a lagging source, the key is deleted instead: merging onto an older value would
//! invent a state that never existed, while a miss is always correct (the next read fills
//! from the source).
//!
//! TTLs are refreshed on every write, so an idle key ages out while a busy one stays.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use cafe_events::proto::loyalty::v1::Tier;
use cafe_events::{AggregateId, DomainEvent};
use redis::Script;
use tracing::warn;

use crate::documents::{MenuItemView, MongoDocuments};
use crate::error::ProjectionError;
use crate::names::tier_name;
use crate::postgres::orders::{LoyaltyView, PgOrdersView};
use crate::projector::{Batch, Projection};
use crate::redis_scripts::{self, RedisConnection};
use crate::verify::{BucketDigest, Buckets, Digests, Row, Verifiable};

/// KEYS[1]; ARGV: version, ttl, then field/value pairs. Writes only over an older version.
const SET_NEWER: &str = r"
local stored = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if stored >= tonumber(ARGV[1]) then return 0 end
local fields = {'v', ARGV[1]}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
";

/// KEYS[1]; ARGV: first version, last version, balance or '', tier or '', customer, ttl.
/// 1 written, 0 already as new, -1 invalidated (a half account over an unknown base).
const LOYALTY: &str = r"
local cur = redis.call('HMGET', KEYS[1], 'v', 'balance', 'tier')
local stored = tonumber(cur[1] or '0')
local first, last = tonumber(ARGV[1]), tonumber(ARGV[2])
if stored >= last then return 0 end
local balance, tier = ARGV[3], ARGV[4]
if balance == '' or tier == '' then
  local base_balance, base_tier
  if cur[1] and cur[2] and cur[3] and stored >= first - 1 then
    base_balance, base_tier = cur[2], cur[3]
  elseif first == 1 then
    base_balance, base_tier = '0', 'green'
  else
    redis.call('DEL', KEYS[1])
    return -1
  end
  if balance == '' then balance = base_balance end
  if tier == '' then tier = base_tier end
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'customer_id', ARGV[5], 'balance', balance, 'tier', tier)
redis.call('EXPIRE', KEYS[1], ARGV[6])
return 1
";

/// How long cached listings live after the last menu change (or their first fill): the
/// bound on how stale a listing filled from a lagging documents model can be. Short,
/// since a refill is one query per listing and menus change a few times a day.
pub const LIST_TTL: Duration = Duration::from_secs(5);

/// KEYS[1] the listings hash; ARGV: new token, ttl. Drops every listing at once.
const INVALIDATE_LISTS: &str = r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '#gen', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
";

/// KEYS[1] the listings hash; ARGV: token seen before reading the source ('' for none),
/// field, json, ttl. Lands only if no invalidation came in between.
const FILL_LIST: &str = r"
local gen = redis.call('HGET', KEYS[1], '#gen') or ''
if gen ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ARGV[4]) end
return 1
";

/// The cache projector, and the cache side of [`CachedReads`].
#[derive(Clone)]
pub struct RedisCache {
    con: RedisConnection,
    prefix: String,
    ttl: Duration,
    list_ttl: Duration,
    set_newer: Script,
    loyalty: Script,
    invalidate_lists: Script,
    fill_list: Script,
}

impl std::fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCache")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("list_ttl", &self.list_ttl)
            .finish()
    }
}

/// A value read through the cache, and whether the cache had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached<T> {
    /// The value.
    pub value: T,
    /// Served from Redis (false: from the source, then filled).
    pub hit: bool,
}

/// Where menu reads go on a miss.
pub trait MenuSource: Send + Sync {
    /// One item, retired or not.
    fn menu_item(&self, item_id: &str) -> impl Future<Output = Result<Option<MenuItemView>, ProjectionError>> + Send;
    /// The published items (of one category, or all), sorted by id.
    fn menu_items(
        &self,
        category: Option<&str>,
    ) -> impl Future<Output = Result<Vec<MenuItemView>, ProjectionError>> + Send;
}

/// Where loyalty reads go on a miss.
pub trait LoyaltySource: Send + Sync {
    /// A customer's account.
    fn loyalty(&self, customer_id: &str) -> impl Future<Output = Result<Option<LoyaltyView>, ProjectionError>> + Send;
}

impl MenuSource for MongoDocuments {
    async fn menu_item(&self, item_id: &str) -> Result<Option<MenuItemView>, ProjectionError> {
        MongoDocuments::menu_item(self, item_id).await
    }

    async fn menu_items(&self, category: Option<&str>) -> Result<Vec<MenuItemView>, ProjectionError> {
        MongoDocuments::menu_items(self, category).await
    }
}

impl LoyaltySource for PgOrdersView {
    async fn loyalty(&self, customer_id: &str) -> Result<Option<LoyaltyView>, ProjectionError> {
        PgOrdersView::loyalty(self, customer_id).await
    }
}

fn list_field(category: Option<&str>) -> String {
    match category {
        Some(c) => format!("cat:{c}"),
        None => "all".to_owned(),
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String, ProjectionError> {
    serde_json::to_string(v).map_err(|e| ProjectionError::poison("redis", e))
}

impl RedisCache {
    /// Connects to `url`; every key starts with `prefix`. Items and accounts live an hour
    /// past their last write, listings [`LIST_TTL`] (see the module notes).
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, ProjectionError> {
        Ok(RedisCache {
            con: redis_scripts::connect(url).await?,
            prefix: prefix.to_owned(),
            ttl: Duration::from_secs(3600),
            list_ttl: LIST_TTL,
            set_newer: Script::new(SET_NEWER),
            loyalty: Script::new(LOYALTY),
            invalidate_lists: Script::new(INVALIDATE_LISTS),
            fill_list: Script::new(FILL_LIST),
        })
    }

    /// Deletes every key of this copy (a shadow or scratch copy being dropped, or a
    /// chaos experiment's flush); answers how many.
    pub async fn delete_all(&self) -> Result<usize, ProjectionError> {
        redis_scripts::delete_prefixed(&self.con, &self.prefix).await
    }

    /// Other lifetimes for items/accounts and for listings.
    pub fn with_ttls(mut self, ttl: Duration, list_ttl: Duration) -> Self {
        self.ttl = ttl;
        self.list_ttl = list_ttl;
        self
    }

    fn item_key(&self, item_id: &str) -> String {
        format!("{}menu:item:{item_id}", self.prefix)
    }

    fn loyalty_key(&self, customer_id: &str) -> String {
        format!("{}loyalty:{customer_id}", self.prefix)
    }

    fn lists_key(&self) -> String {
        format!("{}menu:lists", self.prefix)
    }

    fn secs(d: Duration) -> u64 {
        d.as_secs().max(1)
    }

    /// Cache-aside fill of one item: lands only over an older version (or nothing).
    /// Answers whether it landed.
    pub async fn fill_menu_item(&self, item: &MenuItemView) -> Result<bool, ProjectionError> {
        let mut con = self.con.clone();
        let mut inv = self.set_newer.prepare_invoke();
        inv.key(self.item_key(&item.item_id))
            .arg(item.version)
            .arg(Self::secs(self.ttl))
            .arg("json")
            .arg(to_json(item)?);
        let written: i64 = inv.invoke_async(&mut con).await?;
        Ok(written == 1)
    }

    /// Cache-aside fill of one account: lands only over an older version (or nothing).
    /// Answers whether it landed.
    pub async fn fill_loyalty(&self, account: &LoyaltyView) -> Result<bool, ProjectionError> {
        let mut con = self.con.clone();
        let mut inv = self.set_newer.prepare_invoke();
        inv.key(self.loyalty_key(&account.customer_id))
            .arg(account.version)
            .arg(Self::secs(self.ttl))
            .arg("customer_id")
            .arg(&account.customer_id)
            .arg("balance")
            .arg(account.balance)
            .arg("tier")
            .arg(&account.tier);
        let written: i64 = inv.invoke_async(&mut con).await?;
        Ok(written == 1)
    }

    /// The cached item (`Some(None)` is a cached tombstone), or `None` on a miss.
    pub async fn cached_menu_item(&self, item_id: &str) -> Result<Option<MenuItemView>, ProjectionError> {
        let mut con = self.con.clone();
        let json: Option<String> = redis::cmd("HGET")
            .arg(self.item_key(item_id))
            .arg("json")
            .query_async(&mut con)
            .await?;
        Ok(json.and_then(|j| match serde_json::from_str(&j) {
            Ok(v) => Some(v),
            Err(e) => {
                warn!(item_id, error = %e, "undecodable cached menu item; reading the source");
                None
            }
        }))
    }

    /// The cached account, or `None` on a miss.
    pub async fn cached_loyalty(&self, customer_id: &str) -> Result<Option<LoyaltyView>, ProjectionError> {
        let mut con = self.con.clone();
        let (v, customer, balance, tier): (Option<u64>, Option<String>, Option<i64>, Option<String>) =
            redis::cmd("HMGET")
                .arg(self.loyalty_key(customer_id))
                .arg(&["v", "customer_id", "balance", "tier"])
                .query_async(&mut con)
                .await?;
        Ok(match (v, customer, balance, tier) {
            (Some(version), Some(customer_id), Some(balance), Some(tier)) => Some(LoyaltyView {
                customer_id,
                balance,
                tier,
                version,
            }),
            _ => None,
        })
    }
}

/// Cache-aside reads over a source read model: Redis first; on a miss (or when Redis is
/// down: the cache is an accelerator, never the truth) the source, then a fill that
/// cannot overwrite anything newer.
#[derive(Debug, Clone)]
pub struct CachedReads<S> {
    cache: RedisCache,
    source: S,
}

impl<S> CachedReads<S> {
    /// Reads through `cache` to `source`.
    pub fn new(cache: RedisCache, source: S) -> Self {
        CachedReads { cache, source }
    }

    /// The source behind the cache.
    pub fn cache(&self) -> &RedisCache {
        &self.cache
    }

    /// The source read model behind the cache.
    pub fn source(&self) -> &S {
        &self.source
    }
}

/// Logs a cache failure and carries on without the cache.
fn or_miss<T>(what: &str, r: Result<Option<T>, ProjectionError>) -> Option<T> {
    r.unwrap_or_else(|e| {
        warn!(error = %e, "cache {what} failed; serving from the source");
        None
    })
}

impl<S: MenuSource> CachedReads<S> {
    /// A published item (`None` for a retired or unknown one).
    pub async fn menu_item(&self, item_id: &str) -> Result<Cached<Option<MenuItemView>>, ProjectionError> {
        if let Some(item) = or_miss("read", self.cache.cached_menu_item(item_id).await) {
            return Ok(Cached {
                value: Some(item).filter(|i| !i.retired),
                hit: true,
            });
        }
        let item = self.source.menu_item(item_id).await?;
        if let Some(i) = &item {
            // A retired item fills as a tombstone, so the next read is a hit too.
            or_miss("fill", self.cache.fill_menu_item(i).await.map(Some));
        }
        Ok(Cached {
            value: item.filter(|i| !i.retired),
            hit: false,
        })
    }

    /// The published items of a category (or all), sorted by id.
    pub async fn menu_items(&self, category: Option<&str>) -> Result<Cached<Vec<MenuItemView>>, ProjectionError> {
        let field = list_field(category);
        let key = self.cache.lists_key();
        let mut con = self.cache.con.clone();
        let seen: Result<(Option<String>, Option<String>), _> = redis::cmd("HMGET")
            .arg(&key)
            .arg(&field)
            .arg("#gen")
            .query_async(&mut con)
            .await;
        let generation = match seen {
            Ok((Some(json), _)) => match serde_json::from_str(&json) {
                Ok(items) => {
                    return Ok(Cached {
                        value: items,
                        hit: true,
                    });
                }
                Err(e) => {
                    warn!(error = %e, "undecodable cached listing; reading the source");
                    None
                }
            },
            Ok((None, generation)) => Some(generation.unwrap_or_default()),
            Err(e) => {
                warn!(error = %e, "cache read failed; serving from the source");
                None
            }
        };
        let items = self.source.menu_items(category).await?;
        if let Some(generation) = generation {
            let mut inv = self.cache.fill_list.prepare_invoke();
            inv.key(&key)
                .arg(generation)
                .arg(&field)
                .arg(to_json(&items)?)
                .arg(RedisCache::secs(self.cache.list_ttl));
            let filled: Result<i64, _> = inv.invoke_async(&mut con).await;
            or_miss("fill", filled.map(|_| Some(())).map_err(ProjectionError::from));
        }
        Ok(Cached {
            value: items,
            hit: false,
        })
    }
}

impl<S: LoyaltySource> CachedReads<S> {
    /// A customer's account.
    pub async fn loyalty(&self, customer_id: &str) -> Result<Cached<Option<LoyaltyView>>, ProjectionError> {
        if let Some(account) = or_miss("read", self.cache.cached_loyalty(customer_id).await) {
            return Ok(Cached {
                value: Some(account),
                hit: true,
            });
        }
        let account = self.source.loyalty(customer_id).await?;
        if let Some(a) = &account {
            or_miss("fill", self.cache.fill_loyalty(a).await.map(Some));
        }
        Ok(Cached {
            value: account,
            hit: false,
        })
    }
}

/// An account's events in one batch: the versions they span and the last of each half.
struct AccountChange<'a> {
    first: u64,
    last: u64,
    balance: Option<i64>,
    tier: Option<&'static str>,
    customer: &'a str,
}

impl Projection for RedisCache {
    fn name(&self) -> &'static str {
        "cache"
    }

    async fn apply(&self, batch: Batch<'_>) -> Result<(), ProjectionError> {
        let mut items: BTreeMap<&str, MenuItemView> = BTreeMap::new();
        let mut accounts: BTreeMap<&str, AccountChange<'_>> = BTreeMap::new();
        for p in batch.events {
            let e = &p.event;
            match (&e.aggregate_id, &e.event) {
                (AggregateId::MenuItem(id), DomainEvent::MenuItemPublished(x)) => {
                    items.insert(
                        id.as_str(),
                        MenuItemView {
                            item_id: id.to_string(),
                            name: x.name.clone(),
                            category: x.category.clone(),
                            price_cents: x.price_cents,
                            tags: x.tags.clone(),
                            retired: false,
                            version: e.version,
                        },
                    );
                }
                (AggregateId::MenuItem(id), DomainEvent::MenuItemRetired(_)) => {
                    // The tombstone is the same whatever preceded it, so the cache does
                    // not depend on where batches were cut.
                    items.insert(
                        id.as_str(),
                        MenuItemView {
                            item_id: id.to_string(),
                            name: String::new(),
                            category: String::new(),
                            price_cents: 0,
                            tags: Vec::new(),
                            retired: true,
                            version: e.version,
                        },
                    );
                }
                (AggregateId::LoyaltyAccount(id), event) => {
                    // Every event of the account counts for the version span, even one
                    // this cache ignores, so "contiguous with the stored version" holds.
                    let a = accounts.entry(id.as_str()).or_insert(AccountChange {
                        first: e.version,
                        last: e.version,
                        balance: None,
                        tier: None,
                        customer: id.as_str(),
                    });
                    a.last = e.version;
                    match event {
                        DomainEvent::PointsEarned(x) => a.balance = Some(x.balance_after),
                        DomainEvent::PointsRedeemed(x) => a.balance = Some(x.balance_after),
                        DomainEvent::TierChanged(x) => {
                            a.tier = Some(tier_name(Tier::try_from(x.to).unwrap_or_default()))
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        if items.is_empty() && accounts.is_empty() {
            return Ok(());
        }
        let ttl = Self::secs(self.ttl);
        let mut writes = Vec::with_capacity(items.len() + accounts.len());
        for item in items.values() {
            let mut inv = self.set_newer.prepare_invoke();
            inv.key(self.item_key(&item.item_id))
                .arg(item.version)
                .arg(ttl)
                .arg("json")
                .arg(to_json(item)?);
            writes.push(inv);
        }
        for a in accounts.values() {
            let mut inv = self.loyalty.prepare_invoke();
            inv.key(self.loyalty_key(a.customer))
                .arg(a.first)
                .arg(a.last)
                .arg(a.balance.map(|b| b.to_string()).unwrap_or_default())
                .arg(a.tier.unwrap_or_default())
                .arg(a.customer)
                .arg(ttl);
            writes.push(inv);
        }
        let mut invalidate = Vec::with_capacity(1);
        if !items.is_empty() {
            // After the item writes (a later stage): a listing filled in between is
            // dropped by the new token.
            let mut inv = self.invalidate_lists.prepare_invoke();
            inv.key(self.lists_key())
                .arg(uuid::Uuid::now_v7().simple().to_string())
                .arg(Self::secs(self.list_ttl));
            invalidate.push(inv);
        }
        redis_scripts::run_scripts(
            &self.con,
            &[&writes, &invalidate],
            &[&self.set_newer, &self.loyalty, &self.invalidate_lists],
        )
        .await
    }

    /// Items and accounts (not the listings, which readers fill), with their versions;
    /// TTLs left out.
    async fn snapshot(&self) -> Result<Vec<String>, ProjectionError> {
        let mut con = self.con.clone();
        let mut out = Vec::new();
        for key in redis_scripts::keys(&self.con, &self.item_key("")).await? {
            let (v, json): (Option<u64>, Option<String>) = redis::cmd("HMGET")
                .arg(&key)
                .arg(&["v", "json"])
                .query_async(&mut con)
                .await?;
            let name = &key[self.prefix.len()..];
            out.push(format!("cache {name} v{} {}", v.unwrap_or(0), json.unwrap_or_default()));
        }
        for key in redis_scripts::keys(&self.con, &self.loyalty_key("")).await? {
            let fields: (Option<u64>, Option<String>, Option<i64>, Option<String>) = redis::cmd("HMGET")
                .arg(&key)
                .arg(&["v", "customer_id", "balance", "tier"])
                .query_async(&mut con)
                .await?;
            let name = &key[self.prefix.len()..];
            out.push(format!("cache {name} {fields:?}"));
        }
        Ok(out)
    }
}

impl RedisCache {
    /// One pass over the items and accounts (not the listings, which readers fill).
    async fn verify_pass(&self, buckets: Buckets, keep: &[u32]) -> Result<Digests, ProjectionError> {
        let mut con = self.con.clone();
        let mut d = Digests::new(buckets, keep);
        let items = self.item_key("");
        // Fields are read as text: a corrupted value (a version that is not a number)
        // is a difference to report, not an error that stops the verification.
        for key in redis_scripts::keys(&self.con, &items).await? {
            let id = &key[items.len()..];
            let read: redis::RedisResult<(Option<String>, Option<String>)> = redis::cmd("HMGET")
                .arg(&key)
                .arg(&["v", "json"])
                .query_async(&mut con)
                .await;
            let Some((v, json)) = hash_or_wrong_type(read)? else {
                d.add(id, format!("menu:item:{id}"), None, WRONG_TYPE);
                continue;
            };
            let text = format!("v{} {}", v.as_deref().unwrap_or("0"), json.unwrap_or_default());
            d.add(id, format!("menu:item:{id}"), version(v.as_deref()), &text);
        }
        let accounts = self.loyalty_key("");
        for key in redis_scripts::keys(&self.con, &accounts).await? {
            let id = &key[accounts.len()..];
            let read: redis::RedisResult<AccountFields> = redis::cmd("HMGET")
                .arg(&key)
                .arg(&["v", "customer_id", "balance", "tier"])
                .query_async(&mut con)
                .await;
            let Some(fields) = hash_or_wrong_type(read)? else {
                d.add(id, format!("loyalty:{id}"), None, WRONG_TYPE);
                continue;
            };
            d.add(
                id,
                format!("loyalty:{id}"),
                version(fields.0.as_deref()),
                &format!("{fields:?}"),
            );
        }
        Ok(d)
    }
}

/// A loyalty account's hash fields as text: version, customer, balance, tier.
type AccountFields = (Option<String>, Option<String>, Option<String>, Option<String>);

/// What a key that is not a hash digests as: a row unlike any the model writes.
const WRONG_TYPE: &str = "<not a hash>";

/// A hash's fields, or None when the key holds another type (corruption the
/// verification reports as a differing row rather than failing on).
fn hash_or_wrong_type<T>(read: redis::RedisResult<T>) -> Result<Option<T>, ProjectionError> {
    match read {
        Ok(fields) => Ok(Some(fields)),
        Err(e) if e.code() == Some("WRONGTYPE") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A stored version, when it reads as one.
fn version(v: Option<&str>) -> Option<u64> {
    v.and_then(|v| v.parse().ok())
}

/// Digests streamed from a key scan.
impl Verifiable for RedisCache {
    async fn digests(&self, buckets: Buckets) -> Result<Vec<BucketDigest>, ProjectionError> {
        Ok(self.verify_pass(buckets, &[]).await?.digests())
    }

    async fn rows(&self, buckets: Buckets, which: &[u32]) -> Result<Vec<Row>, ProjectionError> {
        Ok(self.verify_pass(buckets, which).await?.kept())
    }
}
