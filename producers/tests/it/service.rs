use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cafe_events::CustomerId;
use cafe_events::{AggregateId, EventEnvelope};
use cafe_producers::domain::loyalty::{LoyaltyAccount, LoyaltyCommand};
use cafe_producers::publish::{FaultySink, KinesisSink, Publisher, PublisherConfig};
use cafe_producers::relay::{self, RelayConfig};
use cafe_producers::service::{CommandError, CommandMeta, CommandService, ServiceConfig};
use cafe_producers::store::{
    Append, DynamoEventStore, EventStore, FaultyStore, IdempotencyClaim, IdempotencyRecord, StoreError, StoredResponse,
};

use crate::helpers::{account, earned, fresh_store, fresh_stream, read_stream};

type Service = CommandService<FaultyStore<DynamoEventStore>, FaultySink<KinesisSink>>;

async fn service(store_fail: u64, sink_fail: u64, cfg: ServiceConfig) -> (Service, aws_sdk_kinesis::Client, String) {
    let store = FaultyStore::new(fresh_store().await, store_fail, 7);
    let (client, stream, sink) = fresh_stream(2).await;
    let publisher = Publisher::new(
        FaultySink::new(sink, sink_fail, 11),
        PublisherConfig {
            base_backoff: Duration::from_millis(2),
            ..PublisherConfig::default()
        },
    );
    (CommandService::new(store, publisher, cfg), client, stream)
}

fn earn(points: i64) -> (CustomerId, LoyaltyCommand) {
    (
        CustomerId::parse("c-1").unwrap(),
        LoyaltyCommand::Earn { points, order_id: None },
    )
}

/// An earn on `customer`'s own account, and that account's id.
fn earn_as(customer: &str, points: i64) -> (AggregateId, (CustomerId, LoyaltyCommand)) {
    (
        account(customer),
        (
            CustomerId::parse(customer).unwrap(),
            LoyaltyCommand::Earn { points, order_id: None },
        ),
    )
}

fn meta(key: Option<&str>, hash: &str) -> CommandMeta {
    CommandMeta {
        idempotency_key: key.map(str::to_owned),
        request_hash: hash.into(),
        correlation_id: "corr".into(),
    }
}

fn respond(events: &[cafe_events::EventEnvelope], version: u64) -> StoredResponse {
    StoredResponse {
        status: 201,
        body: serde_json::json!({ "version": version, "events": events.len() }),
    }
}

#[tokio::test]
async fn fifty_parallel_retries_write_one_set_of_events_and_answer_identically() {
    let (svc, client, stream) = service(0, 0, ServiceConfig::default()).await;
    let svc = Arc::new(svc);
    let id = account("c-1");
    let calls: Vec<_> = (0..50)
        .map(|_| {
            let (svc, id) = (svc.clone(), id.clone());
            tokio::spawn(async move {
                svc.execute::<LoyaltyAccount>(&id, &earn(600), &(), &meta(Some("key-1"), "hash-1"), respond)
                    .await
            })
        })
        .collect();
    let mut responses = BTreeSet::new();
    let mut fresh = 0;
    for c in calls {
        let done = c.await.unwrap().unwrap();
        responses.insert(done.response.body.to_string());
        fresh += usize::from(!done.replayed);
    }
    assert_eq!(responses.len(), 1, "identical responses: {responses:?}");
    assert_eq!(fresh, 1, "exactly one call wrote");
    // PointsEarned + TierChanged (600 points crosses Gold), once.
    let stored = svc.store().load(&id).await.unwrap();
    assert_eq!(stored.iter().map(|e| e.version).collect::<Vec<_>>(), vec![1, 2]);
    let (_, per_shard) = read_stream(&client, &stream).await;
    assert_eq!(per_shard.iter().map(Vec::len).sum::<usize>(), 2, "published once");
}

#[tokio::test]
async fn the_same_key_with_another_request_is_refused_and_writes_nothing() {
    let (svc, ..) = service(0, 0, ServiceConfig::default()).await;
    let id = account("c-1");
    svc.execute::<LoyaltyAccount>(&id, &earn(10), &(), &meta(Some("k"), "h1"), respond)
        .await
        .unwrap();
    let err = svc
        .execute::<LoyaltyAccount>(&id, &earn(99), &(), &meta(Some("k"), "h2"), respond)
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::IdempotencyMismatch), "{err}");
    assert_eq!(svc.store().load(&id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_rule_violation_is_rejected_and_writes_nothing() {
    let (svc, ..) = service(0, 0, ServiceConfig::default()).await;
    let id = account("c-1");
    let redeem = (CustomerId::parse("c-1").unwrap(), LoyaltyCommand::Redeem { points: 5 });
    let err = svc
        .execute::<LoyaltyAccount>(&id, &redeem, &(), &meta(Some("r"), "h"), respond)
        .await
        .unwrap_err();
    let CommandError::Rejected(rule) = err else {
        panic!("{err}")
    };
    assert_eq!(rule.code(), "insufficient_points");
    assert!(svc.store().load(&id).await.unwrap().is_empty());
    assert_eq!(
        svc.store().idempotency("r").await.unwrap(),
        None,
        "a refused command claims no key"
    );
}

/// Ten concurrent earn commands on one account, each with its own key.
async fn ten_concurrent_earns(
    svc: Service,
) -> (
    Arc<Service>,
    Vec<Result<cafe_producers::service::Executed, CommandError>>,
) {
    let svc = Arc::new(svc);
    let calls: Vec<_> = (0..10)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let key = format!("k{i}");
                svc.execute::<LoyaltyAccount>(&account("c-1"), &earn(1), &(), &meta(Some(&key), "h"), respond)
                    .await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for c in calls {
        outcomes.push(c.await.unwrap());
    }
    (svc, outcomes)
}

async fn versions(svc: &Service) -> Vec<u64> {
    svc.store()
        .load(&account("c-1"))
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect()
}

#[tokio::test]
async fn concurrent_commands_on_one_aggregate_get_consecutive_versions() {
    let (svc, ..) = service(0, 0, ServiceConfig::default()).await;
    let (svc, outcomes) = ten_concurrent_earns(svc).await;
    let mut ok = 0;
    for outcome in outcomes {
        match outcome {
            Ok(_) => ok += 1,
            Err(CommandError::Conflict) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        versions(&svc).await,
        (1..=ok as u64).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    assert!(ok >= 1);
}

#[tokio::test]
async fn without_conflict_retries_the_loser_gets_a_conflict() {
    let cfg = ServiceConfig {
        conflict_retries: 0,
        ..ServiceConfig::default()
    };
    let (svc, ..) = service(0, 0, cfg).await;
    let (svc, outcomes) = ten_concurrent_earns(svc).await;
    let conflicts = outcomes
        .iter()
        .filter(|r| matches!(r, Err(CommandError::Conflict)))
        .count();
    let ok = outcomes.iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok + conflicts, 10);
    assert_eq!(versions(&svc).await, (1..=ok as u64).collect::<Vec<_>>());
}

#[tokio::test]
async fn with_throttled_dynamodb_and_kinesis_every_command_lands_and_is_published() {
    let (svc, client, stream) = service(
        300,
        200,
        ServiceConfig {
            transient_retries: 12,
            ..ServiceConfig::default()
        },
    )
    .await;
    for i in 0..40 {
        let (id, cmd) = earn_as(&format!("c-{i}"), 5);
        svc.execute::<LoyaltyAccount>(&id, &cmd, &(), &meta(Some(&format!("k{i}")), "h"), respond)
            .await
            .unwrap();
    }
    // Whatever the command path could not publish, the relay does.
    let store = svc.store();
    let relay_cfg = RelayConfig {
        older_than: Duration::ZERO,
        ..RelayConfig::default()
    };
    for _ in 0..20 {
        if relay::relay_once(store, svc.publisher(), &relay_cfg).await.is_ok()
            && store
                .pending(Duration::ZERO, 10)
                .await
                .map(|p| p.is_empty())
                .unwrap_or(false)
        {
            break;
        }
    }
    let (_, per_shard) = read_stream(&client, &stream).await;
    let got: BTreeSet<String> = per_shard.iter().flatten().map(|e| e.aggregate_id.to_string()).collect();
    assert_eq!(got.len(), 40);
}

#[tokio::test]
async fn the_relay_publishes_events_left_pending_by_a_crash() {
    let (svc, client, stream) = service(0, 0, ServiceConfig::default()).await;
    // A "crash" between append and publish: appended, never published.
    let id = account("c-crashed");
    svc.store()
        .append(&[earned(&id, 1), earned(&id, 2)], None)
        .await
        .unwrap();
    let cfg = RelayConfig {
        older_than: Duration::ZERO,
        ..RelayConfig::default()
    };
    assert_eq!(relay::relay_once(svc.store(), svc.publisher(), &cfg).await.unwrap(), 2);
    assert_eq!(
        relay::relay_once(svc.store(), svc.publisher(), &cfg).await.unwrap(),
        0,
        "nothing left pending"
    );
    let (_, per_shard) = read_stream(&client, &stream).await;
    let versions: Vec<u64> = per_shard.iter().flatten().map(|e| e.version).collect();
    assert_eq!(versions, vec![1, 2]);
}

/// A store whose marker clearing takes a while, so a test can tell "answered" from
/// "settled".
struct SlowClearing(DynamoEventStore);

impl EventStore for SlowClearing {
    async fn load(&self, id: &AggregateId) -> Result<Vec<EventEnvelope>, StoreError> {
        self.0.load(id).await
    }
    async fn append(&self, events: &[EventEnvelope], claim: Option<&IdempotencyClaim>) -> Result<(), StoreError> {
        self.0.append(events, claim).await
    }
    async fn append_group(&self, appends: &[Append<'_>]) -> Result<(), StoreError> {
        self.0.append_group(appends).await
    }
    async fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.0.idempotency(key).await
    }
    async fn pending(&self, older_than: Duration, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        self.0.pending(older_than, limit).await
    }
    async fn mark_published(&self, events: &[EventEnvelope]) -> Result<(), StoreError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.0.mark_published(events).await
    }
}

#[tokio::test]
async fn a_command_is_answered_before_its_marker_is_cleared_and_settled_waits_for_it() {
    let (client, stream, sink) = fresh_stream(2).await;
    let svc = Arc::new(CommandService::new(
        SlowClearing(fresh_store().await),
        Publisher::new(sink, PublisherConfig::default()),
        ServiceConfig::default(),
    ));
    let calls: Vec<_> = (0..30)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let (id, cmd) = earn_as(&format!("c-settle-{i}"), 5);
                svc.execute::<LoyaltyAccount>(&id, &cmd, &(), &meta(Some(&format!("ks-{i}")), "h"), respond)
                    .await
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    // Answered: markers not yet cleared (the last clearing is still asleep), but on
    // the stream.
    assert!(!svc.store().0.pending(Duration::ZERO, 100).await.unwrap().is_empty());
    let (_, per_shard) = read_stream(&client, &stream).await;
    assert_eq!(per_shard.iter().map(Vec::len).sum::<usize>(), 30);
    // Settled: what a stopping server, or the Lambda API before it returns, waits for.
    svc.settled().await;
    assert!(svc.store().0.pending(Duration::ZERO, 100).await.unwrap().is_empty());
}

/// A command run on a state the caller loaded earlier decides again on the current state
/// when that one went stale: the stale state allowed the redeem, the current one does
/// not, and nothing is appended.
#[tokio::test]
async fn a_stale_known_state_costs_a_conflict_and_is_decided_again_on_the_current_one() {
    let (svc, _, _) = service(0, 0, ServiceConfig::default()).await;
    let id = account("c-1");
    let customer = CustomerId::parse("c-1").unwrap();
    svc.execute::<LoyaltyAccount>(&id, &earn(100), &(), &meta(None, "h"), respond)
        .await
        .unwrap();
    let stale = svc.state::<LoyaltyAccount>(&id).await.unwrap();
    assert_eq!((stale.0.balance, stale.1), (100, 1));
    let redeem = |points| (customer.clone(), LoyaltyCommand::Redeem { points });
    svc.execute::<LoyaltyAccount>(&id, &redeem(100), &(), &meta(None, "h"), respond)
        .await
        .unwrap();

    let late = svc
        .execute_from::<LoyaltyAccount>(&id, Some(stale), &redeem(50), &(), &meta(None, "h"), respond)
        .await;
    assert!(matches!(late, Err(CommandError::Rejected(_))), "{late:?}");
    assert_eq!(svc.store().load(&id).await.unwrap().len(), 2);

    // A fresh known state appends as `execute` would.
    svc.execute::<LoyaltyAccount>(&id, &earn(70), &(), &meta(None, "h"), respond)
        .await
        .unwrap();
    let fresh = svc.state::<LoyaltyAccount>(&id).await.unwrap();
    svc.execute_from::<LoyaltyAccount>(&id, Some(fresh), &redeem(50), &(), &meta(None, "h"), respond)
        .await
        .unwrap();
    let (account_now, version) = svc.state::<LoyaltyAccount>(&id).await.unwrap();
    assert_eq!((account_now.balance, version), (20, 4));
}

/// The running relay keeps its progress where metrics read it: what its scans find
/// stranded, and what it republished. Stranded events stay counted while Kinesis
/// refuses them and the count drops to zero once they are out.
#[tokio::test]
async fn the_running_relay_reports_what_is_stranded_and_what_it_republished() {
    use std::sync::atomic::Ordering::Relaxed;
    let cfg = RelayConfig {
        older_than: Duration::ZERO,
        interval: Duration::from_millis(20),
        ..RelayConfig::default()
    };
    let wait_for = async |svc: &Service, what: &str, done: &dyn Fn(&relay::RelayProgress) -> bool| {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = relay::run(svc.store(), svc.publisher(), cfg.clone(), svc.relay_progress(), async {
            let _ = stopped.await;
        });
        let watch = async {
            for _ in 0..500 {
                if done(svc.relay_progress()) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let _ = stop.send(());
        };
        let (stats, ()) = tokio::join!(run, watch);
        assert!(done(svc.relay_progress()), "{what}: {stats:?}");
        stats
    };

    // Kinesis refuses every entry: the events stay stranded and counted.
    let (svc, _, _) = service(0, 1000, ServiceConfig::default()).await;
    let id = account("c-stranded");
    svc.store()
        .append(&[earned(&id, 1), earned(&id, 2)], None)
        .await
        .unwrap();
    let stats = wait_for(&svc, "stranded", &|p| p.pending.load(Relaxed) == 2).await;
    assert_eq!(stats.published, 0);

    // Kinesis accepts: republished, and nothing stranded any more.
    let (svc, _, _) = service(0, 0, ServiceConfig::default()).await;
    svc.store()
        .append(&[earned(&id, 1), earned(&id, 2)], None)
        .await
        .unwrap();
    let stats = wait_for(&svc, "republished", &|p| {
        p.published.load(Relaxed) == 2 && p.pending.load(Relaxed) == 0
    })
    .await;
    assert_eq!(stats.published, 2);
}
