//! The projector function: `CAFE_PROJECTION` chooses what it hosts (see [`Hosted`]);
//! the names it needs are its unit's (`cafe_settings::units::PROJECTOR_FUNCTION`).

use aws_lambda_events::event::kinesis::KinesisEvent;
use cafe_consumers::Processor;
use cafe_consumers::parking::DynamoParkingLot;
use cafe_lambda_projector::{EnvelopeCheck, Hosted, handle_measured};
use cafe_projections::Projector;
use cafe_projections::catalog::{AnalyticsEndpoint, Endpoints, Namespace, ReadModel};
use cafe_settings::units::PROJECTOR_FUNCTION;
use cafe_settings::{Names, SettingsError, vars};
use lambda_runtime::{LambdaEvent, service_fn};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let get = |k: &str| std::env::var(k).ok();
    let names = Names::require(PROJECTOR_FUNCTION.names, get)?;
    let application = get(vars::APPLICATION)
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| SettingsError::Missing(vars::APPLICATION.to_owned()))?;
    let (namespace, parked_table) = (names.metrics_namespace, names.parked_table);
    let hosted = Hosted::from_env(get)?;
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
    let parking = DynamoParkingLot::new(dynamodb.clone(), parked_table);
    match hosted {
        Hosted::EnvelopeCheck => serve(EnvelopeCheck, parking, application, namespace).await,
        Hosted::ActiveOrders { table } => {
            let at = Endpoints {
                dynamodb: Some((dynamodb, table)),
                ..Endpoints::default()
            };
            let model = ReadModel::ActiveOrders.connect(&at, &Namespace::Live).await?;
            serve(Projector::new(model), parking, application, namespace).await
        }
        Hosted::Analytics { options, schema } => {
            let redshift = aws_sdk_redshiftdata::Client::new(&sdk);
            let at = Endpoints {
                analytics: Some((AnalyticsEndpoint::DataApi(redshift, options), schema)),
                ..Endpoints::default()
            };
            let model = ReadModel::Analytics.connect(&at, &Namespace::Live).await?;
            serve(Projector::new(model), parking, application, namespace).await
        }
    }
}

async fn serve<P: Processor>(
    processor: P,
    parking: DynamoParkingLot,
    application: String,
    namespace: String,
) -> Result<(), lambda_runtime::Error> {
    let (processor, parking, application, namespace) = (&processor, &parking, application.as_str(), namespace.as_str());
    lambda_runtime::run(service_fn(move |event: LambdaEvent<KinesisEvent>| async move {
        let handled = handle_measured(processor, parking, application, &event.payload).await;
        // One EMF line per invocation on stdout: CloudWatch Logs makes it metrics.
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        println!("{}", handled.emf(namespace, application, now_ms));
        Ok::<_, lambda_runtime::Error>(handled.response)
    }))
    .await
}
