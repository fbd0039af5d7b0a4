//! `up` provisioned what `infra/names.json` names.

use aws_sdk_sqs::types::QueueAttributeName;
use cafe_localstack::{Service, aws, provision};

use crate::helpers::stack_with;

#[tokio::test]
async fn stream_and_tables_exist() {
    let cfg = stack_with(Service::DynamoDb).await;
    let sdk = aws::sdk_config(&cfg).await;
    let summary = aws::kinesis(&sdk, &cfg)
        .describe_stream_summary()
        .stream_name(&cfg.names.stream)
        .send()
        .await
        .unwrap();
    assert_eq!(
        summary.stream_description_summary().unwrap().open_shard_count(),
        cfg.stream_shards as i32
    );
    let dynamo = aws::dynamodb(&sdk, &cfg);
    for spec in provision::table_specs(&cfg.names) {
        let t = dynamo.describe_table().table_name(&spec.name).send().await.unwrap();
        let gsis = t.table().unwrap().global_secondary_indexes().len();
        assert_eq!(gsis, spec.gsis.len(), "{}", spec.name);
    }
}

#[tokio::test]
async fn payments_queue_redrives_to_its_dlq() {
    let cfg = stack_with(Service::Sqs).await;
    let sdk = aws::sdk_config(&cfg).await;
    let sqs = aws::sqs(&sdk, &cfg);
    let url = sqs
        .get_queue_url()
        .queue_name(&cfg.names.payments_queue)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap();
    let policy: serde_json::Value = serde_json::from_str(&attrs[&QueueAttributeName::RedrivePolicy]).unwrap();
    assert!(
        policy["deadLetterTargetArn"]
            .as_str()
            .unwrap()
            .ends_with(&cfg.names.payments_dlq)
    );
    assert_eq!(
        policy["maxReceiveCount"].as_u64(),
        Some(u64::from(cfg.names.payments_max_receive_count))
    );
}

#[tokio::test]
async fn both_postgres_databases_exist() {
    let cfg = stack_with(Service::Postgres).await;
    let (client, conn) = tokio_postgres::connect(&cfg.postgres_url("postgres"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = client
        .query("SELECT datname FROM pg_database ORDER BY datname", &[])
        .await
        .unwrap();
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert!(names.contains(&cfg.names.orders_database), "{names:?}");
    assert!(names.contains(&cfg.names.analytics_database), "{names:?}");
}
