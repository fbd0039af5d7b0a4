//! The ElastiCache layer: write-through conformance, the compare-and-set against slow
//! fills, and cache-aside reads across a FLUSHALL.

use std::collections::BTreeSet;
use std::time::Duration;

use cafe_events::DomainEvent;
use cafe_localstack::Service;
use cafe_localstack::testing::PrivateStack;
use cafe_projections::Projection;
use cafe_projections::cache::{CachedReads, RedisCache};
use cafe_projections::history::{self, HistoryConfig};
use cafe_projections::postgres::orders::PgOrdersView;

use crate::conformance::{apply_as, apply_sharded, conformance};
use crate::helpers::{stack, unique};

pub async fn fresh() -> RedisCache {
    RedisCache::connect(&stack().redis_url(), &format!("{}:", unique("it")))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms() {
    let snapshot = conformance(fresh).await;
    let cfg = HistoryConfig::default();
    let items = snapshot.iter().filter(|l| l.starts_with("cache menu:item:")).count();
    assert_eq!(items, cfg.menu_items);
    assert!(snapshot.iter().any(|l| l.contains("\"retired\":true")));
    let accounts = snapshot.iter().filter(|l| l.starts_with("cache loyalty:")).count();
    assert!(accounts > cfg.customers / 2, "{accounts} accounts");
}

/// A cache-aside fill that read the source before a change lands after the change's
/// write-through: the compare-and-set keeps the newer value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_fill_never_overwrites_a_newer_write_through() {
    let cache = fresh().await;
    let history = history::generate(HistoryConfig::default());
    apply_sharded(&cache, &history, 3).await;
    let (customer, _) = history
        .iter()
        .filter_map(|e| match &e.event {
            DomainEvent::PointsEarned(p) => Some((p.customer_id.clone(), e.version)),
            _ => None,
        })
        .max_by_key(|(_, v)| *v)
        .unwrap();
    let now = cache.cached_loyalty(&customer).await.unwrap().unwrap();
    assert!(now.version > 1);
    let mut older = now.clone();
    older.version -= 1;
    older.balance += 1_000;
    assert!(!cache.fill_loyalty(&older).await.unwrap(), "an older fill landed");
    assert!(!cache.fill_loyalty(&now).await.unwrap(), "an equal fill landed");
    assert_eq!(cache.cached_loyalty(&customer).await.unwrap().unwrap(), now);

    // The same for a retired item: its tombstone outranks a fill of the published item.
    let retired = history
        .iter()
        .find_map(|e| match &e.event {
            DomainEvent::MenuItemRetired(r) => Some((r.item_id.clone(), e.version)),
            _ => None,
        })
        .unwrap();
    let tombstone = cache.cached_menu_item(&retired.0).await.unwrap().unwrap();
    assert!(tombstone.retired);
    assert_eq!(tombstone.version, retired.1);
    let mut alive = tombstone.clone();
    (alive.retired, alive.version, alive.name) = (false, retired.1 - 1, "Back from the dead".into());
    assert!(!cache.fill_menu_item(&alive).await.unwrap());
    assert!(cache.cached_menu_item(&retired.0).await.unwrap().unwrap().retired);
    // And a fill of a newer version (the source moved on first) does land.
    let mut newer = now.clone();
    newer.version += 1;
    assert!(cache.fill_loyalty(&newer).await.unwrap());
}

/// Redis flushed while the cache projector runs: reads through the cache still equal
/// the source read models, and a second read is served from the refilled cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flushed_mid_run_reads_stay_correct_and_the_cache_refills() {
    let cfg = stack();
    let history = history::generate(HistoryConfig::default());
    let documents = crate::documents::fresh().await;
    let orders = PgOrdersView::connect(&cfg.postgres_url(&cfg.names.orders_database), &unique("it"))
        .await
        .unwrap();
    apply_sharded(&documents, &history, 1).await;
    apply_sharded(&orders, &history, 1).await;

    let private = PrivateStack::start(&[Service::Redis]).await;
    let url = private.config().redis_url();
    let cache = RedisCache::connect(&url, "cafe:").await.unwrap();
    let menu = CachedReads::new(cache.clone(), documents.clone());
    let loyalty = CachedReads::new(cache.clone(), orders.clone());

    // The projector runs over the whole history (as one replayed shard) while the
    // cache is flushed partway and readers keep reading.
    let projector = {
        let cache = cache.clone();
        let history = history.clone();
        tokio::spawn(async move { apply_as(&cache, "flushed", &history, 17).await })
    };
    let customers: BTreeSet<String> = history
        .iter()
        .filter_map(|e| match &e.event {
            DomainEvent::PointsEarned(p) => Some(p.customer_id.clone()),
            _ => None,
        })
        .collect();
    let mut flushed = false;
    while !projector.is_finished() {
        let _ = menu.menu_items(Some("coffee")).await.unwrap();
        for c in customers.iter().take(5) {
            let _ = loyalty.loyalty(c).await.unwrap();
        }
        let written = cache.snapshot().await.unwrap();
        // Flush once accounts are being written, so later half-account events meet
        // missing keys.
        if !flushed && written.iter().filter(|l| l.starts_with("cache loyalty:")).count() > 10 {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut con = client.get_multiplexed_async_connection().await.unwrap();
            let () = redis::cmd("FLUSHALL").query_async(&mut con).await.unwrap();
            flushed = true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    projector.await.unwrap();
    assert!(flushed, "the projector finished before the flush");
    let present = cache
        .snapshot()
        .await
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("cache loyalty:"))
        .count();
    assert!(
        present < customers.len(),
        "the flush left no holes ({present} accounts cached)"
    );

    let mut hits_after_refill = 0;
    for category in [None, Some("coffee"), Some("tea"), Some("bakery"), Some("cold-drinks")] {
        let want = documents.menu_items(category).await.unwrap();
        assert!(!want.is_empty());
        let first = menu.menu_items(category).await.unwrap();
        assert_eq!(first.value, want, "{category:?}");
        let second = menu.menu_items(category).await.unwrap();
        assert_eq!(second.value, want, "{category:?} again");
        assert!(second.hit, "{category:?} not refilled");
        hits_after_refill += 1;
    }
    let items: BTreeSet<String> = history
        .iter()
        .filter_map(|e| match &e.event {
            DomainEvent::MenuItemPublished(p) => Some(p.item_id.clone()),
            _ => None,
        })
        .collect();
    for id in &items {
        let want = documents.menu_item(id).await.unwrap().filter(|i| !i.retired);
        assert_eq!(menu.menu_item(id).await.unwrap().value, want, "{id}");
        let again = menu.menu_item(id).await.unwrap();
        assert_eq!((again.value, again.hit), (want, true), "{id} again");
    }
    for c in &customers {
        let want = orders.loyalty(c).await.unwrap();
        assert!(want.is_some());
        let first = loyalty.loyalty(c).await.unwrap();
        assert_eq!(first.value, want, "{c}");
        let second = loyalty.loyalty(c).await.unwrap();
        assert_eq!((second.value, second.hit), (want, true), "{c} again");
    }
    assert_eq!(hits_after_refill, 5);
}

/// What a real Redis answers decides retry or park: a Lua error or a key of the wrong type
/// repeats on every retry (poison, so the event is parked instead of stalling its shard);
/// an unreachable server may come back (transient).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_failures_are_classed_by_what_the_server_said() {
    use cafe_projections::ProjectionError;
    let client = redis::Client::open(stack().redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let class = |r: redis::RedisResult<redis::Value>| ProjectionError::from(r.unwrap_err()).is_transient();

    let lua_error = redis::Script::new("return redis.call('INCR', KEYS[1], 'not', 'a', 'number')")
        .key(unique("it:lua"))
        .invoke_async(&mut conn)
        .await;
    assert!(!class(lua_error), "a Lua runtime error was classed transient");
    let undefined = redis::Script::new("return nonexistent_global.field")
        .invoke_async(&mut conn)
        .await;
    assert!(!class(undefined), "a script bug was classed transient");

    let key = unique("it:list");
    let _: () = redis::cmd("RPUSH")
        .arg(&key)
        .arg("x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let wrong_type = redis::cmd("INCR").arg(&key).query_async(&mut conn).await;
    assert!(!class(wrong_type), "WRONGTYPE was classed transient");

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("redis://{}/", listener.local_addr().unwrap());
    drop(listener);
    let unreachable = match redis::Client::open(closed)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
    {
        Ok(_) => panic!("connected to a closed port"),
        Err(e) => e,
    };
    assert!(
        ProjectionError::from(unreachable).is_transient(),
        "a refused connection was classed poison"
    );
}
