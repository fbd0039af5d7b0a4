//! The payment function: SQS batches of payment requests (see the library's docs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use aws_lambda_events::event::sqs::SqsEvent;
use cafe_lambda_payment::config::PaymentConfig;
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    let started = Instant::now();
    lambda_runtime::tracing::init_default_subscriber();
    let cfg = PaymentConfig::from_env(|k| std::env::var(k).ok())?;
    // Endpoints, region and credentials from the SDK's default chain: the execution role
    // in AWS, `AWS_ENDPOINT_URL_*` pointing at the local stack here.
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let namespace = cfg.metrics_namespace.clone();
    let payments = cafe_lambda_payment::function(
        cfg,
        aws_sdk_dynamodb::Client::new(&sdk),
        aws_sdk_kinesis::Client::new(&sdk),
    );
    let payments = &payments;
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "cafe-lambda-payment".to_owned());
    let (namespace, function) = (&namespace, function.as_str());
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
