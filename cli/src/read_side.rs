//! Wiring of the read side: the read models, one projector worker per read model on the
//! events stream, and the query router over them. No logic: that is `cafe-projections`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use cafe_consumers::lease::DynamoLeaseTable;
use cafe_consumers::metrics::Metrics;
use cafe_consumers::parking::DynamoParkingLot;
use cafe_consumers::{Processor, Worker, WorkerConfig, WorkerReport};
use cafe_lambda_payment::requests::{self as payment_requests, PaymentRequests};
use cafe_localstack::StackConfig;
use cafe_producers::store::DynamoEventStore;
use cafe_projections::analytics::{AnalyticsFacts, DataApiOptions};
use cafe_projections::catalog::{
    AnalyticsEndpoint, AnyWarehouse, Endpoints, LIVE_ANALYTICS_SCHEMA, Namespace, ReadModel,
};
use cafe_projections::documents::MongoDocuments;
use cafe_projections::query::{Reads, at_least};
use cafe_projections::serving::{Following, LiveSide, Pointers, ServingReads};
use cafe_projections::{Projection, Projector};
use cafe_settings::vars;
use tokio_util::sync::CancellationToken;

use crate::pipeline::Clients;

/// Longest a `min_version` query waits.
pub const READ_WAIT: Duration = Duration::from_secs(5);

/// How the projector workers read the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reading {
    /// Wait between reads of a caught-up shard (None: the runtime's default, 1 s). In
    /// AWS every polling application shares a shard's 5 reads a second: with seven
    /// applications each may poll about 0.7 times a second.
    pub idle_poll: Option<Duration>,
    /// Read by enhanced fan-out (pushed records, a dedicated 2 MB/s per application)
    /// instead of polling.
    pub fan_out: bool,
}

/// The running projectors.
#[derive(Debug)]
pub struct ReadSide {
    workers: Vec<(&'static str, tokio::task::JoinHandle<WorkerReport>)>,
    stop: CancellationToken,
    metrics: Metrics,
    reading: Reading,
}

/// Where the read models' stores are: the environment's connection strings (set by
/// `cafe stack env` and in AWS), else the local stack's. The warehouse is Redshift
/// through its Data API when the environment names a Redshift target
/// (`CAFE_REDSHIFT_WORKGROUP` or `CAFE_REDSHIFT_CLUSTER`, see
/// [`DataApiOptions::from_env`]), else PostgreSQL-wire at `CAFE_ANALYTICS_URL` or the
/// local stack's `analytics` database.
pub fn endpoints(cfg: &StackConfig, clients: &Clients) -> Result<Endpoints> {
    endpoints_from(cfg, clients, |k| std::env::var(k).ok())
}

fn endpoints_from(cfg: &StackConfig, clients: &Clients, get: impl Fn(&str) -> Option<String>) -> Result<Endpoints> {
    let url = |var: &str, local: &dyn Fn() -> String| get(var).unwrap_or_else(local);
    let warehouse = match DataApiOptions::from_env(&get).context("the Redshift settings")? {
        Some(options) => AnalyticsEndpoint::DataApi(clients.redshift.clone(), options),
        None => AnalyticsEndpoint::Postgres(url(vars::ANALYTICS_URL, &|| {
            cfg.postgres_url(&cfg.names.analytics_database)
        })),
    };
    Ok(Endpoints {
        postgres_url: Some(url(vars::POSTGRES_URL, &|| {
            cfg.postgres_url(&cfg.names.orders_database)
        })),
        analytics: Some((warehouse, LIVE_ANALYTICS_SCHEMA.to_owned())),
        mongo: Some((
            url(vars::MONGO_URL, &|| cfg.mongo_url()),
            cfg.names.documents_database.clone(),
        )),
        redis_url: Some(url(vars::REDIS_URL, &|| cfg.redis_url())),
        memorydb_url: Some(url(vars::MEMORYDB_URL, &|| cfg.memorydb_url())),
        dynamodb: Some((clients.dynamodb.clone(), cfg.names.active_orders_table.clone())),
    })
}

/// Where the lag of `applications` is read: the stack's stream and lease table.
pub fn lag_probe(cfg: &StackConfig, clients: &Clients, applications: Vec<String>) -> cafe_consumers::lag::LagProbe {
    cafe_consumers::lag::LagProbe {
        kinesis: clients.kinesis.clone(),
        stream: cfg.names.stream.clone(),
        dynamodb: clients.dynamodb.clone(),
        leases_table: cfg.names.leases_table.clone(),
        applications,
    }
}

/// The replayer over the stack's event store, stream and read models, pacing itself
/// by the live projectors' lag: what `cafe replay` drives and the invariant checker
/// rebuilds with.
pub fn replayer(cfg: &StackConfig, clients: &Clients) -> Result<cafe_replay::Replayer<DynamoEventStore>> {
    let history = DynamoEventStore::new(
        clients.dynamodb.clone(),
        &cfg.names.events_table,
        &cfg.names.idempotency_table,
    );
    let replays = cafe_replay::Replays::new(clients.dynamodb.clone(), &cfg.names.replays_table);
    let at = endpoints(cfg, clients)?;
    let live = LiveSide::Serving(pointers(cfg, clients));
    // The live projectors: the consumers that share the replay's stores.
    let applications: Vec<String> = ReadModel::ALL.iter().map(|m| m.name().to_owned()).collect();
    Ok(cafe_replay::Replayer::new(history, replays, at, live)
        .with_stream(clients.kinesis.clone(), &cfg.names.stream)
        .with_lag_probe(lag_probe(cfg, clients, applications)))
}

/// The serving pointers (which copy of each model is live: a swap moves them).
pub fn pointers(cfg: &StackConfig, clients: &Clients) -> Pointers {
    Pointers::new(clients.dynamodb.clone(), &cfg.names.replays_table)
}

/// The read models the queries read: the serving copies, followed across swaps.
pub async fn models(at: &Endpoints, pointers: &Pointers, wait: Duration) -> Result<Reads> {
    let reads = ServingReads::connect(at.clone(), LiveSide::Serving(pointers.clone()), wait)
        .await
        .context("connecting the read models the queries read")?;
    Ok(Reads::Serving(Arc::new(reads)))
}

/// The live analytics read model (PostgreSQL playing Redshift here).
pub async fn analytics(at: &Endpoints) -> Result<AnalyticsFacts<AnyWarehouse>> {
    at.analytics(&Namespace::Live)
        .await
        .context("connecting the analytics read model")
}

/// Every read model of the catalog, as projections that follow their serving copy.
pub async fn projections(at: &Endpoints, pointers: &Pointers) -> Result<Vec<Following>> {
    let mut out = Vec::with_capacity(ReadModel::ALL.len());
    for model in ReadModel::ALL {
        let p = Following::connect(model, at.clone(), LiveSide::Serving(pointers.clone()))
            .await
            .with_context(|| format!("connecting the {model} read model ({})", model.store()))?;
        out.push(p);
    }
    Ok(out)
}

impl ReadSide {
    /// Starts one projector worker per read model of `projections`, and the consumer that
    /// sends a payment request to `payments_queue` (a URL) for every placed order, all
    /// reporting into `metrics` (one registry per process).
    pub fn start(
        cfg: &StackConfig,
        clients: &Clients,
        projections: Vec<Following>,
        payments_queue: &str,
        worker_id: &str,
        metrics: Metrics,
        reading: Reading,
    ) -> ReadSide {
        let mut side = ReadSide {
            workers: Vec::new(),
            stop: CancellationToken::new(),
            metrics,
            reading,
        };
        for projection in projections {
            side.spawn(cfg, clients, worker_id, projection);
        }
        side.spawn_worker(
            cfg,
            clients,
            worker_id,
            payment_requests::APPLICATION,
            PaymentRequests::new(clients.sqs.clone(), payments_queue),
        );
        side
    }

    fn spawn<P: Projection>(&mut self, cfg: &StackConfig, clients: &Clients, worker_id: &str, projection: P) {
        let name = projection.name();
        self.spawn_worker(cfg, clients, worker_id, name, Projector::new(projection));
    }

    fn spawn_worker<P: Processor>(
        &mut self,
        cfg: &StackConfig,
        clients: &Clients,
        worker_id: &str,
        name: &'static str,
        processor: P,
    ) {
        let mut config = WorkerConfig {
            worker_id: worker_id.to_owned(),
            ..WorkerConfig::new(name, &cfg.names.stream)
        };
        if let Some(idle) = self.reading.idle_poll {
            config.idle_poll = idle;
        }
        if self.reading.fan_out {
            // One registered consumer per application (each gets its own 2 MB/s).
            config.fan_out = Some(format!("cafe-{name}"));
        }
        let worker = Worker::new(
            config,
            clients.kinesis.clone(),
            DynamoLeaseTable::new(clients.dynamodb.clone(), &cfg.names.leases_table, name),
            Arc::new(DynamoParkingLot::new(clients.dynamodb.clone(), &cfg.names.parked_table)),
            Arc::new(processor),
            self.metrics.clone(),
        );
        self.workers.push((name, tokio::spawn(worker.run(self.stop.clone()))));
    }

    /// The consumer applications running (each projector's, and the payment requests').
    pub fn applications(&self) -> Vec<&'static str> {
        self.workers.iter().map(|(name, _)| *name).collect()
    }

    /// Stops every projector (each finishes its batch, checkpoints and releases its
    /// leases, or gives up on a stuck batch at its drain deadline) and returns what each
    /// did.
    pub async fn stop(self) -> Vec<(&'static str, WorkerReport)> {
        self.stop.cancel();
        let mut reports = Vec::new();
        for (name, handle) in self.workers {
            match handle.await {
                Ok(report) => reports.push((name, report)),
                Err(e) => tracing::error!(projector = name, error = %e, "projector task failed"),
            }
        }
        reports
    }
}

/// One read model's answer about an order, for the smoke run's printout.
#[derive(Debug)]
pub struct ReadBack {
    /// Which read model.
    pub model: &'static str,
    /// Whether it had the order.
    pub ok: bool,
    /// What it said.
    pub detail: String,
    /// The order's total, when this read model has it.
    pub total_cents: Option<i64>,
}

/// Asks every read model about `order_id` through the API, as a client would.
pub async fn read_back(http: &crate::load::Http, base: &str, order_id: &str) -> Vec<ReadBack> {
    let mut out = Vec::new();
    let (status, order) = crate::load::get(http, base, &format!("/v1/orders/{order_id}?min_version=1"))
        .await
        .unwrap_or((0, serde_json::Value::Null));
    out.push(ReadBack {
        model: "aurora orders",
        ok: status == 200,
        detail: format!(
            "GET /v1/orders/{order_id} -> {status}: status {} total {} v{}",
            order["status"], order["total_amount"], order["version"]
        ),
        total_cents: order["total_cents"].as_i64(),
    });
    let customer = order["customer_id"].as_str().unwrap_or("unknown");
    let path = format!("/v1/customers/{customer}/orders?wait_for={order_id}&min_version=1&limit=100");
    let (status, list) = crate::load::get(http, base, &path)
        .await
        .unwrap_or((0, serde_json::Value::Null));
    let listed = list["items"]
        .as_array()
        .is_some_and(|items| items.iter().any(|o| o["order_id"] == order_id));
    out.push(ReadBack {
        model: "dynamodb active-orders",
        ok: status == 200 && listed,
        detail: format!("GET /v1/customers/{customer}/orders -> {status}: listed {listed}"),
        total_cents: None,
    });
    out
}

/// Asks the read models the API does not expose about `order_id`: its document and its
/// analytics facts (whose sum must equal the Aurora total).
pub async fn read_back_direct(
    documents: &MongoDocuments,
    analytics: &AnalyticsFacts<AnyWarehouse>,
    order_id: &str,
    aurora_total: Option<i64>,
) -> Vec<ReadBack> {
    // The same bounded wait the query endpoints use; a model that never has it is a MISS.
    let doc = at_least(
        Some(1),
        READ_WAIT,
        || documents.order_document(order_id),
        |d| d.as_ref().map(|d| d.version),
    )
    .await
    .ok()
    .flatten();
    let reports = analytics.reports();
    let sum = at_least(
        Some(1),
        READ_WAIT,
        || reports.order_total_cents(order_id),
        |sum| sum.map(|_| 1),
    )
    .await
    .ok()
    .flatten();
    vec![
        ReadBack {
            model: "documentdb order doc",
            ok: doc.is_some(),
            detail: doc.map_or("missing".to_owned(), |d| {
                format!("status {} total_cents {} v{}", d.status, d.total_cents, d.version)
            }),
            total_cents: None,
        },
        ReadBack {
            model: "redshift facts",
            ok: sum.is_some() && sum == aurora_total,
            detail: format!("sum(fact_order_lines) {sum:?} vs aurora total_cents {aurora_total:?}"),
            total_cents: sum,
        },
    ]
}

/// Asks the orders read model whether the payment saga settled `order_id`: its status
/// must have moved past `placed` (version 2: `PaymentAuthorized` or `PaymentDeclined`).
pub async fn read_back_payment(http: &crate::load::Http, base: &str, order_id: &str) -> ReadBack {
    let (status, order) = crate::load::get(http, base, &format!("/v1/orders/{order_id}?min_version=2"))
        .await
        .unwrap_or((0, serde_json::Value::Null));
    let settled = matches!(order["status"].as_str(), Some("paid" | "payment_declined"));
    ReadBack {
        model: "payment saga",
        ok: status == 200 && settled,
        detail: format!(
            "GET /v1/orders/{order_id}?min_version=2 -> {status}: status {}",
            order["status"]
        ),
        total_cents: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| pairs.iter().find(|(name, _)| *name == k).map(|(_, v)| (*v).to_owned())
    }

    /// The code path to the warehouse is chosen by configuration: the same binary
    /// reaches PostgreSQL here and Redshift's Data API in AWS.
    #[tokio::test]
    async fn the_warehouse_is_the_data_api_when_a_redshift_target_is_configured() {
        let cfg = StackConfig::default();
        let clients = Clients::new(&cfg, false).await;
        let local = endpoints_from(&cfg, &clients, env(&[])).unwrap();
        assert!(
            matches!(&local.analytics, Some((AnalyticsEndpoint::Postgres(url), _)) if url.ends_with(&cfg.names.analytics_database)),
            "{:?}",
            local.analytics
        );
        let aws = endpoints_from(
            &cfg,
            &clients,
            env(&[("CAFE_REDSHIFT_WORKGROUP", "cafe"), ("CAFE_REDSHIFT_DATABASE", "dev")]),
        )
        .unwrap();
        let Some((AnalyticsEndpoint::DataApi(_, options), schema)) = &aws.analytics else {
            panic!("{:?}", aws.analytics);
        };
        assert_eq!(
            (options.database.as_str(), schema.as_str()),
            ("dev", LIVE_ANALYTICS_SCHEMA)
        );
        let both = env(&[
            ("CAFE_REDSHIFT_WORKGROUP", "cafe"),
            ("CAFE_REDSHIFT_CLUSTER", "dw"),
            ("CAFE_REDSHIFT_DATABASE", "dev"),
        ]);
        assert!(endpoints_from(&cfg, &clients, both).is_err());
    }
}
