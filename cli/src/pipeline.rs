//! Wiring of the running pipeline: clients, the command service, the API server and the
//! relay. No business logic: that lives in the libraries.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use cafe_localstack::StackConfig;
use cafe_producers::publish::{KinesisSink, Publisher, PublisherConfig};
use cafe_producers::relay::{self, RelayConfig, RelayStats};
use cafe_producers::service::{CommandService, ServiceConfig};
use cafe_producers::store::DynamoEventStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The command service as the binaries run it.
pub type Service = CommandService<DynamoEventStore, KinesisSink>;

/// AWS clients: the local stack's, or (with `aws`) the SDK default chain's.
pub struct Clients {
    /// Kinesis.
    pub kinesis: aws_sdk_kinesis::Client,
    /// DynamoDB.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// The Redshift Data API (used when the configuration names a Redshift target).
    pub redshift: aws_sdk_redshiftdata::Client,
}

impl Clients {
    /// Built once at start-up and shared.
    pub async fn new(cfg: &StackConfig, aws: bool) -> Clients {
        if aws {
            let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
            Clients {
                kinesis: aws_sdk_kinesis::Client::new(&sdk),
                dynamodb: aws_sdk_dynamodb::Client::new(&sdk),
                sqs: aws_sdk_sqs::Client::new(&sdk),
                redshift: aws_sdk_redshiftdata::Client::new(&sdk),
            }
        } else {
            let sdk = cafe_localstack::aws::sdk_config(cfg).await;
            Clients {
                kinesis: cafe_localstack::aws::kinesis(&sdk, cfg),
                dynamodb: cafe_localstack::aws::dynamodb(&sdk, cfg),
                sqs: cafe_localstack::aws::sqs(&sdk, cfg),
                redshift: aws_sdk_redshiftdata::Client::new(&sdk),
            }
        }
    }
}

/// The command service over the configured tables and stream.
pub fn service(cfg: &StackConfig, clients: &Clients, service_cfg: ServiceConfig) -> Arc<Service> {
    let store = DynamoEventStore::new(
        clients.dynamodb.clone(),
        &cfg.names.events_table,
        &cfg.names.idempotency_table,
    );
    let publisher = Publisher::new(
        KinesisSink::new(clients.kinesis.clone(), &cfg.names.stream),
        PublisherConfig::default(),
    );
    Arc::new(CommandService::new(store, publisher, service_cfg))
}

/// The API server and the relay, running until the shutdown signal flips.
pub struct Running {
    /// Where the API listens.
    pub addr: SocketAddr,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    relay: tokio::task::JoinHandle<RelayStats>,
}

/// Binds the API (commands, and queries when `reads` is given) and starts serving it
/// and the relay.
pub async fn start(
    service: Arc<Service>,
    listen: SocketAddr,
    relay_cfg: RelayConfig,
    shutdown: watch::Receiver<bool>,
    reads: Option<cafe_projections::query::Reads>,
) -> Result<Running> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the API to {listen}"))?;
    let addr = listener.local_addr()?;
    let mut router = cafe_producers::api::router(service.clone());
    if let Some(reads) = reads {
        router = router.merge(cafe_projections::query::router(reads));
    }
    let mut server_stop = shutdown.clone();
    let outbox = service.clone();
    let server = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|stop| *stop).await;
            })
            .await;
        // The last answers went out before their markers were cleared.
        outbox.settled().await;
        served
    });
    let mut relay_stop = shutdown;
    let relay = tokio::spawn(async move {
        relay::run(service.store(), service.publisher(), relay_cfg, async move {
            let _ = relay_stop.wait_for(|stop| *stop).await;
        })
        .await
    });
    Ok(Running { addr, server, relay })
}

impl Running {
    /// Waits for the server to finish in-flight requests and the relay its pass, at most
    /// `deadline`; None when the deadline passed first (both are then aborted: what the
    /// relay left pending, its next pass or another instance publishes).
    pub async fn drained(self, deadline: std::time::Duration) -> Result<Option<RelayStats>> {
        let (server, relay) = (self.server, self.relay);
        let (server_abort, relay_abort) = (server.abort_handle(), relay.abort_handle());
        let both = async {
            server.await.context("API server task")?.context("API server")?;
            relay.await.context("relay task")
        };
        match tokio::time::timeout(deadline, both).await {
            Ok(stats) => stats.map(Some),
            Err(_) => {
                server_abort.abort();
                relay_abort.abort();
                Ok(None)
            }
        }
    }
}
