use std::sync::Arc;

use aws_sdk_dynamodb::types::AttributeValue;
use cafe_consumers::lease::{Checkpoint, Lease, LeaseError, LeaseTable};

use crate::helpers::fresh_leases;

fn shard(i: u32) -> String {
    format!("shardId-{i:012}")
}

#[tokio::test]
async fn create_is_once_and_items_carry_the_kcl_attribute_names() {
    let (table, client, name) = fresh_leases("orders-projector").await;
    let child = Lease::new(shard(2), Checkpoint::TrimHorizon, vec![shard(0), shard(1)]);
    assert!(table.create(&child).await.unwrap());
    let taken = table.take(&child, "worker-a").await.unwrap();
    assert!(!table.create(&child).await.unwrap(), "a second create changes nothing");
    assert_eq!(table.list().await.unwrap(), vec![taken]);

    let item = client
        .get_item()
        .table_name(&name)
        .key("leaseKey", AttributeValue::S(format!("orders-projector:{}", shard(2))))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    let mut names: Vec<&str> = item.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "checkpoint",
            "checkpointSubSequenceNumber",
            "leaseCounter",
            "leaseKey",
            "leaseOwner",
            "ownerSwitchesSinceCheckpoint",
            "parentShardId"
        ]
    );
    assert_eq!(item["checkpoint"], AttributeValue::S("TRIM_HORIZON".into()));
    assert_eq!(item["leaseCounter"], AttributeValue::N("1".into()));
    let mut parents = item["parentShardId"].as_ss().unwrap().clone();
    parents.sort();
    assert_eq!(parents, vec![shard(0), shard(1)], "a string set, as the KCL writes it");
}

#[tokio::test]
async fn applications_sharing_the_table_see_only_their_own_leases() {
    let (a, client, name) = fresh_leases("app-a").await;
    let b = cafe_consumers::lease::DynamoLeaseTable::new(client, name, "app-b");
    a.create(&Lease::new(shard(0), Checkpoint::TrimHorizon, vec![]))
        .await
        .unwrap();
    b.create(&Lease::new(shard(0), Checkpoint::Latest, vec![]))
        .await
        .unwrap();
    assert_eq!(a.list().await.unwrap()[0].checkpoint, Checkpoint::TrimHorizon);
    assert_eq!(b.list().await.unwrap()[0].checkpoint, Checkpoint::Latest);
}

#[tokio::test]
async fn every_write_is_fenced_by_the_counter_so_a_stale_owner_cannot_checkpoint() {
    let (table, ..) = fresh_leases("fencing").await;
    let fresh = Lease::new(shard(0), Checkpoint::TrimHorizon, vec![]);
    table.create(&fresh).await.unwrap();

    let a = table.take(&fresh, "worker-a").await.unwrap();
    let a = table.renew(&a).await.unwrap();
    let a = table
        .checkpoint(
            &a,
            Checkpoint::Sequence {
                sequence: "100".into(),
                sub: 3,
            },
        )
        .await
        .unwrap();
    assert_eq!(a.counter, 3);

    // worker-b acting on what it saw before: refused.
    assert!(matches!(table.take(&fresh, "worker-b").await, Err(LeaseError::Lost(_))));
    // worker-b on a fresh listing (worker-a paused past the failover time): taken.
    let seen = table.list().await.unwrap().remove(0);
    let b = table.take(&seen, "worker-b").await.unwrap();
    assert_eq!(b.owner_switches_since_checkpoint, 1);

    // worker-a wakes up: every write of its is refused, and the checkpoint stays put.
    assert!(matches!(table.renew(&a).await, Err(LeaseError::Lost(_))));
    let stale = table
        .checkpoint(
            &a,
            Checkpoint::Sequence {
                sequence: "50".into(),
                sub: 0,
            },
        )
        .await;
    assert!(matches!(stale, Err(LeaseError::Lost(_))), "{stale:?}");
    assert!(matches!(table.release(&a).await, Err(LeaseError::Lost(_))));
    let now = table.list().await.unwrap().remove(0);
    assert_eq!(now.owner.as_deref(), Some("worker-b"));
    assert_eq!(
        now.checkpoint,
        Checkpoint::Sequence {
            sequence: "100".into(),
            sub: 3
        }
    );
}

#[tokio::test]
async fn of_workers_racing_for_one_lease_exactly_one_wins() {
    let (table, ..) = fresh_leases("race").await;
    let table = Arc::new(table);
    let fresh = Lease::new(shard(0), Checkpoint::TrimHorizon, vec![]);
    table.create(&fresh).await.unwrap();
    let racers: Vec<_> = (0..8)
        .map(|i| {
            let (table, fresh) = (table.clone(), fresh.clone());
            tokio::spawn(async move { table.take(&fresh, &format!("worker-{i}")).await })
        })
        .collect();
    let mut winners = Vec::new();
    for r in racers {
        match r.await.unwrap() {
            Ok(l) => winners.push(l.owner.unwrap()),
            Err(LeaseError::Lost(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    assert_eq!(table.list().await.unwrap()[0].owner.as_ref(), Some(&winners[0]));
}

#[tokio::test]
async fn checkpoint_then_release_hands_the_shard_over_where_it_stopped() {
    let (table, ..) = fresh_leases("handoff").await;
    let fresh = Lease::new(shard(0), Checkpoint::TrimHorizon, vec![]);
    table.create(&fresh).await.unwrap();
    let a = table.take(&fresh, "worker-a").await.unwrap();
    let a = table
        .checkpoint(
            &a,
            Checkpoint::Sequence {
                sequence: "4200".into(),
                sub: 0,
            },
        )
        .await
        .unwrap();
    let released = table.release(&a).await.unwrap();
    assert_eq!(released.owner, None);

    // The successor need not wait for expiry: the lease is unowned.
    let seen = table.list().await.unwrap().remove(0);
    let b = table.take(&seen, "worker-b").await.unwrap();
    assert_eq!(
        b.checkpoint,
        Checkpoint::Sequence {
            sequence: "4200".into(),
            sub: 0
        }
    );
    let b = table.checkpoint(&b, Checkpoint::ShardEnd).await.unwrap();
    assert!(b.is_finished());
}

/// Discovery against a stream the stand-in really resharded: the split parent is closed,
/// its children name it, and the leases created for them say so.
#[tokio::test]
async fn discovery_creates_one_lease_per_shard_with_parents_after_a_split() {
    use aws_sdk_kinesis::types::StreamStatus;
    use cafe_consumers::discovery::{leases_to_create, list_shards};
    use cafe_localstack::{StackConfig, aws, provision};

    let cfg = StackConfig::load().unwrap();
    let kinesis = aws::kinesis(&aws::sdk_config(&cfg).await, &cfg);
    let stream = format!("it-disc-{}", uuid::Uuid::now_v7().simple());
    provision::ensure_stream(&kinesis, &stream, 2).await.unwrap();
    let before = list_shards(&kinesis, &stream).await.unwrap();
    let (table, ..) = fresh_leases("discovery").await;
    for l in leases_to_create(&before, &[], &Checkpoint::TrimHorizon) {
        assert!(table.create(&l).await.unwrap());
    }

    let parent = &before[0];
    kinesis
        .split_shard()
        .stream_name(&stream)
        .shard_to_split(&parent.shard_id)
        .new_starting_hash_key("85070591730234615865843651857942052864")
        .send()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while kinesis
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .stream_description_summary()
        .map(|s| s.stream_status().clone())
        != Some(StreamStatus::Active)
    {
        assert!(std::time::Instant::now() < deadline, "split never finished");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    let after = list_shards(&kinesis, &stream).await.unwrap();
    assert_eq!(after.len(), 4);
    assert!(after.iter().any(|s| s.shard_id == parent.shard_id && s.closed));
    let existing = table.list().await.unwrap();
    let children = leases_to_create(&after, &existing, &Checkpoint::Latest);
    assert_eq!(children.len(), 2, "{children:?}");
    for c in &children {
        assert_eq!(c.parent_shard_ids, vec![parent.shard_id.clone()]);
        assert_eq!(c.checkpoint, Checkpoint::TrimHorizon);
        assert!(table.create(c).await.unwrap());
    }
    assert_eq!(table.list().await.unwrap().len(), 4);
    kinesis.delete_stream().stream_name(&stream).send().await.unwrap();
}

/// A rebalance is a request the owner sees in its next renewal; it hands the lease over
/// itself (after its final checkpoint), so nothing is processed twice.
#[tokio::test]
async fn a_handoff_request_reaches_the_owner_and_the_owner_hands_over() {
    let (table, ..) = fresh_leases("handoff-request").await;
    let lease = Lease::new(shard(0), Checkpoint::TrimHorizon, vec![]);
    table.create(&lease).await.unwrap();
    let held = table.take(&lease, "a").await.unwrap();

    let asked = table.request_handoff(&held, "b").await.unwrap();
    assert_eq!(asked.pending_owner.as_deref(), Some("b"));
    assert_eq!(asked.counter, held.counter, "a request does not fence the owner out");
    assert!(
        matches!(table.request_handoff(&held, "c").await, Err(LeaseError::Lost(_))),
        "one request at a time"
    );

    let renewed = table.renew(&held).await.unwrap();
    assert_eq!(renewed.pending_owner.as_deref(), Some("b"), "the owner learns of it");
    let checkpointed = table
        .checkpoint(
            &renewed,
            Checkpoint::Sequence {
                sequence: "49".into(),
                sub: 3,
            },
        )
        .await
        .unwrap();
    let handed = table.hand_off(&checkpointed).await.unwrap();
    assert_eq!(handed.owner.as_deref(), Some("b"));
    assert_eq!(handed.pending_owner, None);
    assert_eq!(handed.owner_switches_since_checkpoint, 1);
    assert_eq!(table.list().await.unwrap(), vec![handed.clone()]);
    assert!(
        matches!(table.renew(&checkpointed).await, Err(LeaseError::Lost(_))),
        "the old owner is fenced out"
    );

    // A request to a dead owner is cleared when the lease is taken after expiry.
    let again = table.request_handoff(&handed, "c").await.unwrap();
    let taken = table.take(&again, "d").await.unwrap();
    assert_eq!((taken.owner.as_deref(), taken.pending_owner), (Some("d"), None));
}
