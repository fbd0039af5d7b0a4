//! Faults injected into the parts the pipeline really uses, for chaos experiments and
//! game days: a share of Kinesis or DynamoDB data requests answered with the service's
//! own throttling error instead of reaching the service; and the payments event source
//! mapping holding each batch before invoking the function, as AWS's does while the
//! function's invocations are throttled ([`crate::lambda`] reads it).
//!
//! It sits where the service would answer (the client's HTTP layer), so everything
//! above it runs as it would against a throttled service: the SDK parses the error,
//! its retry classifier sees a throttling error and backs off, and what is left after
//! its attempts reaches our code as the same error a real throttle raises. A fake at a
//! higher layer (our store or sink traits) would skip exactly the parts that must be
//! proven: the SDK's retry configuration and our handling of its final error.
//!
//! Off unless configured: `CAFE__FAULTS__KINESIS_THROTTLE=0.2` (a share, 0 to 1),
//! `CAFE__FAULTS__DYNAMODB_THROTTLE`, `CAFE__FAULTS__INVOKE_DELAY_MS`, or a
//! [`FaultInjector`] given to the application.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use figment::Figment;
use figment::providers::{Env, Serialized};
use serde::{Deserialize, Serialize};

use crate::error::StackError;

/// Which faults to inject; the default injects none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Share of Kinesis data requests (puts, reads, shard iterators) answered with
    /// `ProvisionedThroughputExceededException`.
    pub kinesis_throttle: f64,
    /// Share of DynamoDB item requests (gets, puts, updates, queries, scans, batches,
    /// transactions) answered with `ProvisionedThroughputExceededException`.
    pub dynamodb_throttle: f64,
    /// Milliseconds the payments mapping holds each received batch before invoking the
    /// function. Longer than the mapping's visibility timeout, the batch's messages
    /// become visible again while it waits, and another poller delivers them again.
    pub invoke_delay_ms: u64,
}

impl Faults {
    /// `CAFE__FAULTS__*` from the environment (none set: no faults).
    pub fn from_env() -> Result<Faults, StackError> {
        let faults: Faults = Figment::from(Serialized::defaults(Faults::default()))
            .merge(Env::prefixed("CAFE__FAULTS__").split("__"))
            .extract()
            .map_err(|e| StackError::Config(e.to_string()))?;
        faults.validate()?;
        Ok(faults)
    }

    /// Each share must be a fraction.
    pub fn validate(&self) -> Result<(), StackError> {
        for (name, share) in [
            ("kinesis_throttle", self.kinesis_throttle),
            ("dynamodb_throttle", self.dynamodb_throttle),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return Err(StackError::Config(format!(
                    "faults.{name} must be a share between 0 and 1, not {share}"
                )));
            }
        }
        Ok(())
    }

    /// Whether a throttle is on: what makes an injector wrap the SDK clients (the
    /// invoke delay needs no wrapping).
    pub fn throttles(&self) -> bool {
        self.kinesis_throttle > 0.0 || self.dynamodb_throttle > 0.0
    }
}

/// The faults of one process, changeable while it runs (an experiment turns them on
/// for its fault window and off again). Clones share the settings and the counts.
///
/// Only an armed injector wraps clients: unarmed, the clients keep the SDK's own HTTP
/// client untouched, so a normal run carries no trace of this module.
#[derive(Debug, Clone, Default)]
pub struct FaultInjector {
    armed: bool,
    kinesis: Arc<AtomicU64>,
    dynamodb: Arc<AtomicU64>,
    invoke_delay_ms: Arc<AtomicU64>,
    counts: FaultCounts,
}

impl FaultInjector {
    /// Injects nothing and wraps no client. The invoke delay needs no wrapped client,
    /// so an experiment may still [`FaultInjector::set`] one on it; a throttle set on
    /// it has no client to act on.
    pub fn off() -> FaultInjector {
        FaultInjector::default()
    }

    /// Wraps the clients it is given, starting with `faults` (which may be none yet).
    pub fn armed(faults: Faults) -> FaultInjector {
        let injector = FaultInjector {
            armed: true,
            ..FaultInjector::default()
        };
        injector.set(faults);
        injector
    }

    /// The `CAFE__FAULTS__*` configuration: armed when it sets a throttle, so only
    /// then are the clients wrapped; an invoke delay alone is set on an unarmed one.
    pub fn from_env() -> Result<FaultInjector, StackError> {
        Ok(FaultInjector::of(Faults::from_env()?))
    }

    /// An injector for `faults`, armed only if they throttle.
    fn of(faults: Faults) -> FaultInjector {
        let injector = FaultInjector {
            armed: faults.throttles(),
            ..FaultInjector::default()
        };
        injector.set(faults);
        injector
    }

    /// Changes the shares for every client this injector wrapped, from the next request.
    pub fn set(&self, faults: Faults) {
        self.kinesis.store(faults.kinesis_throttle.to_bits(), Ordering::Relaxed);
        self.dynamodb
            .store(faults.dynamodb_throttle.to_bits(), Ordering::Relaxed);
        self.invoke_delay_ms.store(faults.invoke_delay_ms, Ordering::Relaxed);
    }

    /// The shares now.
    pub fn current(&self) -> Faults {
        Faults {
            kinesis_throttle: f64::from_bits(self.kinesis.load(Ordering::Relaxed)),
            dynamodb_throttle: f64::from_bits(self.dynamodb.load(Ordering::Relaxed)),
            invoke_delay_ms: self.invoke_delay_ms.load(Ordering::Relaxed),
        }
    }

    /// How long the payments mapping holds a batch before invoking, now (zero when off).
    pub fn invoke_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.invoke_delay_ms.load(Ordering::Relaxed))
    }

    /// What the throttles saw and refused so far.
    pub fn counts(&self) -> &FaultCounts {
        &self.counts
    }

    /// `client`, its data requests throttled at the Kinesis share (itself when off).
    pub fn kinesis(&self, client: &aws_sdk_kinesis::Client) -> aws_sdk_kinesis::Client {
        match self.throttle(&self.kinesis, KINESIS) {
            Some(t) => aws_sdk_kinesis::Client::from_conf(client.config().to_builder().http_client(t).build()),
            None => client.clone(),
        }
    }

    /// `client`, its item requests throttled at the DynamoDB share (itself when off).
    pub fn dynamodb(&self, client: &aws_sdk_dynamodb::Client) -> aws_sdk_dynamodb::Client {
        match self.throttle(&self.dynamodb, DYNAMODB) {
            Some(t) => aws_sdk_dynamodb::Client::from_conf(client.config().to_builder().http_client(t).build()),
            None => client.clone(),
        }
    }

    /// The HTTP client a wrapped client of `service` gets (None when not armed).
    fn throttle(&self, share: &Arc<AtomicU64>, service: &'static ServiceFault) -> Option<Throttle> {
        self.armed
            .then(|| Throttle::new(share.clone(), service, self.counts.clone()))
    }
}

/// Requests that met a throttle, and how many it refused. Clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct FaultCounts {
    seen: Arc<AtomicU64>,
    throttled: Arc<AtomicU64>,
}

impl FaultCounts {
    /// Data requests the throttles saw while a share was set (a retry counts again).
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }

    /// Of those, answered with a throttling error.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }
}

/// What a service's throttle answers, and which of its operations it applies to.
#[derive(Debug)]
struct ServiceFault {
    /// The `x-amz-target` prefix of the service's JSON protocol.
    target_prefix: &'static str,
    /// Its error shape, as the service names it in `__type`.
    error_type: &'static str,
    content_type: &'static str,
    /// Whether an operation is a data request. Control-plane calls (describe, list,
    /// create) stay untouched: their limits are separate, and a start-up that fails
    /// three attempts in a row would test nothing the experiments are about.
    data: fn(&str) -> bool,
}

const KINESIS: &ServiceFault = &ServiceFault {
    target_prefix: "Kinesis_20131202.",
    error_type: "com.amazonaws.kinesis.v20131202#ProvisionedThroughputExceededException",
    content_type: "application/x-amz-json-1.1",
    data: |op| matches!(op, "PutRecord" | "PutRecords" | "GetRecords" | "GetShardIterator"),
};

const DYNAMODB: &ServiceFault = &ServiceFault {
    target_prefix: "DynamoDB_20120810.",
    error_type: "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
    content_type: "application/x-amz-json-1.0",
    data: |op| op.contains("Item") || op == "Query" || op == "Scan",
};

/// The HTTP client that refuses a share of a service's data requests and sends the
/// rest through the SDK's default client.
#[derive(Debug, Clone)]
struct Throttle {
    inner: SharedHttpClient,
    /// The share's f64 bits, shared with the injector.
    share: Arc<AtomicU64>,
    service: &'static ServiceFault,
    counts: FaultCounts,
}

impl Throttle {
    fn new(share: Arc<AtomicU64>, service: &'static ServiceFault, counts: FaultCounts) -> Throttle {
        // The SDK's own default (hyper with rustls, plain HTTP allowed for the local
        // stack): the requests that pass go out exactly as without the throttle.
        let inner = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
            ))
            .build_https();
        Throttle {
            inner,
            share,
            service,
            counts,
        }
    }
}

impl HttpClient for Throttle {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(ThrottleConnector {
            inner: self.inner.http_connector(settings, components),
            share: self.share.clone(),
            service: self.service,
            counts: self.counts.clone(),
        })
    }
}

#[derive(Debug)]
struct ThrottleConnector {
    inner: SharedHttpConnector,
    share: Arc<AtomicU64>,
    service: &'static ServiceFault,
    counts: FaultCounts,
}

impl HttpConnector for ThrottleConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let data = request
            .headers()
            .get("x-amz-target")
            .and_then(|t| t.strip_prefix(self.service.target_prefix))
            .is_some_and(self.service.data);
        let share = f64::from_bits(self.share.load(Ordering::Relaxed));
        if data && share > 0.0 {
            self.counts.seen.fetch_add(1, Ordering::Relaxed);
            if fastrand::f64() < share {
                self.counts.throttled.fetch_add(1, Ordering::Relaxed);
                return HttpConnectorFuture::ready(Ok(throttled(self.service)));
            }
        }
        self.inner.call(request)
    }
}

/// The response a throttled request gets from the service.
fn throttled(service: &ServiceFault) -> HttpResponse {
    let body = serde_json::json!({
        "__type": service.error_type,
        "message": "Rate exceeded (throttling injected by CAFE__FAULTS)",
    });
    let mut response = HttpResponse::new(
        aws_smithy_runtime_api::http::StatusCode::try_from(400).unwrap_or_else(|_| unreachable!("400 is a status")),
        SdkBody::from(body.to_string()),
    );
    response.headers_mut().insert("content-type", service.content_type);
    response
        .headers_mut()
        .insert("x-amzn-requestid", uuid::Uuid::new_v4().to_string());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_outside_zero_to_one_are_refused() {
        let bad = Faults {
            kinesis_throttle: 1.5,
            ..Faults::default()
        };
        assert!(bad.validate().is_err());
        let bad = Faults {
            dynamodb_throttle: -0.1,
            ..Faults::default()
        };
        assert!(bad.validate().is_err());
        assert!(Faults::default().validate().is_ok());
        assert!(!Faults::default().throttles());
    }

    #[test]
    fn only_a_throttle_arms_the_injector_and_the_delay_is_kept_either_way() {
        let delay = Faults {
            invoke_delay_ms: 6_000,
            ..Faults::default()
        };
        let injector = FaultInjector::of(delay);
        assert!(!injector.armed, "an invoke delay wraps no client");
        assert_eq!(injector.invoke_delay(), std::time::Duration::from_secs(6));
        let both = FaultInjector::of(Faults {
            kinesis_throttle: 0.2,
            ..delay
        });
        assert!(both.armed);
        assert_eq!(both.invoke_delay(), std::time::Duration::from_secs(6));
        assert!(!FaultInjector::of(Faults::default()).armed);
    }

    #[test]
    fn only_data_operations_are_throttled() {
        assert!((KINESIS.data)("PutRecords"));
        assert!((KINESIS.data)("GetRecords"));
        assert!(!(KINESIS.data)("DescribeStreamSummary"));
        assert!(!(KINESIS.data)("ListShards"));
        assert!((DYNAMODB.data)("TransactWriteItems"));
        assert!((DYNAMODB.data)("Query"));
        assert!(!(DYNAMODB.data)("DescribeTable"));
        assert!(!(DYNAMODB.data)("CreateTable"));
    }
}
