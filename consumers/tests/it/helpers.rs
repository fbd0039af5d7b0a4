use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cafe_consumers::lease::DynamoLeaseTable;
use cafe_consumers::metrics::Metrics;
use cafe_consumers::parking::DynamoParkingLot;
use cafe_consumers::{BatchContext, Outcome, Processor, Record, Worker, WorkerConfig, WorkerReport};
use cafe_localstack::{Service, StackConfig, aws, health, provision};
use tokio_util::sync::CancellationToken;

/// A lease table of its own (fresh name) on the DynamoDB stand-in, and a raw client to
/// look at its items.
pub async fn fresh_leases(application: &str) -> (DynamoLeaseTable, aws_sdk_dynamodb::Client, String) {
    let cfg = StackConfig::load().unwrap();
    if let Err(why) = health::probe(&cfg, Service::DynamoDb).await {
        panic!("DynamoDB stand-in not reachable ({why}); start the stack with `infra/local/dev.sh up`");
    }
    let client = aws::dynamodb(&aws::sdk_config(&cfg).await, &cfg);
    let name = format!("it-leases-{}", uuid::Uuid::now_v7().simple());
    let spec = provision::ensure_table_like(&client, &cfg.names, &cfg.names.leases_table, &name)
        .await
        .unwrap();
    (
        DynamoLeaseTable::new(client.clone(), &spec.name, application),
        client,
        spec.name,
    )
}

/// A stream, a lease table and a parked table of their own, and the clients to use them.
#[derive(Clone)]
pub struct Fixture {
    pub kinesis: aws_sdk_kinesis::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub stream: String,
    pub leases_table: String,
    pub parked_table: String,
}

/// A fresh [`Fixture`] with a `shards`-shard stream.
pub async fn fixture(shards: u32) -> Fixture {
    let cfg = StackConfig::load().unwrap();
    if let Err(why) = health::probe(&cfg, Service::Kinesis).await {
        panic!("Kinesis stand-in not reachable ({why}); start the stack with `infra/local/dev.sh up`");
    }
    let sdk = aws::sdk_config(&cfg).await;
    let (kinesis, dynamodb) = (aws::kinesis(&sdk, &cfg), aws::dynamodb(&sdk, &cfg));
    let id = uuid::Uuid::now_v7().simple().to_string();
    let stream = format!("it-consume-{id}");
    provision::ensure_stream(&kinesis, &stream, shards).await.unwrap();
    let mut names = Vec::new();
    for (wanted, prefix) in [
        (&cfg.names.leases_table, "it-leases"),
        (&cfg.names.parked_table, "it-parked"),
    ] {
        let name = format!("{prefix}-{id}");
        provision::ensure_table_like(&dynamodb, &cfg.names, wanted, &name)
            .await
            .unwrap();
        names.push(name);
    }
    let parked_table = names.pop().unwrap();
    let leases_table = names.pop().unwrap();
    Fixture {
        kinesis,
        dynamodb,
        stream,
        leases_table,
        parked_table,
    }
}

impl Fixture {
    /// Fast timings so tests finish in seconds: failover 3 s, polls of 200 ms.
    pub fn config(&self, application: &str, worker: &str) -> WorkerConfig {
        WorkerConfig {
            worker_id: worker.to_owned(),
            failover: Duration::from_secs(3),
            take_interval: Duration::from_millis(500),
            discovery_interval: Duration::from_secs(1),
            idle_poll: Duration::from_millis(200),
            checkpoint_interval: Duration::from_millis(200),
            retry_base: Duration::from_millis(20),
            retry_cap: Duration::from_millis(300),
            ..WorkerConfig::new(application, &self.stream)
        }
    }

    pub fn leases(&self, application: &str) -> DynamoLeaseTable {
        DynamoLeaseTable::new(self.dynamodb.clone(), &self.leases_table, application)
    }

    pub fn parking(&self) -> DynamoParkingLot {
        DynamoParkingLot::new(self.dynamodb.clone(), &self.parked_table)
    }

    /// A worker with `cfg`, running on a task until the returned token is cancelled.
    pub fn spawn<P: Processor>(
        &self,
        cfg: WorkerConfig,
        processor: Arc<P>,
    ) -> (CancellationToken, tokio::task::JoinHandle<WorkerReport>) {
        let application = cfg.application.clone();
        let worker = Worker::new(
            cfg,
            self.kinesis.clone(),
            self.leases(&application),
            Arc::new(self.parking()),
            processor,
            Metrics::unregistered(),
        );
        let stop = CancellationToken::new();
        let handle = tokio::spawn(worker.run(stop.clone()));
        (stop, handle)
    }

    /// Puts `key:n` records, raw (one Kinesis record each).
    pub async fn put(&self, records: &[(String, u64)]) {
        let raw: Vec<(String, String)> = records.iter().map(|(k, n)| (k.clone(), format!("{k}:{n}"))).collect();
        cafe_localstack::testing::put_raw(&self.kinesis, &self.stream, &raw).await;
    }

    /// Puts `keys` records per round (`key-0` .. `key-{keys-1}`, each numbered from 0
    /// upwards) every 50 ms until `stop`; returns everything put.
    pub fn produce(&self, keys: usize, stop: CancellationToken) -> tokio::task::JoinHandle<Vec<(String, u64)>> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut n = 0u64;
            while !stop.is_cancelled() {
                let round: Vec<(String, u64)> = (0..keys).map(|k| (format!("key-{k}"), n)).collect();
                this.put(&round).await;
                sent.extend(round);
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            sent
        })
    }

    /// Polls `check` every 100 ms until it holds, or panics with `what` after `limit`.
    pub async fn eventually<F: AsyncFnMut() -> bool>(&self, what: &str, limit: Duration, check: F) {
        cafe_localstack::testing::eventually(what, limit, check).await;
    }
}

/// One record as a [`Collector`] saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub worker: String,
    pub shard: String,
    pub key: String,
    pub n: u64,
    /// When it was processed: orders the logs of several workers.
    pub at: Instant,
}

/// A processor that remembers what it processed. Records whose data starts with
/// `poison` are parked; a record listed in `flaky` fails (Retry) that many times first.
/// Like a well-behaved projector it stops at its first failure.
#[derive(Debug, Default)]
pub struct Collector {
    pub name: String,
    pub seen: Mutex<Vec<Seen>>,
    pub flaky: Mutex<HashMap<String, u32>>,
}

impl Collector {
    pub fn new(name: &str) -> Arc<Collector> {
        Arc::new(Collector {
            name: name.to_owned(),
            ..Collector::default()
        })
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Processor for Collector {
    async fn process(&self, ctx: BatchContext<'_>, records: &[Record]) -> Vec<Outcome> {
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            let text = String::from_utf8_lossy(&r.data).into_owned();
            if text.starts_with("poison") {
                out.push(Outcome::Park(format!("cannot decode {text:?}")));
                continue;
            }
            {
                let mut flaky = self.flaky.lock().unwrap();
                if let Some(left) = flaky.get_mut(&text)
                    && *left > 0
                {
                    *left -= 1;
                    out.push(Outcome::Retry("the read model is restarting".into()));
                    break;
                }
            }
            let (key, n) = text.rsplit_once(':').unwrap();
            self.seen.lock().unwrap().push(Seen {
                worker: self.name.clone(),
                shard: ctx.shard_id.to_owned(),
                key: key.to_owned(),
                n: n.parse().unwrap(),
                at: Instant::now(),
            });
            out.push(Outcome::Done);
        }
        out
    }
}
