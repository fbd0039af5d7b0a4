//! The application: built from [`Settings`] (connections made, the listener bound), then
//! started (server, relay, projectors, saga running) and stopped (each stage drained
//! within a deadline, what was left undone reported). zero-to-production's
//! `Application::build` / `run_until_stopped`, split in two so a caller can act on the
//! running system (load it, read its metrics) between start and stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cafe_consumers::WorkerReport;
use cafe_consumers::cloudwatch::{CloudWatchConfig, CloudWatchPublisher};
use cafe_consumers::metrics::Metrics;
use cafe_consumers::monitor::MonitorConfig;
use cafe_localstack::StackConfig;
use cafe_localstack::faults::FaultInjector;
use cafe_producers::api::guard::LocalAuth;
use cafe_producers::api::{self, Limits};
use cafe_producers::relay::{RelayConfig, RelayStats};
use cafe_producers::service::ServiceConfig;
use cafe_projections::catalog::Endpoints;
use cafe_projections::query::Reads;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::app_metrics::{self, HttpMetrics};
use crate::dashboard::{self, Dashboard};
use crate::payments::{self, Saga, SagaReport};
use crate::pipeline::{self, Clients, Service};
use crate::read_side::{self, ReadSide, Reading};

/// What to run, and against what.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Names, ports and endpoints of the stack (local, or the names used in AWS).
    pub stack: StackConfig,
    /// Use the AWS SDK's default chain instead of the local stack's endpoints.
    pub aws: bool,
    /// Where the HTTP server listens; port 0 picks a free one ([`Application::addr`]).
    pub listen: SocketAddr,
    /// The command service's settings.
    pub service: ServiceConfig,
    /// The outbox relay's settings.
    pub relay: RelayConfig,
    /// Serve the query endpoints over the read models.
    pub queries: bool,
    /// Run one projector worker per read model, and the payment-requests consumer.
    pub projectors: bool,
    /// Run the payment function under the Lambda emulator (local only: in AWS it is
    /// deployed with its event source mapping).
    pub saga: bool,
    /// This process's worker id in the lease tables.
    pub worker_id: String,
    /// Serve the lag dashboard (`/dashboard`, `/v1/lag`), its monitor looking this
    /// way; None: no dashboard.
    pub monitor: Option<MonitorConfig>,
    /// Publish the consumer metrics to CloudWatch this way; None: not at all (locally
    /// the default: moto keeps every value of a distribution as its own object, so a
    /// long run would grow it without bound).
    pub cloudwatch: Option<CloudWatchConfig>,
    /// How the projectors read the stream (polling interval, or enhanced fan-out).
    pub reading: Reading,
    /// Faults injected into the Kinesis and DynamoDB clients (off unless configured with
    /// `CAFE__FAULTS__*`, or armed by a chaos experiment).
    pub faults: FaultInjector,
    /// Longest a query with `?min_version=` waits for its read model before its 503.
    pub read_wait: Duration,
    /// Each caller's token bucket; None: no rate limit (benchmarks that measure the
    /// pipeline beyond one caller's share).
    pub limits: Option<Limits>,
}

impl Settings {
    /// Everything, on the local stack, on a free port.
    pub fn local(stack: StackConfig) -> Settings {
        Settings {
            stack,
            aws: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            service: ServiceConfig::default(),
            relay: RelayConfig::default(),
            queries: true,
            projectors: true,
            saga: true,
            worker_id: format!("app-{}", std::process::id()),
            monitor: Some(MonitorConfig::default()),
            cloudwatch: None,
            reading: Reading::default(),
            faults: FaultInjector::off(),
            limits: Some(Limits::default()),
            read_wait: read_side::READ_WAIT,
        }
    }
}

/// Fault injection for the crash test: `CAFE_FAULT_PAUSE_AFTER_APPEND_MS` widens the
/// window between append and publish. Unset in every normal run.
pub fn service_config_from_env() -> Result<ServiceConfig> {
    let pause = match std::env::var(cafe_settings::vars::FAULT_PAUSE_AFTER_APPEND_MS) {
        Ok(ms) => Some(Duration::from_millis(
            ms.parse().context(cafe_settings::vars::FAULT_PAUSE_AFTER_APPEND_MS)?,
        )),
        Err(_) => None,
    };
    Ok(ServiceConfig {
        pause_after_append: pause,
        ..ServiceConfig::default()
    })
}

/// Built: connected and bound, nothing running yet.
pub struct Application {
    settings: Settings,
    clients: Clients,
    service: Arc<Service>,
    endpoints: Endpoints,
    reads: Option<Reads>,
    listener: TcpListener,
    addr: SocketAddr,
    registry: Registry,
    consumer_metrics: Metrics,
    http_metrics: HttpMetrics,
    auth: LocalAuth,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Connects to the stores and binds the listener. Fails, naming what it was
    /// connecting to, when a part of the stack is unreachable.
    pub async fn build(settings: Settings) -> Result<Application> {
        let cfg = &settings.stack;
        let clients = Clients::new(cfg, settings.aws).await.with_faults(&settings.faults);
        let service = pipeline::service(cfg, &clients, settings.service.clone());
        let endpoints = read_side::endpoints(cfg, &clients)?;
        let reads = if settings.queries {
            Some(read_side::models(&endpoints, &read_side::pointers(cfg, &clients), settings.read_wait).await?)
        } else {
            None
        };
        // The local identity provider: its key made on the first run and kept, its JWKS
        // beside it, which is what this server trusts (`cafe token` mints from the key).
        let auth_dir = cfg.auth_dir();
        let auth =
            LocalAuth::open(&auth_dir).with_context(|| format!("the local signing key in {}", auth_dir.display()))?;
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("binding the HTTP server to {}", settings.listen))?;
        let addr = listener.local_addr()?;
        // One registry for the process: every projector's series share it, told apart
        // by their `application` label.
        let mut registry = Registry::default();
        let consumer_metrics = Metrics::register(&mut registry);
        let http_metrics = HttpMetrics::register(&mut registry);
        app_metrics::register_producer(&mut registry, service.clone());
        Ok(Application {
            settings,
            clients,
            service,
            endpoints,
            reads,
            listener,
            addr,
            registry,
            consumer_metrics,
            http_metrics,
            auth,
        })
    }

    /// Where the HTTP server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The AWS clients the application uses.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// Starts serving and consuming.
    pub async fn start(self) -> Result<Running> {
        let Application {
            settings,
            clients,
            service,
            endpoints,
            reads,
            listener,
            addr,
            registry,
            consumer_metrics,
            http_metrics,
            auth,
        } = self;
        let cfg = &settings.stack;
        let payments_queue = payments::queue_url(&clients.sqs, &cfg.names.payments_queue).await?;
        let read_side = if settings.projectors {
            let pointers = read_side::pointers(cfg, &clients);
            Some(ReadSide::start(
                cfg,
                &clients,
                read_side::projections(&endpoints, &pointers).await?,
                &payments_queue,
                &settings.worker_id,
                consumer_metrics.clone(),
                settings.reading,
            ))
        } else {
            None
        };
        let saga = if settings.saga && !settings.aws {
            Some(Saga::start(cfg, &clients.sqs, &settings.faults).await?)
        } else {
            None
        };
        let mut registry = registry;
        if let Some(saga) = &saga {
            app_metrics::register_payments(&mut registry, saga.gauges());
        }
        let registry = Arc::new(registry);
        // One document for everything served: the commands', and the queries' when served.
        let mut doc = api::openapi_document();
        if reads.is_some() {
            doc.merge(cafe_projections::query::openapi());
        }
        doc.merge(dashboard::metrics_openapi());
        if settings.monitor.is_some() {
            doc.merge(dashboard::openapi());
        }
        let mut router = api::router_documented(service.clone(), doc)
            .merge(api::observers_only(cafe_consumers::metrics::router(registry.clone())));
        let background = CancellationToken::new();
        let dashboard = settings.monitor.map(|monitor| {
            Dashboard::start(
                cfg,
                &clients,
                dashboard::applications(),
                settings.projectors.then(|| consumer_metrics.clone()),
                monitor,
                background.clone(),
            )
        });
        if let Some(d) = &dashboard {
            router = router.merge(api::observers_only(d.router()));
        }
        let publisher = settings.cloudwatch.clone().map(|cw| {
            let publisher = CloudWatchPublisher::new(clients.cloudwatch.clone(), cw, consumer_metrics.clone());
            tokio::spawn(publisher.run(background.clone()))
        });
        if let Some(reads) = reads.clone() {
            router = router.merge(cafe_projections::query::router(reads));
        }
        let router = auth.protect(
            router.method_not_allowed_fallback(api::method_not_allowed),
            settings.limits,
        );
        // Every route counted and timed, the dashboard's and /metrics' included, and
        // every refusal among them.
        let router = http_metrics.layer(router);
        let (stop, stopped) = watch::channel(false);
        let api = pipeline::start(service.clone(), listener, router, settings.relay.clone(), stopped);
        Ok(Running {
            settings,
            addr,
            clients,
            service,
            endpoints,
            reads,
            payments_queue,
            registry,
            consumer_metrics,
            http_metrics,
            stop,
            api,
            read_side,
            saga,
            dashboard,
            background,
            publisher,
        })
    }

    /// Starts, runs until `shutdown` resolves, then stops within `deadline` per stage.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>, deadline: Duration) -> Result<Stopped> {
        let running = self.start().await?;
        shutdown.await;
        running.stop(deadline).await
    }
}

/// Started: serving and consuming until [`Running::stop`].
pub struct Running {
    settings: Settings,
    addr: SocketAddr,
    clients: Clients,
    service: Arc<Service>,
    endpoints: Endpoints,
    reads: Option<Reads>,
    payments_queue: String,
    registry: Arc<Registry>,
    consumer_metrics: Metrics,
    http_metrics: HttpMetrics,
    stop: watch::Sender<bool>,
    api: pipeline::Serving,
    read_side: Option<ReadSide>,
    saga: Option<Saga>,
    dashboard: Option<Dashboard>,
    /// Stops the dashboard's monitor and readers, and the CloudWatch publisher.
    background: CancellationToken,
    publisher: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// What the stop found.
#[derive(Debug)]
pub struct Stopped {
    /// What the relay did (None: it did not drain within the deadline).
    pub relay: Option<RelayStats>,
    /// What each consumer application did.
    pub projectors: Vec<(&'static str, WorkerReport)>,
    /// What the saga did (None when it did not run or did not drain).
    pub saga: Option<SagaReport>,
    /// The stages that did not finish within their deadline, in words.
    pub undone: Vec<String>,
}

impl Running {
    /// Where the HTTP server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The AWS clients the application uses.
    pub fn clients(&self) -> &Clients {
        &self.clients
    }

    /// The stack configuration it runs against.
    pub fn config(&self) -> &StackConfig {
        &self.settings.stack
    }

    /// The command service (its counters).
    pub fn service(&self) -> &Arc<Service> {
        &self.service
    }

    /// Where the read models are.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The read models the queries read, when queries are served.
    pub fn reads(&self) -> Option<&Reads> {
        self.reads.as_ref()
    }

    /// The payment-requests queue's URL.
    pub fn payments_queue(&self) -> &str {
        &self.payments_queue
    }

    /// Whether the payment function runs here.
    pub fn runs_saga(&self) -> bool {
        self.saga.is_some()
    }

    /// The payments event source mapping's counters, where the saga runs here.
    pub fn saga_mapping(&self) -> Option<Arc<cafe_localstack::lambda::MappingStats>> {
        self.saga.as_ref().map(Saga::mapping)
    }

    /// The consumer applications running, sorted.
    pub fn applications(&self) -> Vec<&'static str> {
        let mut apps = self.read_side.as_ref().map(ReadSide::applications).unwrap_or_default();
        apps.sort_unstable();
        apps
    }

    /// The process's metrics registry (what `/metrics` serves).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The lag dashboard's data, when it is served.
    pub fn dashboard(&self) -> Option<&Dashboard> {
        self.dashboard.as_ref()
    }

    /// The HTTP server's metric handles.
    pub fn http_metrics(&self) -> &HttpMetrics {
        &self.http_metrics
    }

    /// The consumer runtime's metric handles, shared by every projector.
    pub fn consumer_metrics(&self) -> &Metrics {
        &self.consumer_metrics
    }

    /// Waits until the pipeline is quiet: the outbox settled, every projector's read
    /// finding nothing more (projection lag zero on every shard of this process's
    /// workers, and every application's checkpoints at the stream's tip, twice in a
    /// row), and,
    /// where the saga runs, its queue empty. What the invariant checker needs before it
    /// compares, and what a scenario's "caught up after N s" measures. Fails after
    /// `deadline`, naming what was still moving.
    pub async fn quiet(&self, deadline: Duration) -> Result<Duration> {
        let started = std::time::Instant::now();
        let mut calm = 0;
        loop {
            self.service.settled().await;
            let snapshot = self.consumer_metrics.snapshot();
            let mut behind: Vec<String> = Vec::new();
            if self.read_side.is_some() {
                behind.extend(
                    snapshot
                        .shards
                        .iter()
                        .filter(|s| s.projection_lag_seconds != Some(0.0))
                        .map(|s| format!("{} {}", s.application, s.shard)),
                );
                if snapshot.shards.is_empty() {
                    behind.push("no shard read yet".to_owned());
                }
            }
            // The checkpoints against the stream itself, wherever the consumers run: a
            // worker's own lag is as of its last read, so a record put after it (the
            // last commands of a short load) looks caught up until the next one.
            let probe = crate::read_side::lag_probe(&self.settings.stack, &self.clients, dashboard::applications());
            behind.extend(
                probe
                    .per_application()
                    .await
                    .context("reading the consumers' lag")?
                    .into_iter()
                    .filter(|(_, lag)| !lag.is_zero())
                    .map(|(app, lag)| format!("{app} {lag:?} behind its checkpoint")),
            );
            let queue = if self.runs_saga() {
                payments::counts(&self.clients.sqs, &self.payments_queue).await?
            } else {
                (0, 0)
            };
            let still = !behind.is_empty() || queue != (0, 0);
            calm = if still { 0 } else { calm + 1 };
            if calm >= 2 {
                return Ok(started.elapsed());
            }
            if started.elapsed() > deadline {
                bail!(
                    "not quiet after {}: behind {behind:?}, payment queue {queue:?} (visible, in flight)",
                    humantime::format_duration(deadline)
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Stops in stages, each within `deadline`: the server finishes its requests and the
    /// relay its pass; each projector its batch, checkpoint and lease release; the saga
    /// its invocation in flight. What a stage leaves undone is reported, not waited for.
    pub async fn stop(self, deadline: Duration) -> Result<Stopped> {
        let mut undone = Vec::new();
        let _ = self.stop.send(true);
        let relay = self.api.drained(deadline).await?;
        if relay.is_none() {
            undone.push("the API server or the relay did not drain".to_owned());
        }
        let projectors = match self.read_side {
            Some(side) => side.stop().await,
            None => Vec::new(),
        };
        for (name, r) in &projectors {
            if !r.shards_abandoned.is_empty() {
                undone.push(format!("{name} left shards {:?} to failover", r.shards_abandoned));
            }
        }
        self.background.cancel();
        // The publisher's last send covers the projectors' final batches.
        if let Some(publisher) = self.publisher
            && tokio::time::timeout(deadline, publisher).await.is_err()
        {
            undone.push("the CloudWatch publisher's last send did not finish".to_owned());
        }
        let saga = match self.saga {
            Some(saga) => {
                match tokio::time::timeout(deadline, saga.stop(&self.settings.stack, &self.clients.sqs)).await {
                    Ok(report) => Some(report),
                    Err(_) => {
                        undone.push("the payment function's mapping did not drain".to_owned());
                        None
                    }
                }
            }
            None => None,
        };
        Ok(Stopped {
            relay,
            projectors,
            saga,
            undone,
        })
    }
}
