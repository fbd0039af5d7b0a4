//! Group commit of the outbox: the events of concurrent commands go to Kinesis together.
//!
//! Every command used to make its own PutRecords call and its own marker updates, so
//! the stand-ins (and, in AWS, the per-call overheads) saw three calls per order. Here a
//! command queues its freshly appended events and waits; one drain task at a time takes
//! everything queued, publishes it in as few PutRecords calls as the limits allow (KPL
//! aggregation packs many orders into one record per shard), answers every waiting
//! command, and clears the pending markers 25 to a BatchWriteItem before the next round.
//! A command's answer need not wait for its markers: its events are stored and on the
//! stream, and a marker left behind costs only a republish by the relay. Under light
//! load a batch is one command and nothing waits longer than before; under heavy load
//! batches grow by themselves while the previous one is in flight, with no timer to tune.
//!
//! The queue is inside the publisher's in-flight budget: a command reserves room before
//! it queues, so memory stays bounded and the API's saturation check still sees it.
//! One drain at a time keeps the queue first-in first-out. The drain runs as its own
//! task, so a client that hangs up mid-request cannot strand the commands queued behind
//! it; a command whose answer never comes only means its events stay pending for the
//! relay, which is the outbox's normal recovery path anyway.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use cafe_events::EventEnvelope;
use tokio::sync::{Notify, OwnedSemaphorePermit, oneshot};
use tracing::Instrument;

use crate::publish::{PublishError, Publisher, RecordSink};
use crate::store::EventStore;

/// Most events one drain round takes from the queue.
const MAX_EVENTS_PER_ROUND: usize = 1_000;

/// What became of a command's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    /// On the stream (its markers are cleared next; if that fails the relay publishes
    /// them once more, a duplicate every consumer tolerates).
    Published,
    /// Not (all) on the stream: left pending for the relay.
    LeftPending,
}

struct Job {
    events: Vec<EventEnvelope>,
    reply: oneshot::Sender<Flushed>,
    _room: Option<OwnedSemaphorePermit>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    draining: bool,
}

/// The event store and the publisher, with the queue between commands and Kinesis.
pub struct Outbox<S, K> {
    store: S,
    publisher: Publisher<K>,
    queue: Mutex<Queue>,
    idle: Notify,
}

impl<S, K> std::fmt::Debug for Outbox<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").finish_non_exhaustive()
    }
}

impl<S: EventStore, K: RecordSink> Outbox<S, K> {
    /// An outbox over the two ports.
    pub fn new(store: S, publisher: Publisher<K>) -> Arc<Self> {
        Arc::new(Outbox {
            store,
            publisher,
            queue: Mutex::new(Queue::default()),
            idle: Notify::new(),
        })
    }

    /// The event store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The publisher.
    pub fn publisher(&self) -> &Publisher<K> {
        &self.publisher
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // The lock is never held across an await or a call that can panic; a poisoned
        // queue is still a consistent one.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until nothing is queued or in flight, the last markers cleared: what a
    /// server shutting down awaits after its last request, so a clean stop leaves
    /// nothing for the relay to publish twice.
    pub async fn settled(&self) {
        loop {
            let idle = self.idle.notified();
            if !self.queue().draining {
                return;
            }
            idle.await;
        }
    }

    /// Publishes appended events with whatever else is queued and says what happened;
    /// their markers are cleared after the answer. Waits while the in-flight budget is
    /// used up.
    pub async fn flush(self: &Arc<Self>, events: Vec<EventEnvelope>) -> Flushed {
        if events.is_empty() {
            return Flushed::Published;
        }
        let bytes = events.iter().map(|e| e.encode().len()).sum();
        let room = self.publisher.reserve(bytes).await;
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut q = self.queue();
            q.jobs.push_back(Job {
                events,
                reply,
                _room: room,
            });
            !std::mem::replace(&mut q.draining, true)
        };
        if start {
            let me = Arc::clone(self);
            tokio::spawn(async move { me.drain().await }.instrument(tracing::debug_span!("outbox_drain")));
        }
        answer.await.unwrap_or(Flushed::LeftPending)
    }

    async fn drain(&self) {
        // If this task panics, the next command must still be able to start a drain,
        // and whoever waits for the outbox to settle must not wait forever. The
        // answers are lost with the panic; the events stay pending for the relay.
        let _stop = crate::OnPanic(|| {
            let mut q = self.queue();
            q.draining = false;
            q.jobs.clear();
            self.idle.notify_waiters();
        });
        loop {
            let round: Vec<Job> = {
                let mut q = self.queue();
                let mut taken = 0;
                let mut round = Vec::new();
                while let Some(job) = q.jobs.front() {
                    if !round.is_empty() && taken + job.events.len() > MAX_EVENTS_PER_ROUND {
                        break;
                    }
                    taken += job.events.len();
                    round.extend(q.jobs.pop_front());
                }
                if round.is_empty() {
                    // Under the same lock as the check: a command queued after it
                    // sees no drain running and starts one.
                    q.draining = false;
                    self.idle.notify_waiters();
                    return;
                }
                round
            };
            self.round(round).await;
        }
    }

    /// One PutRecords round for the queued jobs; answers them, then clears the markers
    /// of what went out. The answer does not wait for the clearing: a marker that
    /// could not be cleared only means the relay publishes that event once more.
    async fn round(&self, jobs: Vec<Job>) {
        let events: Vec<EventEnvelope> = jobs.iter().flat_map(|j| j.events.iter().cloned()).collect();
        let not_published = match self.publisher.publish_reserved(&events).await {
            Ok(_) => Vec::new(),
            Err(PublishError::Exhausted {
                not_published,
                last_code,
                ..
            }) => {
                tracing::warn!(events = not_published.len(), last_code, "left pending for the relay");
                not_published
            }
            Err(e) => {
                tracing::warn!(error = %e, "publish failed; events left pending for the relay");
                for job in jobs {
                    let _ = job.reply.send(Flushed::LeftPending);
                }
                return;
            }
        };
        let is_out = |e: &EventEnvelope| {
            !not_published
                .iter()
                .any(|(id, v)| *v == e.version && *id == e.aggregate_id)
        };
        for job in jobs {
            let outcome = if job.events.iter().all(is_out) {
                Flushed::Published
            } else {
                Flushed::LeftPending
            };
            let _ = job.reply.send(outcome);
        }
        let published: Vec<EventEnvelope> = events.into_iter().filter(|e| is_out(e)).collect();
        if let Err(e) = self.store.mark_published(&published).await {
            tracing::warn!(error = %e, "could not clear pending markers; the relay will publish again");
        }
    }
}
