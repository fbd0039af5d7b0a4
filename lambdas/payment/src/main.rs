//! The payment function: SQS batches of payment requests (see the library's docs).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use aws_lambda_events::event::sqs::SqsEvent;
use cafe_lambda_payment::config::PaymentConfig;
use cafe_lambda_payment::handler::Payments;
use cafe_lambda_payment::idempotency::Idempotency;
use cafe_producers::publish::{KinesisSink, Publisher, PublisherConfig};
use cafe_producers::service::{CommandService, ServiceConfig};
use cafe_producers::store::DynamoEventStore;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let started = Instant::now();
    lambda_runtime::tracing::init_default_subscriber();
    let cfg = PaymentConfig::from_env(|k| std::env::var(k).ok())?;
    // Endpoints, region and credentials from the SDK's default chain: the execution role
    // in AWS, `AWS_ENDPOINT_URL_*` pointing at the local stack here.
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let store = DynamoEventStore::new(dynamodb.clone(), &cfg.events_table, &cfg.idempotency_table);
    let publisher = Publisher::new(
        KinesisSink::new(aws_sdk_kinesis::Client::new(&sdk), &cfg.stream),
        PublisherConfig::default(),
    );
    let orders = Arc::new(CommandService::new(store, publisher, ServiceConfig::default()));
    let mut idempotency = Idempotency::new(dynamodb, &cfg.idempotency_table);
    idempotency.lease = cfg.lease;
    let payments = Payments::new(cfg.gateway, idempotency, orders);
    let payments = &payments;
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "cafe-lambda-payment".to_owned());
    let (namespace, function) = (&cfg.metrics_namespace, function.as_str());
    // The init phase ends here: the runtime asks for the first invocation next.
    let init = started.elapsed();
    let first = &AtomicBool::new(true);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| async move {
        let (response, counts) = payments.handle_counted(event.payload).await;
        let init = first.swap(false, Ordering::Relaxed).then_some(init);
        // The batch's metrics as an EMF line on stdout (CloudWatch Logs in AWS).
        println!(
            "{}",
            counts.emf(namespace, function, chrono::Utc::now().timestamp_millis(), init)
        );
        Ok::<_, lambda_runtime::Error>(response)
    }))
    .await
}
