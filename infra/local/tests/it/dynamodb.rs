use aws_sdk_dynamodb::types::AttributeValue;
use cafe_localstack::provision::{Gsi, Key, KeyKind, TableSpec};
use cafe_localstack::{Service, aws, provision};

use crate::helpers::{stack_with, unique};

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}

#[tokio::test]
async fn conditional_put_get_and_query_an_index() {
    let cfg = stack_with(Service::DynamoDb).await;
    let sdk = aws::sdk_config(&cfg).await;
    let client = aws::dynamodb(&sdk, &cfg);
    let spec = TableSpec {
        name: unique("it-table"),
        hash: Key {
            name: "aggregate_id",
            kind: KeyKind::S,
        },
        range: Some(Key {
            name: "version",
            kind: KeyKind::N,
        }),
        gsis: vec![Gsi {
            name: "by-type",
            hash: Key {
                name: "event_type",
                kind: KeyKind::S,
            },
            range: None,
        }],
        ttl_attribute: None,
    };
    provision::ensure_table(&client, &spec).await.unwrap();
    // A second ensure is a no-op, not an error.
    provision::ensure_table(&client, &spec).await.unwrap();

    let put = |version: &str| {
        client
            .put_item()
            .table_name(&spec.name)
            .item("aggregate_id", s("order-1"))
            .item("version", AttributeValue::N(version.to_owned()))
            .item("event_type", s("OrderPlaced"))
            .condition_expression("attribute_not_exists(aggregate_id)")
    };
    put("1").send().await.unwrap();
    let dup = put("1").send().await.unwrap_err();
    assert!(
        dup.as_service_error()
            .is_some_and(|e| e.is_conditional_check_failed_exception()),
        "{dup:?}"
    );

    let item = client
        .get_item()
        .table_name(&spec.name)
        .key("aggregate_id", s("order-1"))
        .key("version", AttributeValue::N("1".into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .item
        .unwrap();
    assert_eq!(item.get("event_type"), Some(&s("OrderPlaced")));

    let by_type = client
        .query()
        .table_name(&spec.name)
        .index_name("by-type")
        .key_condition_expression("event_type = :t")
        .expression_attribute_values(":t", s("OrderPlaced"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_type.count(), 1);

    client.delete_table().table_name(&spec.name).send().await.unwrap();
}

/// The call counter sees every request a client sends, by operation, and starts again
/// from zero when read.
#[tokio::test]
async fn the_call_counter_counts_requests_by_operation() {
    let cfg = stack_with(Service::DynamoDb).await;
    let sdk = aws::sdk_config(&cfg).await;
    let counter = aws::CallCounter::default();
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&sdk)
            .endpoint_url(cfg.dynamodb_endpoint())
            .interceptor(counter.clone())
            .build(),
    );
    client.list_tables().send().await.unwrap();
    client.list_tables().send().await.unwrap();
    let missing = client.describe_table().table_name(unique("it-none")).send().await;
    assert!(missing.is_err());
    let counts = counter.take();
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        vec![
            ("DynamoDB.DescribeTable".to_owned(), 1),
            ("DynamoDB.ListTables".to_owned(), 2)
        ]
    );
    assert!(counter.take().is_empty());
}
