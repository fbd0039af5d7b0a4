//! Lambda entry point: configuration and clients once per cold start, then the runtime.

use aws_lambda_events::event::kinesis::KinesisEvent;
use cafe_consumers::parking::DynamoParkingLot;
use cafe_lambda_projector::{EnvelopeCheck, handle};
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let var = |k: &str| std::env::var(k).map_err(|_| format!("environment variable {k} is not set"));
    let application = var("CAFE_APPLICATION")?;
    let parked_table = var("CAFE_PARKED_TABLE")?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let parking = DynamoParkingLot::new(aws_sdk_dynamodb::Client::new(&sdk), parked_table);
    let processor = EnvelopeCheck;
    let (processor, parking, application) = (&processor, &parking, application.as_str());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<KinesisEvent>| async move {
        Ok::<_, lambda_runtime::Error>(handle(processor, parking, application, &event.payload).await)
    }))
    .await
}
