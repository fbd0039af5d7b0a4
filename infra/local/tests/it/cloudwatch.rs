use aws_sdk_cloudwatch::primitives::DateTime;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit, Statistic};
use cafe_localstack::{Service, aws};

use crate::helpers::{stack_with, unique};

#[tokio::test]
async fn put_metric_data_then_read_statistics() {
    let cfg = stack_with(Service::Moto).await;
    let sdk = aws::sdk_config(&cfg).await;
    let client = aws::cloudwatch(&sdk, &cfg);
    let namespace = unique("it-CloudCafe");
    let shard = Dimension::builder().name("shard").value("shardId-000000000000").build();
    let now = std::time::SystemTime::now();
    for v in [100.0, 300.0] {
        client
            .put_metric_data()
            .namespace(&namespace)
            .metric_data(
                MetricDatum::builder()
                    .metric_name("MillisBehindLatest")
                    .dimensions(shard.clone())
                    .unit(StandardUnit::Milliseconds)
                    .value(v)
                    .timestamp(DateTime::from(now))
                    .build(),
            )
            .send()
            .await
            .unwrap();
    }
    let listed = client.list_metrics().namespace(&namespace).send().await.unwrap();
    assert_eq!(listed.metrics().len(), 1);
    assert_eq!(listed.metrics()[0].metric_name(), Some("MillisBehindLatest"));

    let stats = client
        .get_metric_statistics()
        .namespace(&namespace)
        .metric_name("MillisBehindLatest")
        .dimensions(shard)
        .start_time(DateTime::from(now - std::time::Duration::from_secs(600)))
        .end_time(DateTime::from(now + std::time::Duration::from_secs(600)))
        .period(60)
        .statistics(Statistic::Maximum)
        .statistics(Statistic::SampleCount)
        .send()
        .await
        .unwrap();
    let max = stats
        .datapoints()
        .iter()
        .filter_map(|d| d.maximum())
        .fold(f64::MIN, f64::max);
    let count: f64 = stats.datapoints().iter().filter_map(|d| d.sample_count()).sum();
    assert_eq!(max, 300.0);
    assert_eq!(count, 2.0);
}
