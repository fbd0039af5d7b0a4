//! Wiring of the write side: clients, the command service, the HTTP server and the
//! relay. No business logic: that lives in the libraries.

use std::sync::Arc;

use anyhow::{Context, Result};
use cafe_localstack::StackConfig;
use cafe_localstack::aws::CallCounter;
use cafe_localstack::faults::FaultInjector;
use cafe_producers::publish::{KinesisSink, Publisher, PublisherConfig};
use cafe_producers::relay::{self, RelayConfig, RelayStats};
use cafe_producers::service::{CommandService, ServiceConfig};
use cafe_producers::store::DynamoEventStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The command service as the binaries run it.
pub type Service = CommandService<DynamoEventStore, KinesisSink>;

/// AWS clients: the local stack's, or (with `aws`) the SDK default chain's. Cloning
/// shares the connections.
#[derive(Debug, Clone)]
pub struct Clients {
    /// Kinesis.
    pub kinesis: aws_sdk_kinesis::Client,
    /// DynamoDB.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// SQS.
    pub sqs: aws_sdk_sqs::Client,
    /// The Redshift Data API (used when the configuration names a Redshift target).
    pub redshift: aws_sdk_redshiftdata::Client,
    /// CloudWatch (moto locally), where the metrics publisher sends.
    pub cloudwatch: aws_sdk_cloudwatch::Client,
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
                cloudwatch: aws_sdk_cloudwatch::Client::new(&sdk),
            }
        } else {
            let sdk = cafe_localstack::aws::sdk_config(cfg).await;
            Clients {
                kinesis: cafe_localstack::aws::kinesis(&sdk, cfg),
                dynamodb: cafe_localstack::aws::dynamodb(&sdk, cfg),
                sqs: cafe_localstack::aws::sqs(&sdk, cfg),
                redshift: aws_sdk_redshiftdata::Client::new(&sdk),
                cloudwatch: cafe_localstack::aws::cloudwatch(&sdk, cfg),
            }
        }
    }
}

/// The calls-recording test hook ([`cafe_settings::vars::RECORD_AWS_CALLS`]): which AWS
/// calls a process makes, for the tests that hold them to its unit's list (its IAM role).
#[derive(Debug)]
pub struct Recording {
    path: std::path::PathBuf,
    calls: CallCounter,
}

impl Recording {
    /// `clients`, recorded when the environment sets the hook, and the recording to
    /// write when the process is done.
    pub fn hook(clients: Clients) -> (Clients, Option<Recording>) {
        match std::env::var_os(cafe_settings::vars::RECORD_AWS_CALLS) {
            Some(path) => {
                let calls = CallCounter::default();
                (
                    clients.recorded(&calls),
                    Some(Recording {
                        path: path.into(),
                        calls,
                    }),
                )
            }
            None => (clients, None),
        }
    }

    /// Writes the calls made (`Service.Operation` → count, JSON).
    pub fn write(self) -> Result<()> {
        let made = serde_json::to_vec(&self.calls.take()).context("the recorded calls")?;
        std::fs::write(&self.path, made).with_context(|| format!("writing {}", self.path.display()))
    }
}

impl Clients {
    /// These clients with every call they make counted by `calls`.
    #[must_use]
    pub fn recorded(self, calls: &CallCounter) -> Clients {
        macro_rules! with {
            ($client:expr, $sdk:ident) => {
                $sdk::Client::from_conf($client.config().to_builder().interceptor(calls.clone()).build())
            };
        }
        Clients {
            kinesis: with!(self.kinesis, aws_sdk_kinesis),
            dynamodb: with!(self.dynamodb, aws_sdk_dynamodb),
            sqs: with!(self.sqs, aws_sdk_sqs),
            redshift: with!(self.redshift, aws_sdk_redshiftdata),
            cloudwatch: with!(self.cloudwatch, aws_sdk_cloudwatch),
        }
    }

    /// These clients with `faults` injected into their Kinesis and DynamoDB calls (the
    /// same clients when the injector is off).
    #[must_use]
    pub fn with_faults(self, faults: &FaultInjector) -> Clients {
        Clients {
            kinesis: faults.kinesis(&self.kinesis),
            dynamodb: faults.dynamodb(&self.dynamodb),
            ..self
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

/// The HTTP server and the relay, running until the shutdown signal flips.
#[derive(Debug)]
pub struct Serving {
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    relay: tokio::task::JoinHandle<RelayStats>,
}

/// Serves `router` on `listener` and runs the relay until `shutdown` flips.
pub fn start(
    service: Arc<Service>,
    listener: TcpListener,
    router: axum::Router,
    relay_cfg: RelayConfig,
    shutdown: watch::Receiver<bool>,
) -> Serving {
    let mut server_stop = shutdown.clone();
    let outbox = service.clone();
    let server = tokio::spawn(async move {
        let served = crate::serve::serve(listener, router, async move {
            let _ = server_stop.wait_for(|stop| *stop).await;
        })
        .await;
        // The last answers went out before their markers were cleared.
        outbox.settled().await;
        served
    });
    let mut relay_stop = shutdown;
    let relay = tokio::spawn(async move {
        relay::run(
            service.store(),
            service.publisher(),
            relay_cfg,
            service.relay_progress(),
            async move {
                let _ = relay_stop.wait_for(|stop| *stop).await;
            },
        )
        .await
    });
    Serving { server, relay }
}

/// The outbox relay alone over the configured event store and stream, until
/// `shutdown`: how it runs as its own service in AWS, where the command API is a Lambda
/// function (which publishes its own events, but leaves those whose publish failed to a
/// relay).
pub async fn relay_alone(cfg: &StackConfig, aws: bool, shutdown: impl Future<Output = ()>) -> Result<RelayStats> {
    let (clients, recording) = Recording::hook(Clients::new(cfg, aws).await);
    let service = self::service(cfg, &clients, ServiceConfig::default());
    let stats = relay::run(
        service.store(),
        service.publisher(),
        RelayConfig::default(),
        service.relay_progress(),
        shutdown,
    )
    .await;
    if let Some(recording) = recording {
        recording.write()?;
    }
    Ok(stats)
}

impl Serving {
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
