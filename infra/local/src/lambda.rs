//! Lambda, locally: the function runs as its own process under the cargo-lambda runtime
//! emulator (the stack's `lambda` service, `cargo lambda watch --only-lambda-apis`), and
//! [`EventSourceMapping`] plays the part AWS plays between SQS and the function.
//!
//! The mapping does what the managed one does with `ReportBatchItemFailures`:
//! - receives up to `batch_size` messages, waiting at most `batching_window` to fill a
//!   batch, with the mapping's visibility timeout;
//! - invokes the function with an `aws:sqs` event of those messages;
//! - deletes the messages the function did not list in `batchItemFailures`, and none
//!   when the invocation itself failed or its answer is not a valid batch response;
//! - leaves failures in flight: they reappear after the visibility timeout, and the
//!   queue's redrive policy moves one to the DLQ after `maxReceiveCount` receives.
//!
//! A [`FaultInjector`] given with [`EventSourceMapping::with_faults`] can make it hold
//! each batch before invoking, as AWS's mapping does while the function is throttled:
//! held past the visibility timeout, the batch's messages are delivered again by
//! another poller while the first still holds them.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::config::StackConfig;
use crate::faults::FaultInjector;

/// Why an invocation gave no usable answer; the whole batch is retried.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The emulator (or the function process) could not be reached or timed out.
    #[error("invoking {function}: {reason}")]
    Transport {
        /// The function.
        function: String,
        /// What went wrong.
        reason: String,
    },
    /// The function returned an error, or something that is not a batch response.
    #[error("function {function} failed: {body}")]
    Function {
        /// The function.
        function: String,
        /// Its answer.
        body: String,
    },
}

/// Something that runs the function on an SQS event.
pub trait Invoke: Send + Sync + 'static {
    /// Runs one invocation.
    fn invoke(&self, event: &SqsEvent) -> impl Future<Output = Result<SqsBatchResponse, InvokeError>> + Send;
}

/// Invokes a function through the emulator's Invoke API
/// (`POST /2015-03-31/functions/{name}/invocations`), as the AWS SDK would.
#[derive(Debug, Clone)]
pub struct EmulatorInvoker {
    url: String,
    function: String,
    timeout: Duration,
    http: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
}

impl EmulatorInvoker {
    /// The function `function` behind the stack's emulator; an invocation that takes
    /// longer than `timeout` counts as failed (as the function's timeout does in AWS).
    pub fn new(cfg: &StackConfig, function: &str, timeout: Duration) -> Self {
        EmulatorInvoker {
            url: format!(
                "{}/2015-03-31/functions/{function}/invocations",
                cfg.http_endpoint(cfg.ports.lambda)
            ),
            function: function.to_owned(),
            timeout,
            http: hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http(),
        }
    }
}

impl Invoke for EmulatorInvoker {
    async fn invoke(&self, event: &SqsEvent) -> Result<SqsBatchResponse, InvokeError> {
        use http_body_util::BodyExt;
        let transport = |reason: String| InvokeError::Transport {
            function: self.function.clone(),
            reason,
        };
        let body = serde_json::to_vec(event).map_err(|e| transport(e.to_string()))?;
        let request = hyper::Request::post(&self.url)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .map_err(|e| transport(e.to_string()))?;
        let call = async {
            let response = self.http.request(request).await.map_err(|e| transport(e.to_string()))?;
            let function_error = response.headers().contains_key("x-amz-function-error");
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(e.to_string()))?
                .to_bytes();
            Ok::<_, InvokeError>((status, function_error, bytes))
        };
        let (status, function_error, bytes) = tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| transport(format!("no answer within {:?}", self.timeout)))??;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        if !status.is_success() || function_error {
            return Err(InvokeError::Function {
                function: self.function.clone(),
                body: format!("HTTP {status}: {text}"),
            });
        }
        batch_response(&text).ok_or_else(|| InvokeError::Function {
            function: self.function.clone(),
            body: text,
        })
    }
}

/// A batch response, strictly: `{"batchItemFailures": [...]}`. Anything else (an error
/// object, `null`) is not one, and AWS then retries the whole batch.
fn batch_response(text: &str) -> Option<SqsBatchResponse> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    value.get("batchItemFailures")?.as_array()?;
    serde_json::from_value(value).ok()
}

/// Settings of the mapping (the names of AWS's own).
#[derive(Debug, Clone)]
pub struct MappingConfig {
    /// Most messages per invocation.
    pub batch_size: usize,
    /// Longest wait to fill a batch once the first message is in.
    pub batching_window: Duration,
    /// How long a received message stays hidden: a failed one comes back after this.
    pub visibility_timeout: Duration,
    /// Concurrent pollers (each with one invocation in flight).
    pub pollers: usize,
}

impl Default for MappingConfig {
    fn default() -> Self {
        MappingConfig {
            batch_size: 10,
            batching_window: Duration::from_millis(200),
            visibility_timeout: Duration::from_secs(30),
            pollers: 2,
        }
    }
}

/// Counters of a mapping, shared by its pollers.
#[derive(Debug, Default)]
pub struct MappingStats {
    /// Invocations made.
    pub invocations: AtomicU64,
    /// Invocations that gave no usable answer (their whole batch was retried).
    pub failed_invocations: AtomicU64,
    /// Messages handed to the function (a redelivery counts again).
    pub received: AtomicU64,
    /// Messages deleted after success.
    pub deleted: AtomicU64,
    /// Messages the function reported as failed.
    pub reported_failures: AtomicU64,
    /// Messages received that had been received before (`ApproximateReceiveCount` over
    /// 1): a failure's retry, or a visibility timeout that ran out while a batch was
    /// still on its way through the function.
    pub redelivered: AtomicU64,
    /// Batches held before their invocation by an injected fault.
    pub held: AtomicU64,
    /// Age in milliseconds of the oldest message the last receive returned, 0 when it
    /// found the queue empty: the mapping's view of AWS/SQS's
    /// ApproximateAgeOfOldestMessage, which says whether the function keeps up.
    pub oldest_age_ms: AtomicU64,
}

/// A [`MappingStats`] read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MappingCounts {
    /// Invocations made.
    pub invocations: u64,
    /// Invocations that gave no usable answer.
    pub failed_invocations: u64,
    /// Messages handed to the function.
    pub received: u64,
    /// Messages deleted after success.
    pub deleted: u64,
    /// Messages the function reported as failed.
    pub reported_failures: u64,
    /// Messages received again.
    pub redelivered: u64,
    /// Batches held by an injected fault.
    pub held: u64,
}

impl MappingStats {
    /// The counters now.
    pub fn counts(&self) -> MappingCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MappingCounts {
            invocations: get(&self.invocations),
            failed_invocations: get(&self.failed_invocations),
            received: get(&self.received),
            deleted: get(&self.deleted),
            reported_failures: get(&self.reported_failures),
            redelivered: get(&self.redelivered),
            held: get(&self.held),
        }
    }
}

/// SQS → function, as the managed event source mapping does it.
#[derive(Debug)]
pub struct EventSourceMapping<I> {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
    region: String,
    invoker: I,
    cfg: MappingConfig,
    stats: Arc<MappingStats>,
    faults: FaultInjector,
}

impl<I: Invoke> EventSourceMapping<I> {
    /// A mapping from the queue at `queue_url` to `invoker`.
    pub async fn new(
        sqs: aws_sdk_sqs::Client,
        queue_url: &str,
        invoker: I,
        cfg: MappingConfig,
    ) -> Result<Self, aws_sdk_sqs::Error> {
        let attributes = sqs
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await?;
        let queue_arn = attributes
            .attributes()
            .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn))
            .cloned()
            .unwrap_or_default();
        let region = queue_arn.split(':').nth(3).unwrap_or_default().to_owned();
        Ok(EventSourceMapping {
            sqs,
            queue_url: queue_url.to_owned(),
            queue_arn,
            region,
            invoker,
            cfg,
            stats: Arc::default(),
            faults: FaultInjector::off(),
        })
    }

    /// Reads its fault (an invoke delay) from `faults` before each invocation.
    pub fn with_faults(mut self, faults: FaultInjector) -> Self {
        self.faults = faults;
        self
    }

    /// The shared counters.
    pub fn stats(&self) -> Arc<MappingStats> {
        self.stats.clone()
    }

    /// Polls until `shutdown` turns true, then finishes the invocations in flight (and
    /// their deletes) and returns.
    pub async fn run(self, shutdown: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let pollers = (0..this.cfg.pollers.max(1)).map(|_| {
            let this = this.clone();
            let shutdown = shutdown.clone();
            async move { this.poll(shutdown).await }
        });
        futures::future::join_all(pollers).await;
    }

    async fn poll(&self, mut shutdown: watch::Receiver<bool>) {
        while !*shutdown.borrow() {
            let batch = tokio::select! {
                batch = self.receive_batch() => batch,
                _ = shutdown.wait_for(|stop| *stop) => break,
            };
            match batch {
                Ok(messages) if messages.is_empty() => self.stats.oldest_age_ms.store(0, Ordering::Relaxed),
                Ok(messages) => {
                    self.stats
                        .oldest_age_ms
                        .store(oldest_age_ms(&messages, now_ms()), Ordering::Relaxed);
                    self.deliver(messages).await;
                }
                Err(e) => {
                    warn!(queue = %self.queue_url, error = %e, "receiving from SQS failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Long-polls for the first message, then fills the batch until it is full or the
    /// batching window closes.
    async fn receive_batch(&self) -> Result<Vec<aws_sdk_sqs::types::Message>, String> {
        let mut batch = self.receive(self.cfg.batch_size, Duration::from_secs(2)).await?;
        if batch.is_empty() {
            return Ok(batch);
        }
        let deadline = tokio::time::Instant::now() + self.cfg.batching_window;
        while batch.len() < self.cfg.batch_size {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let more = self.receive(self.cfg.batch_size - batch.len(), Duration::ZERO).await?;
            if more.is_empty() {
                tokio::time::sleep(left.min(Duration::from_millis(50))).await;
            }
            batch.extend(more);
        }
        Ok(batch)
    }

    async fn receive(&self, want: usize, wait: Duration) -> Result<Vec<aws_sdk_sqs::types::Message>, String> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(i32::try_from(want.clamp(1, 10)).unwrap_or(10))
            .wait_time_seconds(i32::try_from(wait.as_secs()).unwrap_or(20))
            .visibility_timeout(i32::try_from(self.cfg.visibility_timeout.as_secs().max(1)).unwrap_or(30))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())?;
        Ok(out.messages.unwrap_or_default())
    }

    /// One invocation; deletes what succeeded.
    async fn deliver(&self, messages: Vec<aws_sdk_sqs::types::Message>) {
        let event = self.event(&messages);
        let again = messages.iter().filter(|m| receive_count(m) > 1).count();
        self.stats.redelivered.fetch_add(again as u64, Ordering::Relaxed);
        let delay = self.faults.invoke_delay();
        if !delay.is_zero() {
            self.stats.held.fetch_add(1, Ordering::Relaxed);
            debug!(
                messages = messages.len(),
                delay_ms = delay.as_millis() as u64,
                "holding the batch (injected)"
            );
            tokio::time::sleep(delay).await;
        }
        self.stats.invocations.fetch_add(1, Ordering::Relaxed);
        self.stats.received.fetch_add(messages.len() as u64, Ordering::Relaxed);
        let response = match self.invoker.invoke(&event).await {
            Ok(response) => response,
            Err(e) => {
                self.stats.failed_invocations.fetch_add(1, Ordering::Relaxed);
                warn!(error = %e, messages = messages.len(), "invocation failed; the whole batch will be redelivered");
                return;
            }
        };
        let ids: HashSet<&str> = messages.iter().filter_map(|m| m.message_id()).collect();
        let failed: HashSet<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        // AWS treats a failure naming no message of the batch as a failed invocation.
        if failed.iter().any(|id| !ids.contains(id)) {
            self.stats.failed_invocations.fetch_add(1, Ordering::Relaxed);
            warn!(
                ?failed,
                "the function reported unknown message ids; the whole batch will be redelivered"
            );
            return;
        }
        self.stats
            .reported_failures
            .fetch_add(failed.len() as u64, Ordering::Relaxed);
        let done: Vec<_> = messages
            .iter()
            .filter(|m| m.message_id().is_some_and(|id| !failed.contains(id)))
            .filter_map(|m| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(m.message_id().unwrap_or_default())
                    .receipt_handle(m.receipt_handle().unwrap_or_default())
                    .build()
                    .ok()
            })
            .collect();
        for chunk in done.chunks(10) {
            match self
                .sqs
                .delete_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(chunk.to_vec()))
                .send()
                .await
            {
                Ok(out) => {
                    let deleted = chunk.len() - out.failed().len();
                    self.stats.deleted.fetch_add(deleted as u64, Ordering::Relaxed);
                    for f in out.failed() {
                        warn!(
                            id = f.id(),
                            code = f.code(),
                            "delete failed; the message will be redelivered"
                        );
                    }
                }
                Err(e) => {
                    warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "DeleteMessageBatch failed; the messages will be redelivered")
                }
            }
        }
        debug!(messages = messages.len(), failed = failed.len(), "batch delivered");
    }

    /// The `aws:sqs` event AWS would send for `messages`.
    fn event(&self, messages: &[aws_sdk_sqs::types::Message]) -> SqsEvent {
        let mut event = SqsEvent::default();
        event.records = messages
            .iter()
            .map(|m| {
                let mut record = SqsMessage::default();
                record.message_id = m.message_id.clone();
                record.receipt_handle = m.receipt_handle.clone();
                record.body = m.body.clone();
                record.md5_of_body = m.md5_of_body.clone();
                record.attributes = m
                    .attributes()
                    .map(|a| {
                        a.iter()
                            .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                            .collect::<HashMap<_, _>>()
                    })
                    .unwrap_or_default();
                record.event_source = Some("aws:sqs".to_owned());
                record.event_source_arn = Some(self.queue_arn.clone());
                record.aws_region = Some(self.region.clone());
                record
            })
            .collect();
        event
    }
}

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// How long the oldest of `messages` waited, from their `SentTimestamp` (0 when none
/// says).
fn oldest_age_ms(messages: &[aws_sdk_sqs::types::Message], now_ms: u64) -> u64 {
    messages
        .iter()
        .filter_map(|m| {
            m.attributes()?
                .get(&MessageSystemAttributeName::SentTimestamp)?
                .parse::<u64>()
                .ok()
        })
        .map(|sent| now_ms.saturating_sub(sent))
        .max()
        .unwrap_or(0)
}

/// The environment a function process needs to take invocations from the emulator:
/// the runtime API of `function` and what the Lambda service would set.
pub fn runtime_env(cfg: &StackConfig, function: &str, memory_mb: u32) -> Vec<(String, String)> {
    vec![
        (
            "AWS_LAMBDA_RUNTIME_API".to_owned(),
            format!("{}/.rt/{function}", cfg.http_endpoint(cfg.ports.lambda)),
        ),
        ("AWS_LAMBDA_FUNCTION_NAME".to_owned(), function.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE".to_owned(), memory_mb.to_string()),
        ("AWS_LAMBDA_FUNCTION_VERSION".to_owned(), "$LATEST".to_owned()),
    ]
}

/// Starts `binary` as an instance of `function` under the emulator, with the stack's
/// AWS endpoints and `env` on top; its output goes to the stack's log directory.
pub fn spawn_function(
    cfg: &StackConfig,
    binary: &Path,
    function: &str,
    env: &[(String, String)],
) -> std::io::Result<tokio::process::Child> {
    std::fs::create_dir_all(cfg.log_dir())?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(cfg.log_dir().join(format!("{function}.log")))?;
    tokio::process::Command::new(binary)
        .envs(cfg.aws_env())
        .envs(runtime_env(cfg, function, 128))
        .envs(env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
}

/// How many times SQS has handed out `message`, this receive included (1 when unknown).
fn receive_count(message: &aws_sdk_sqs::types::Message) -> u64 {
    message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_batch_response_is_one() {
        assert!(batch_response(r#"{"batchItemFailures":[]}"#).is_some());
        let r = batch_response(r#"{"batchItemFailures":[{"itemIdentifier":"m-1"}]}"#).unwrap();
        assert_eq!(r.batch_item_failures[0].item_identifier, "m-1");
        for not in [
            "null",
            "{}",
            r#"{"errorType":"Runtime.ExitError","errorMessage":"boom"}"#,
            "not json",
        ] {
            assert!(batch_response(not).is_none(), "{not}");
        }
    }
}
