//! AWS SDK clients pointed at the local stand-ins.
//!
//! Production code builds its clients from the default chain and reaches the local
//! stack through `AWS_ENDPOINT_URL_<SERVICE>` (see [`StackConfig::aws_env`]); these
//! helpers are for the stack's own provisioning, health probes and tests, which must
//! work without the caller's environment being set up.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};
use aws_sdk_kinesis::config::Credentials;

use crate::config::StackConfig;

/// Shared SDK settings for the local stack: fixed region and dummy credentials.
pub async fn sdk_config(cfg: &StackConfig) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(cfg.names.region.clone()))
        .credentials_provider(Credentials::new("local", "local", None, None, "cafe-localstack"))
        .timeout_config(TimeoutConfig::builder().connect_timeout(Duration::from_secs(2)).build())
        .load()
        .await
}

/// The same, with one attempt and short timeouts: health probes must answer fast.
pub async fn probe_sdk_config(cfg: &StackConfig) -> SdkConfig {
    sdk_config(cfg)
        .await
        .into_builder()
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_millis(500))
                .operation_timeout(Duration::from_secs(3))
                .build(),
        )
        .build()
}

/// Kinesis client on the local stand-in.
pub fn kinesis(sdk: &SdkConfig, cfg: &StackConfig) -> aws_sdk_kinesis::Client {
    aws_sdk_kinesis::Client::from_conf(
        aws_sdk_kinesis::config::Builder::from(sdk)
            .endpoint_url(cfg.kinesis_endpoint())
            .build(),
    )
}

/// DynamoDB client on the local stand-in.
pub fn dynamodb(sdk: &SdkConfig, cfg: &StackConfig) -> aws_sdk_dynamodb::Client {
    aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(sdk)
            .endpoint_url(cfg.dynamodb_endpoint())
            .build(),
    )
}

/// SQS client on fauxqs.
pub fn sqs(sdk: &SdkConfig, cfg: &StackConfig) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(sdk)
            .endpoint_url(cfg.sqs_endpoint())
            .build(),
    )
}

/// CloudWatch client on moto.
pub fn cloudwatch(sdk: &SdkConfig, cfg: &StackConfig) -> aws_sdk_cloudwatch::Client {
    aws_sdk_cloudwatch::Client::from_conf(
        aws_sdk_cloudwatch::config::Builder::from(sdk)
            .endpoint_url(cfg.moto_endpoint())
            .build(),
    )
}

/// Counts the requests an SDK client sends, per operation and attempt (a retry counts
/// again: it is another round trip). Clones share the counts, so one counter can be
/// given to several clients.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    counts: std::sync::Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>,
}

impl CallCounter {
    /// The counts so far (`Service.Operation` → requests), and starts again from zero.
    pub fn take(&self) -> std::collections::BTreeMap<String, u64> {
        self.counts
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default()
    }
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    fn read_before_transmit(
        &self,
        _: &aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef<'_>,
        _: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        let name = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map_or_else(|| "unknown".to_owned(), |m| format!("{}.{}", m.service(), m.name()));
        if let Ok(mut counts) = self.counts.lock() {
            *counts.entry(name).or_default() += 1;
        }
        Ok(())
    }
}
