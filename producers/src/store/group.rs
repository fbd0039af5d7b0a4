//! Group commit of appends: the appends of concurrent commands share one transaction.
//!
//! Every TransactWriteItems has a cost of its own besides its writes: a round trip and
//! request signing in AWS, and in the local DynamoDB stand-in a parse, an SQLite
//! transaction and a scan of its whole `ClientRequestToken` cache (measured: ~400 µs of
//! a single-order append's ~560 µs, against ~155 µs per order in a transaction of 50).
//! So, as the outbox does for PutRecords, commands queue their appends here and one
//! drain task at a time writes whatever is queued in one transaction (up to DynamoDB's
//! 100 writes). Under light load a group is one command and nothing waits; under load
//! groups grow by themselves while the previous transaction is in flight, with no timer
//! to tune. Billing is per write, so a group costs in AWS what its members would alone.
//!
//! Rules of a group, and why:
//! - Members name distinct aggregates and distinct idempotency keys: DynamoDB refuses a
//!   transaction that writes one item twice. A command on an aggregate already in the
//!   group waits for the next group, and so does everything behind it on that
//!   aggregate, so the order of one aggregate's appends is kept.
//! - All or nothing: when one member's condition fails (another writer took the version,
//!   or the idempotency key was used), nothing is written and every member is appended
//!   again on its own, so each gets its own answer and the innocent ones are written.
//! - A throttled or failed group is that failure for every member; the command service
//!   retries each, and they queue again.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cafe_events::{AggregateId, EventEnvelope};
use tokio::sync::oneshot;
use tracing::Instrument;

use super::{Append, EventStore, IdempotencyClaim, IdempotencyRecord, MAX_TRANSACTION_ACTIONS, StoreError};

/// Most bytes of encoded events one group carries: DynamoDB caps a transaction at 4 MB,
/// and the item attributes around each event add to its payload.
const MAX_GROUP_BYTES: usize = 2 << 20;

/// How much grouping happened (read by the benchmark and by tests).
#[derive(Debug, Default)]
pub struct GroupStats {
    /// Commands appended.
    pub appends: AtomicU64,
    /// Transactions sent for them (grouped or single).
    pub transactions: AtomicU64,
    /// Groups refused because a member's condition failed, then re-run member by member.
    pub refused_groups: AtomicU64,
}

struct Job {
    events: Vec<EventEnvelope>,
    claim: Option<IdempotencyClaim>,
    bytes: usize,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

impl Job {
    fn append(&self) -> Append<'_> {
        Append {
            events: &self.events,
            claim: self.claim.as_ref(),
        }
    }
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    draining: bool,
}

struct Shared<S> {
    store: S,
    queue: Mutex<Queue>,
    stats: GroupStats,
}

/// An event store whose appends are grouped; everything else goes straight through.
pub struct GroupCommit<S> {
    shared: Arc<Shared<S>>,
}

impl<S> std::fmt::Debug for GroupCommit<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl<S: EventStore> GroupCommit<S> {
    /// Groups the appends made to `store`.
    pub fn new(store: S) -> Self {
        GroupCommit {
            shared: Arc::new(Shared {
                store,
                queue: Mutex::new(Queue::default()),
                stats: GroupStats::default(),
            }),
        }
    }

    /// The store underneath.
    pub fn inner(&self) -> &S {
        &self.shared.store
    }

    /// How much grouping happened so far.
    pub fn stats(&self) -> &GroupStats {
        &self.shared.stats
    }
}

impl<S: EventStore> Shared<S> {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Never held across an await or a call that can panic.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes the next group off the queue: the oldest job, and every later one that
    /// fits and touches nothing already in the group nor skipped before it.
    fn next_group(&self) -> Vec<Job> {
        let mut q = self.queue();
        let mut group = Vec::new();
        let (mut actions, mut bytes) = (0, 0);
        let mut aggregates: HashSet<AggregateId> = HashSet::new();
        let mut keys: HashSet<String> = HashSet::new();
        let mut i = 0;
        while i < q.jobs.len() && actions < MAX_TRANSACTION_ACTIONS {
            let job = &q.jobs[i];
            let aggregate = job.events.first().map(|e| e.aggregate_id.clone());
            let key = job.claim.as_ref().map(|c| c.key.clone());
            let clashes = aggregate.as_ref().is_some_and(|a| aggregates.contains(a))
                || key.as_ref().is_some_and(|k| keys.contains(k));
            let fits = group.is_empty()
                || (actions + job.append().actions() <= MAX_TRANSACTION_ACTIONS
                    && bytes + job.bytes <= MAX_GROUP_BYTES);
            // A skipped job still claims its aggregate and key, so nothing behind it on
            // the same aggregate overtakes it.
            aggregates.extend(aggregate);
            keys.extend(key);
            if clashes || !fits {
                i += 1;
                continue;
            }
            actions += job.append().actions();
            bytes += job.bytes;
            group.extend(q.jobs.remove(i));
        }
        if group.is_empty() {
            q.draining = false;
        }
        group
    }

    async fn drain(&self) {
        // If this task panics, the next append must still be able to start a drain.
        // The replies are dropped: each caller sees its append fail and retries it, and
        // a retry of an append that was written is answered by its conflict or its
        // idempotency record.
        let _stop = crate::OnPanic(|| {
            let mut q = self.queue();
            q.draining = false;
            q.jobs.clear();
        });
        loop {
            let group = self.next_group();
            if group.is_empty() {
                return;
            }
            self.write(group).await;
        }
    }

    /// Writes one group and answers its members.
    async fn write(&self, group: Vec<Job>) {
        self.stats.appends.fetch_add(group.len() as u64, Ordering::Relaxed);
        self.stats.transactions.fetch_add(1, Ordering::Relaxed);
        if group.len() == 1 {
            // Alone, the append's own answer (a conflict, a used key) is the member's.
            for job in group {
                let result = self.store.append(&job.events, job.claim.as_ref()).await;
                let _ = job.reply.send(result);
            }
            return;
        }
        let appends: Vec<Append<'_>> = group.iter().map(Job::append).collect();
        let result = self.store.append_group(&appends).await;
        drop(appends);
        match result {
            Ok(()) => {
                for job in group {
                    let _ = job.reply.send(Ok(()));
                }
            }
            Err(StoreError::GroupRefused(why)) => {
                self.stats.refused_groups.fetch_add(1, Ordering::Relaxed);
                self.stats.transactions.fetch_add(group.len() as u64, Ordering::Relaxed);
                tracing::debug!(members = group.len(), %why, "group refused; appending its members one by one");
                // Distinct aggregates and keys: the members cannot conflict with each
                // other, so they may run at once.
                let singles = group
                    .iter()
                    .map(|job| self.store.append(&job.events, job.claim.as_ref()));
                let results = futures::future::join_all(singles).await;
                for (job, result) in group.into_iter().zip(results) {
                    let _ = job.reply.send(result);
                }
            }
            Err(e) => {
                for job in group {
                    let _ = job.reply.send(Err(same_failure(&e)));
                }
            }
        }
    }
}

/// The failure of a whole group, as each member's own.
fn same_failure(e: &StoreError) -> StoreError {
    match e {
        StoreError::Throttled(text) => StoreError::Throttled(text.clone()),
        other => StoreError::Unavailable(other.to_string()),
    }
}

impl<S: EventStore> EventStore for GroupCommit<S> {
    async fn load(&self, id: &AggregateId) -> Result<Vec<EventEnvelope>, StoreError> {
        self.shared.store.load(id).await
    }

    async fn append(&self, events: &[EventEnvelope], claim: Option<&IdempotencyClaim>) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut q = self.shared.queue();
            q.jobs.push_back(Job {
                events: events.to_vec(),
                claim: claim.cloned(),
                bytes: events.iter().map(|e| e.encode().len()).sum(),
                reply,
            });
            !std::mem::replace(&mut q.draining, true)
        };
        if start {
            // Its own task, so a caller that goes away mid-append cannot strand the
            // appends queued behind it.
            let shared = Arc::clone(&self.shared);
            tokio::spawn(async move { shared.drain().await }.instrument(tracing::debug_span!("append_group")));
        }
        answer
            .await
            .unwrap_or_else(|_| Err(StoreError::Unavailable("the append's group was abandoned".into())))
    }

    async fn append_group(&self, appends: &[Append<'_>]) -> Result<(), StoreError> {
        self.shared.store.append_group(appends).await
    }

    async fn idempotency(&self, key: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.shared.store.idempotency(key).await
    }

    async fn pending(&self, older_than: Duration, limit: usize) -> Result<Vec<EventEnvelope>, StoreError> {
        self.shared.store.pending(older_than, limit).await
    }

    async fn mark_published(&self, events: &[EventEnvelope]) -> Result<(), StoreError> {
        self.shared.store.mark_published(events).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::HashSet;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use cafe_events::proto::loyalty::v1::PointsEarned;
    use cafe_events::{AggregateId, CustomerId, DomainEvent, EventEnvelope, EventId};
    use tokio::sync::{Notify, Semaphore};

    use super::*;

    /// A store in memory that records what each call carried and can hold calls until
    /// the test releases them, so a group forms while one is "in flight".
    #[derive(Default)]
    struct Fake {
        events: Mutex<HashSet<(String, u64)>>,
        keys: Mutex<HashSet<String>>,
        calls: Mutex<Vec<Vec<String>>>,
        throttle_groups: AtomicBool,
        entered: Notify,
        held: Option<Semaphore>,
    }

    impl Fake {
        fn holding() -> Self {
            Fake {
                held: Some(Semaphore::new(0)),
                ..Fake::default()
            }
        }

        async fn gate(&self, appends: &[Append<'_>]) {
            self.calls
                .lock()
                .unwrap()
                .push(appends.iter().map(|a| a.events[0].aggregate_id.to_string()).collect());
            self.entered.notify_one();
            if let Some(held) = &self.held {
                held.acquire().await.unwrap().forget();
            }
        }

        /// The first failed condition, as a single append reports it.
        fn check(&self, a: &Append<'_>) -> Result<(), StoreError> {
            if let Some(c) = a.claim
                && self.keys.lock().unwrap().contains(&c.key)
            {
                return Err(StoreError::IdempotencyRace(c.key.clone()));
            }
            let events = self.events.lock().unwrap();
            match a
                .events
                .iter()
                .find(|e| events.contains(&(e.aggregate_id.to_string(), e.version)))
            {
                Some(e) => Err(StoreError::Conflict {
                    aggregate_id: e.aggregate_id.to_string(),
                    version: e.version,
                }),
                None => Ok(()),
            }
        }

        fn write(&self, a: &Append<'_>) {
            let mut events = self.events.lock().unwrap();
            events.extend(a.events.iter().map(|e| (e.aggregate_id.to_string(), e.version)));
            self.keys.lock().unwrap().extend(a.claim.map(|c| c.key.clone()));
        }

        fn calls(&self) -> Vec<Vec<String>> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl EventStore for Arc<Fake> {
        async fn load(&self, _: &AggregateId) -> Result<Vec<EventEnvelope>, StoreError> {
            Ok(Vec::new())
        }
        async fn append(&self, events: &[EventEnvelope], claim: Option<&IdempotencyClaim>) -> Result<(), StoreError> {
            let a = Append { events, claim };
            self.gate(&[a]).await;
            self.check(&a)?;
            self.write(&a);
            Ok(())
        }
        async fn append_group(&self, appends: &[Append<'_>]) -> Result<(), StoreError> {
            self.gate(appends).await;
            if self.throttle_groups.load(Ordering::Relaxed) {
                return Err(StoreError::Throttled("ProvisionedThroughputExceeded".into()));
            }
            if let Some(e) = appends.iter().find_map(|a| self.check(a).err()) {
                return Err(StoreError::GroupRefused(e.to_string()));
            }
            appends.iter().for_each(|a| self.write(a));
            Ok(())
        }
        async fn idempotency(&self, _: &str) -> Result<Option<IdempotencyRecord>, StoreError> {
            Ok(None)
        }
        async fn pending(&self, _: Duration, _: usize) -> Result<Vec<EventEnvelope>, StoreError> {
            Ok(Vec::new())
        }
        async fn mark_published(&self, _: &[EventEnvelope]) -> Result<(), StoreError> {
            Ok(())
        }
    }

    fn event(customer: &str, version: u64) -> EventEnvelope {
        EventEnvelope {
            event_id: EventId::new(),
            aggregate_id: AggregateId::LoyaltyAccount(CustomerId::parse(customer).unwrap()),
            version,
            occurred_at: chrono::Utc::now(),
            correlation_id: "corr".into(),
            causation_id: String::new(),
            command_id: "cmd".into(),
            event: DomainEvent::PointsEarned(PointsEarned {
                customer_id: customer.into(),
                points: 1,
                order_id: String::new(),
                balance_after: version as i64,
            }),
        }
    }

    fn claim(key: &str) -> IdempotencyClaim {
        IdempotencyClaim {
            key: key.into(),
            request_hash: "h".into(),
            response: crate::store::StoredResponse {
                status: 201,
                body: serde_json::json!({}),
            },
            ttl: Duration::from_secs(60),
        }
    }

    type Pending = tokio::task::JoinHandle<Result<(), StoreError>>;

    fn spawn_append(group: &Arc<GroupCommit<Arc<Fake>>>, customer: &str, version: u64, key: Option<&str>) -> Pending {
        let (group, events, claim) = (group.clone(), vec![event(customer, version)], key.map(claim));
        tokio::spawn(async move { group.append(&events, claim.as_ref()).await })
    }

    /// Holds the store inside a first call, queues `more` behind it, then lets all go.
    async fn with_one_in_flight(
        fake: &Arc<Fake>,
        group: &Arc<GroupCommit<Arc<Fake>>>,
        more: impl FnOnce() -> Vec<Pending>,
    ) -> (Result<(), StoreError>, Vec<Result<(), StoreError>>) {
        let first = spawn_append(group, "c-first", 1, None);
        fake.entered.notified().await;
        let queued = more();
        while group.shared.queue().jobs.len() < queued.len() {
            tokio::task::yield_now().await;
        }
        fake.held.as_ref().unwrap().add_permits(1_000);
        let mut results = Vec::new();
        for q in queued {
            results.push(q.await.unwrap());
        }
        (first.await.unwrap(), results)
    }

    fn names(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|c| (*c).to_owned()).collect()
    }

    #[tokio::test]
    async fn appends_queued_behind_a_transaction_share_the_next_one() {
        let fake = Arc::new(Fake::holding());
        let group = Arc::new(GroupCommit::new(fake.clone()));
        let (first, rest) = with_one_in_flight(&fake, &group, || {
            (1..=5)
                .map(|i| spawn_append(&group, &format!("c-{i}"), 1, Some(&format!("k-{i}"))))
                .collect()
        })
        .await;
        first.unwrap();
        assert!(rest.iter().all(Result::is_ok), "{rest:?}");
        assert_eq!(
            fake.calls(),
            vec![names(&["c-first"]), names(&["c-1", "c-2", "c-3", "c-4", "c-5"])]
        );
        assert_eq!(group.stats().appends.load(Ordering::Relaxed), 6);
        assert_eq!(group.stats().transactions.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_group_never_writes_one_aggregate_or_one_key_twice_and_keeps_each_aggregates_order() {
        let fake = Arc::new(Fake::holding());
        let group = Arc::new(GroupCommit::new(fake.clone()));
        let (_, rest) = with_one_in_flight(&fake, &group, || {
            vec![
                spawn_append(&group, "c-a", 1, Some("k-a")),
                // Same aggregate as the first: must wait for the next group.
                spawn_append(&group, "c-a", 2, Some("k-a2")),
                // Same key as the first, another aggregate: also the next group.
                spawn_append(&group, "c-b", 1, Some("k-a")),
                spawn_append(&group, "c-c", 1, None),
            ]
        })
        .await;
        let calls = fake.calls();
        assert_eq!(calls[1], names(&["c-a", "c-c"]), "{calls:?}");
        assert_eq!(calls[2], names(&["c-a", "c-b"]), "{calls:?}");
        assert!(rest[0].is_ok() && rest[1].is_ok() && rest[3].is_ok(), "{rest:?}");
        // The reused key is this member's own answer, not its group's.
        assert!(matches!(rest[2], Err(StoreError::IdempotencyRace(_))), "{rest:?}");
    }

    #[tokio::test]
    async fn a_lone_append_keeps_its_own_answer() {
        let fake = Arc::new(Fake::default());
        fake.events.lock().unwrap().insert(("c-taken".into(), 1));
        let group = GroupCommit::new(fake.clone());
        let err = group.append(&[event("c-taken", 1)], None).await.unwrap_err();
        assert!(matches!(err, StoreError::Conflict { version: 1, .. }), "{err}");
        group.append(&[event("c-free", 1)], None).await.unwrap();
        assert_eq!(group.stats().transactions.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_refused_group_is_retried_member_by_member_so_only_the_culprit_fails() {
        let fake = Arc::new(Fake::holding());
        fake.events.lock().unwrap().insert(("c-taken".into(), 1));
        let group = Arc::new(GroupCommit::new(fake.clone()));
        let (_, rest) = with_one_in_flight(&fake, &group, || {
            vec![
                spawn_append(&group, "c-x", 1, Some("k-x")),
                spawn_append(&group, "c-taken", 1, Some("k-t")),
                spawn_append(&group, "c-y", 1, None),
            ]
        })
        .await;
        assert!(rest[0].is_ok() && rest[2].is_ok(), "{rest:?}");
        assert!(
            matches!(rest[1], Err(StoreError::Conflict { version: 1, .. })),
            "{rest:?}"
        );
        let written = fake.events.lock().unwrap().clone();
        assert!(written.contains(&("c-x".into(), 1)) && written.contains(&("c-y".into(), 1)));
        assert!(
            !fake.keys.lock().unwrap().contains("k-t"),
            "the culprit's key must stay free"
        );
        assert_eq!(group.stats().refused_groups.load(Ordering::Relaxed), 1);
        // The group, then its three members on their own.
        assert_eq!(fake.calls().len(), 1 + 1 + 3);
    }

    #[tokio::test]
    async fn a_throttled_group_is_throttled_for_every_member() {
        let fake = Arc::new(Fake::holding());
        fake.throttle_groups.store(true, Ordering::Relaxed);
        let group = Arc::new(GroupCommit::new(fake.clone()));
        let (first, rest) = with_one_in_flight(&fake, &group, || {
            vec![
                spawn_append(&group, "c-1", 1, None),
                spawn_append(&group, "c-2", 1, None),
            ]
        })
        .await;
        first.unwrap();
        assert!(rest.iter().all(|r| matches!(r, Err(e) if e.is_transient())), "{rest:?}");
        assert_eq!(
            fake.events.lock().unwrap().len(),
            1,
            "only the lone first append was written"
        );
    }
}
