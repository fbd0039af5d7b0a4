use cafe_localstack::Service;
use redis::AsyncCommands;

use crate::helpers::{stack_with, unique};

#[tokio::test]
async fn pipeline_and_lua_compare_and_set() {
    let cfg = stack_with(Service::Redis).await;
    let client = redis::Client::open(cfg.redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = unique("it:inv");

    let (_, on_hand): ((), i64) = redis::pipe()
        .hset(&key, "on_hand", 10)
        .ignore()
        .hset(&key, "version", 1)
        .hincr(&key, "on_hand", 5)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(on_hand, 15);

    // Apply only if the stored version is older: the guard the inventory projector needs.
    let cas = redis::Script::new(
        r"local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
          if v >= tonumber(ARGV[1]) then return 0 end
          redis.call('HSET', KEYS[1], 'on_hand', ARGV[2], 'version', ARGV[1])
          return 1",
    );
    let applied: i64 = cas.key(&key).arg(2).arg(7).invoke_async(&mut conn).await.unwrap();
    let replayed: i64 = cas.key(&key).arg(2).arg(99).invoke_async(&mut conn).await.unwrap();
    assert_eq!((applied, replayed), (1, 0));
    let stored: i64 = conn.hget(&key, "on_hand").await.unwrap();
    assert_eq!(stored, 7);
    let _: () = conn.del(&key).await.unwrap();
}
