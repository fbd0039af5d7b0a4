//! Lag in time from the lease table and the stream: a checkpoint behind records that
//! arrived a while ago shows their age; a checkpoint at the tip shows none.

use std::time::Duration;

use cafe_consumers::lag::application_lag;
use cafe_consumers::lease::{Checkpoint, Lease, LeaseTable};
use chrono::Utc;

use crate::helpers::fixture;

/// Takes the shard's lease for a worker of the test.
async fn take<L: LeaseTable>(leases: &L, shard: &str) -> bool {
    let lease = leases
        .list()
        .await
        .unwrap()
        .into_iter()
        .find(|l| l.shard_id == shard)
        .unwrap();
    leases.take(&lease, "worker-1").await.is_ok()
}

#[tokio::test]
async fn a_checkpoint_behind_old_records_shows_their_age_and_one_at_the_tip_none() {
    let f = fixture(1).await;
    f.put(&[("k".to_owned(), 0), ("k".to_owned(), 1)]).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let shard = cafe_consumers::discovery::list_shards(&f.kinesis, &f.stream)
        .await
        .unwrap()
        .remove(0)
        .shard_id;
    let leases = f.leases("app");
    leases
        .create(&Lease::new(&shard, Checkpoint::TrimHorizon, vec![]))
        .await
        .unwrap();
    // Nobody holds it yet: no consumer to be behind.
    let lag = application_lag(&f.kinesis, &f.stream, &leases, Utc::now())
        .await
        .unwrap();
    assert!(lag.is_empty(), "{lag:?}");
    let held = take(&leases, &shard).await;
    assert!(held);

    let lag = application_lag(&f.kinesis, &f.stream, &leases, Utc::now())
        .await
        .unwrap();
    assert_eq!(lag.len(), 1);
    assert!(lag[0].behind >= Duration::from_millis(1000), "{lag:?}");
    assert!(lag[0].behind < Duration::from_secs(60), "{lag:?}");

    // Checkpointed past the last record: nothing waits.
    let it = f
        .kinesis
        .get_shard_iterator()
        .stream_name(&f.stream)
        .shard_id(&shard)
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let records = f.kinesis.get_records().shard_iterator(it).send().await.unwrap();
    let last = records.records().last().unwrap().sequence_number().to_owned();
    let other = f.leases("tip");
    other
        .create(&Lease::new(
            &shard,
            Checkpoint::Sequence { sequence: last, sub: 0 },
            vec![],
        ))
        .await
        .unwrap();
    assert!(take(&other, &shard).await);
    let lag = application_lag(&f.kinesis, &f.stream, &other, Utc::now())
        .await
        .unwrap();
    assert_eq!(lag[0].behind, Duration::ZERO, "{lag:?}");
}

#[tokio::test]
async fn lag_is_the_age_of_the_first_event_past_a_checkpoint_inside_a_kpl_aggregate() {
    let f = fixture(1).await;
    let now = Utc::now();
    let event = |ago: i64, sku: u32| {
        let mut e = cafe_events::samples::restocked(1, sku).unwrap();
        e.occurred_at = now - chrono::Duration::milliseconds(ago);
        cafe_events::kpl::UserRecord {
            partition_key: e.partition_key(),
            explicit_hash_key: None,
            data: e.encode(),
        }
    };
    // One Kinesis record holding events that happened 30.25 s and 7.5 s ago.
    let members = [event(30_250, 1), event(7_500, 2)];
    let put = f
        .kinesis
        .put_record()
        .stream_name(&f.stream)
        .partition_key(&members[0].partition_key)
        .data(aws_sdk_kinesis::primitives::Blob::new(
            cafe_events::kpl::aggregate(&members).to_vec(),
        ))
        .send()
        .await
        .unwrap();
    let shard = put.shard_id().to_owned();
    let sequence = put.sequence_number().to_owned();
    let at = |sub: u64| Checkpoint::Sequence {
        sequence: sequence.clone(),
        sub,
    };
    for (app, checkpoint, expected) in [
        ("start", Checkpoint::TrimHorizon, 30_250),
        // Past the first member only: the second one waits.
        ("mid", at(0), 7_500),
        ("end", at(1), 0),
    ] {
        let leases = f.leases(app);
        leases.create(&Lease::new(&shard, checkpoint, vec![])).await.unwrap();
        assert!(take(&leases, &shard).await);
        let lag = application_lag(&f.kinesis, &f.stream, &leases, now).await.unwrap();
        assert_eq!(lag[0].behind, Duration::from_millis(expected), "{app}: {lag:?}");
    }
}
