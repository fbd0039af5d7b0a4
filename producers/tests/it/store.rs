use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cafe_producers::store::{Append, EventStore, GroupCommit, IdempotencyClaim, StoreError, StoredResponse};

use crate::helpers::{account, earned, fresh_store};

#[tokio::test]
async fn appended_events_load_back_in_version_order() {
    let store = fresh_store().await;
    let id = account("c-order");
    store.append(&[earned(&id, 1), earned(&id, 2)], None).await.unwrap();
    store.append(&[earned(&id, 3)], None).await.unwrap();
    let loaded = store.load(&id).await.unwrap();
    assert_eq!(loaded.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert!(store.load(&account("nobody")).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_taken_version_is_a_conflict_and_the_whole_append_is_discarded() {
    let store = fresh_store().await;
    let id = account("c-conflict");
    store.append(&[earned(&id, 1)], None).await.unwrap();
    let err = store.append(&[earned(&id, 1), earned(&id, 2)], None).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { version: 1, .. }), "{err}");
    assert!(!err.is_transient());
    assert_eq!(
        store.load(&id).await.unwrap().len(),
        1,
        "version 2 must not have been written"
    );
}

#[tokio::test]
async fn concurrent_writers_never_leave_a_gap_or_a_duplicate() {
    let store = Arc::new(fresh_store().await);
    let id = account("c-race");
    // Collected, so all eight are spawned before the first is awaited.
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                let (mut ok, mut conflicts) = (0, 0);
                for _ in 0..5 {
                    // Load, decide the next version, append; on conflict reload and try again.
                    loop {
                        let next = store.load(&id).await.unwrap().len() as u64 + 1;
                        match store.append(&[earned(&id, next)], None).await {
                            Ok(()) => {
                                ok += 1;
                                break;
                            }
                            Err(StoreError::Conflict { .. }) => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                (ok, conflicts)
            })
        })
        .collect();
    let mut appended = 0;
    for w in writers {
        appended += w.await.unwrap().0;
    }
    let versions: Vec<u64> = store.load(&id).await.unwrap().iter().map(|e| e.version).collect();
    assert_eq!(appended, 40);
    assert_eq!(versions, (1..=40).collect::<Vec<_>>());
}

fn claim(key: &str, hash: &str) -> IdempotencyClaim {
    IdempotencyClaim {
        key: key.into(),
        request_hash: hash.into(),
        response: StoredResponse {
            status: 201,
            body: serde_json::json!({ "version": 1 }),
        },
        ttl: Duration::from_secs(86_400),
    }
}

#[tokio::test]
async fn an_idempotency_key_is_claimed_once_atomically_with_the_events() {
    let store = fresh_store().await;
    let (a, b) = (account("c-idem-a"), account("c-idem-b"));
    assert_eq!(store.idempotency("k1").await.unwrap(), None);
    store.append(&[earned(&a, 1)], Some(&claim("k1", "h1"))).await.unwrap();
    let rec = store.idempotency("k1").await.unwrap().unwrap();
    assert_eq!(rec.request_hash, "h1");
    assert_eq!(rec.response, claim("k1", "h1").response);

    // A second claim of the key fails as a race, and its events are not written.
    let err = store
        .append(&[earned(&b, 1)], Some(&claim("k1", "h2")))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::IdempotencyRace(ref k) if k == "k1"), "{err}");
    assert!(store.load(&b).await.unwrap().is_empty());
}

#[tokio::test]
async fn new_events_are_pending_until_marked_published() {
    let store = fresh_store().await;
    let id = account("c-pending");
    store.append(&[earned(&id, 1), earned(&id, 2)], None).await.unwrap();
    // Not yet older than a minute.
    assert!(store.pending(Duration::from_secs(60), 100).await.unwrap().is_empty());
    let pending = store.pending(Duration::ZERO, 100).await.unwrap();
    assert_eq!(pending.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2]);

    store.mark_published(&pending[..1]).await.unwrap();
    let left = store.pending(Duration::ZERO, 100).await.unwrap();
    assert_eq!(left.iter().map(|e| e.version).collect::<Vec<_>>(), vec![2]);
    // Clearing the marker leaves the event itself as it was.
    assert_eq!(store.load(&id).await.unwrap(), pending);
}

#[tokio::test]
async fn markers_of_more_events_than_one_batch_write_holds_are_all_cleared() {
    let store = fresh_store().await;
    // 30 aggregates × 2 events: three BatchWriteItem calls' worth.
    for i in 0..30 {
        let id = account(&format!("c-many-{i}"));
        store.append(&[earned(&id, 1), earned(&id, 2)], None).await.unwrap();
    }
    let pending = store.pending(Duration::ZERO, 1_000).await.unwrap();
    assert_eq!(pending.len(), 60);
    store.mark_published(&pending).await.unwrap();
    assert!(store.pending(Duration::ZERO, 1_000).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_grouped_append_writes_every_member_or_none() {
    let store = fresh_store().await;
    let ids: Vec<_> = (0..3).map(|i| account(&format!("c-group-{i}"))).collect();
    let events: Vec<_> = ids.iter().map(|id| [earned(id, 1), earned(id, 2)]).collect();
    let claims: Vec<_> = (0..3).map(|i| claim(&format!("kg-{i}"), "h")).collect();
    let appends: Vec<_> = events
        .iter()
        .zip(&claims)
        .map(|(events, claim)| Append {
            events,
            claim: Some(claim),
        })
        .collect();
    store.append_group(&appends).await.unwrap();
    for (id, written) in ids.iter().zip(&events) {
        assert_eq!(&store.load(id).await.unwrap()[..], &written[..]);
    }
    assert!(store.idempotency("kg-2").await.unwrap().is_some());
    assert_eq!(
        store.pending(Duration::ZERO, 100).await.unwrap().len(),
        6,
        "all pending"
    );

    // One member's version is taken: nothing of the group is written.
    let fresh = account("c-group-new");
    let (taken, new) = ([earned(&ids[0], 2)], [earned(&fresh, 1)]);
    let new_claim = claim("kg-new", "h");
    let err = store
        .append_group(&[
            Append {
                events: &new,
                claim: Some(&new_claim),
            },
            Append {
                events: &taken,
                claim: None,
            },
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::GroupRefused(_)), "{err}");
    assert!(!err.is_transient());
    assert!(store.load(&fresh).await.unwrap().is_empty());
    assert_eq!(store.idempotency("kg-new").await.unwrap(), None);

    // One member's key is used: the same.
    let reused = claim("kg-1", "h");
    let err = store
        .append_group(&[
            Append {
                events: &new,
                claim: None,
            },
            Append {
                events: &[earned(&account("c-group-other"), 1)],
                claim: Some(&reused),
            },
        ])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::GroupRefused(_)), "{err}");
    assert!(store.load(&fresh).await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_appends_through_a_group_commit_share_transactions_and_each_lands_once() {
    let group = Arc::new(GroupCommit::new(fresh_store().await));
    // 200 commands on their own aggregates, and 20 racing for version 1 of one more.
    let spawn = |customer: String, key: String| {
        let group = group.clone();
        tokio::spawn(async move {
            let id = account(&customer);
            group.append(&[earned(&id, 1)], Some(&claim(&key, "h"))).await
        })
    };
    let own: Vec<_> = (0..200)
        .map(|i| spawn(format!("c-gc-{i}"), format!("kgc-{i}")))
        .collect();
    let racing: Vec<_> = (0..20)
        .map(|i| spawn("c-gc-hot".into(), format!("kgc-hot-{i}")))
        .collect();
    for task in own {
        task.await.unwrap().unwrap();
    }
    let mut won = 0;
    for task in racing {
        match task.await.unwrap() {
            Ok(()) => won += 1,
            Err(StoreError::Conflict { version: 1, .. }) => {}
            Err(e) => panic!("a racing append failed otherwise: {e}"),
        }
    }
    assert_eq!(won, 1, "exactly one racer takes version 1");
    for i in (0..200).step_by(7) {
        let loaded = group.load(&account(&format!("c-gc-{i}"))).await.unwrap();
        assert_eq!(loaded.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1]);
    }
    assert_eq!(group.load(&account("c-gc-hot")).await.unwrap().len(), 1);
    assert_eq!(group.inner().pending(Duration::ZERO, 1_000).await.unwrap().len(), 201);
    let stats = group.stats();
    let (appends, transactions) = (
        stats.appends.load(Ordering::Relaxed),
        stats.transactions.load(Ordering::Relaxed),
    );
    assert_eq!(appends, 220);
    assert!(
        transactions * 4 < appends,
        "{transactions} transactions for {appends} appends: they were not grouped"
    );
}

/// The whole history comes back by parallel Scan segments, every event exactly once,
/// however the table splits into segments and pages; per aggregate the versions sort
/// back into order.
#[tokio::test]
async fn the_whole_history_reads_back_once_by_parallel_segments() {
    use cafe_producers::store::HistoryReader;
    use futures::TryStreamExt;

    let store = fresh_store().await;
    let mut written = std::collections::BTreeMap::new();
    for a in 0..20 {
        let id = account(&format!("c-hist-{a}"));
        let events: Vec<_> = (1..=5).map(|v| earned(&id, v)).collect();
        store.append(&events, None).await.unwrap();
        written.insert(id.to_string(), (1..=5).collect::<Vec<u64>>());
    }
    for (segments, page_size) in [(1, 1000), (4, 7), (8, 3)] {
        let pages: Vec<_> = store.read_all(segments, page_size).try_collect().await.unwrap();
        assert!(pages.iter().all(|p| p.len() <= page_size as usize));
        let mut read = std::collections::BTreeMap::<String, Vec<u64>>::new();
        for e in pages.into_iter().flatten() {
            read.entry(e.aggregate_id.to_string()).or_default().push(e.version);
        }
        for versions in read.values_mut() {
            versions.sort_unstable();
        }
        assert_eq!(read, written, "{segments} segments, pages of {page_size}");
    }
}
