//! What every read model's tests share: fresh names, a stream + lease table to run a
//! real worker over, and a projection wrapper that counts what it applied.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cafe_consumers::lease::DynamoLeaseTable;
use cafe_consumers::metrics::Metrics;
use cafe_consumers::parking::DynamoParkingLot;
use cafe_consumers::{Worker, WorkerConfig, WorkerReport};
use cafe_events::proto::orders::v1::OrderPlaced;
use cafe_events::{DomainEvent, EventEnvelope};
use cafe_localstack::{StackConfig, aws, provision};
use cafe_projections::{Batch, Projection, ProjectionError, Projector};
use tokio_util::sync::CancellationToken;

/// A name no other test uses: `[a-z0-9_]`, so it works as a schema, database,
/// collection, key prefix and table suffix alike.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

pub fn stack() -> StackConfig {
    StackConfig::load().unwrap()
}

/// The first order a history places, and the version its last event leaves it at: what
/// a read model must show for it after the whole history.
pub fn first_order(history: &[EventEnvelope]) -> (OrderPlaced, u64) {
    let placed = history
        .iter()
        .find_map(|e| match &e.event {
            DomainEvent::OrderPlaced(p) => Some(p.clone()),
            _ => None,
        })
        .unwrap();
    let last = history
        .iter()
        .rfind(|e| e.aggregate_id.to_string() == placed.order_id)
        .unwrap()
        .version;
    (placed, last)
}

/// Delegates to a shared projection and counts the events it was offered.
pub struct Counting<P> {
    pub inner: Arc<P>,
    pub applied: Arc<AtomicUsize>,
}

impl<P: Projection> Projection for Counting<P> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn apply(&self, batch: Batch<'_>) -> Result<(), ProjectionError> {
        self.inner.apply(batch).await?;
        self.applied.fetch_add(batch.events.len(), Ordering::SeqCst);
        Ok(())
    }

    async fn snapshot(&self) -> Result<Vec<String>, ProjectionError> {
        self.inner.snapshot().await
    }
}

/// A 4-shard stream holding `history` (one record per event), with its own lease and
/// parked tables.
pub struct Stream {
    pub kinesis: aws_sdk_kinesis::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub name: String,
    pub leases: String,
    pub parked: String,
}

impl Stream {
    pub async fn with(history: &[EventEnvelope]) -> Stream {
        let cfg = stack();
        let sdk = aws::sdk_config(&cfg).await;
        let (kinesis, dynamodb) = (aws::kinesis(&sdk, &cfg), aws::dynamodb(&sdk, &cfg));
        let id = unique("proj").replace('_', "-");
        provision::ensure_stream(&kinesis, &id, 4).await.unwrap();
        let mut tables = Vec::new();
        for (wanted, prefix) in [(&cfg.names.leases_table, "leases"), (&cfg.names.parked_table, "parked")] {
            let name = format!("{prefix}-{id}");
            provision::ensure_table_like(&dynamodb, &cfg.names, wanted, &name)
                .await
                .unwrap();
            tables.push(name);
        }
        let records: Vec<(String, bytes::Bytes)> = history.iter().map(|e| (e.partition_key(), e.encode())).collect();
        cafe_localstack::testing::put_raw(&kinesis, &id, &records).await;
        Stream {
            kinesis,
            dynamodb,
            name: id,
            parked: tables.pop().unwrap(),
            leases: tables.pop().unwrap(),
        }
    }

    /// A worker running `projection` until the token is cancelled (or its task aborted).
    pub fn spawn<P: Projection>(
        &self,
        application: &str,
        worker: &str,
        projection: P,
    ) -> (CancellationToken, tokio::task::JoinHandle<WorkerReport>) {
        let cfg = WorkerConfig {
            worker_id: worker.to_owned(),
            failover: Duration::from_secs(3),
            take_interval: Duration::from_millis(500),
            discovery_interval: Duration::from_secs(1),
            idle_poll: Duration::from_millis(200),
            checkpoint_interval: Duration::from_millis(200),
            retry_base: Duration::from_millis(50),
            retry_cap: Duration::from_millis(500),
            // Small batches, so a crash lands mid-history.
            max_records: 100,
            ..WorkerConfig::new(application, &self.name)
        };
        let w = Worker::new(
            cfg,
            self.kinesis.clone(),
            DynamoLeaseTable::new(self.dynamodb.clone(), &self.leases, application),
            Arc::new(DynamoParkingLot::new(self.dynamodb.clone(), &self.parked)),
            Arc::new(Projector::new(projection)),
            Metrics::unregistered(),
        );
        let stop = CancellationToken::new();
        (stop.clone(), tokio::spawn(w.run(stop)))
    }
}

/// Slows a fast read model down on real Kinesis shards only (`shardId-...`), so the
/// conformance suite's worker can be killed a third of the way through: a store that
/// skips most events (the cache, the inventory) otherwise finishes the whole stream
/// between two of its polls. The direct applies (`shard-000`, `replay`, ...) run at
/// full speed.
pub struct Paced<P>(pub P);

impl<P: Projection> Projection for Paced<P> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    async fn apply(&self, batch: Batch<'_>) -> Result<(), ProjectionError> {
        if batch.shard_id.starts_with("shardId-") {
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
        self.0.apply(batch).await
    }

    async fn snapshot(&self) -> Result<Vec<String>, ProjectionError> {
        self.0.snapshot().await
    }
}
