//! The throttle injector in front of the real stand-ins: what it refuses reaches the
//! caller as the service's own throttling error, after the SDK's retries; what it
//! passes is served; and it can be turned off while clients hold it.

use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::PutRecordsRequestEntry;
use cafe_localstack::faults::{FaultInjector, Faults};
use cafe_localstack::{Service, aws, provision};

use crate::helpers::{stack_with, unique};

fn entry(i: usize) -> PutRecordsRequestEntry {
    PutRecordsRequestEntry::builder()
        .partition_key(format!("k{i}"))
        .data(Blob::new(format!("record-{i}")))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_fully_throttled_kinesis_put_fails_as_a_throttle_after_the_sdk_retries() {
    let cfg = stack_with(Service::Kinesis).await;
    let sdk = aws::sdk_config(&cfg).await;
    let plain = aws::kinesis(&sdk, &cfg);
    let stream = unique("it-throttle");
    provision::ensure_stream(&plain, &stream, 1).await.unwrap();
    let faults = FaultInjector::armed(Faults {
        kinesis_throttle: 1.0,
        ..Faults::default()
    });
    let throttled = faults.kinesis(&plain);

    let err = throttled
        .put_records()
        .stream_name(&stream)
        .records(entry(0))
        .send()
        .await
        .unwrap_err();
    let service = err.into_service_error();
    assert!(
        service.is_provisioned_throughput_exceeded_exception(),
        "not the service's throttle: {service:?}"
    );
    // The SDK's standard retry mode made its three attempts; the throttle refused each.
    assert_eq!(faults.counts().throttled(), 3);
    assert_eq!(faults.counts().seen(), 3);
    // Control-plane calls are not data requests: they pass.
    throttled
        .describe_stream_summary()
        .stream_name(&stream)
        .send()
        .await
        .unwrap();
    assert_eq!(faults.counts().seen(), 3);

    // Turned off while the client is held: the next put reaches the stand-in.
    faults.set(Faults::default());
    let out = throttled
        .put_records()
        .stream_name(&stream)
        .records(entry(1))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_record_count(), Some(0));
    assert_eq!(faults.counts().throttled(), 3);
}

#[tokio::test]
async fn a_partly_throttled_dynamodb_client_is_carried_through_by_the_sdk_retries() {
    let cfg = stack_with(Service::DynamoDb).await;
    let sdk = aws::sdk_config(&cfg).await;
    let plain = aws::dynamodb(&sdk, &cfg);
    let table = unique("it-throttle");
    plain
        .create_table()
        .table_name(&table)
        .attribute_definitions(
            aws_sdk_dynamodb::types::AttributeDefinition::builder()
                .attribute_name("pk")
                .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            aws_sdk_dynamodb::types::KeySchemaElement::builder()
                .attribute_name("pk")
                .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                .build()
                .unwrap(),
        )
        .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
        .send()
        .await
        .unwrap();
    let faults = FaultInjector::armed(Faults {
        dynamodb_throttle: 0.2,
        ..Faults::default()
    });
    let throttled = faults.dynamodb(&plain);

    let mut failed = 0;
    for i in 0..100 {
        let put = throttled
            .put_item()
            .table_name(&table)
            .item("pk", aws_sdk_dynamodb::types::AttributeValue::S(format!("item-{i}")))
            .send()
            .await;
        if let Err(e) = put {
            let service = e.into_service_error();
            assert!(
                service.is_provisioned_throughput_exceeded_exception(),
                "not the service's throttle: {service:?}"
            );
            failed += 1;
        }
    }
    let c = faults.counts();
    // About a fifth refused (100+ requests at 0.2: far outside 5..45 is a broken share).
    assert!(
        (5..=45).contains(&c.throttled()),
        "{} of {} throttled",
        c.throttled(),
        c.seen()
    );
    // Three refusals in a row are rare (0.8 %); the retries carry the rest through.
    assert!(failed <= 10, "{failed} of 100 puts failed");
    let stored = plain
        .scan()
        .table_name(&table)
        .select(aws_sdk_dynamodb::types::Select::Count)
        .send()
        .await
        .unwrap()
        .count();
    assert_eq!(stored, 100 - failed);
}

#[tokio::test]
async fn an_unarmed_injector_leaves_the_client_as_it_is() {
    let cfg = stack_with(Service::Kinesis).await;
    let sdk = aws::sdk_config(&cfg).await;
    let plain = aws::kinesis(&sdk, &cfg);
    let stream = unique("it-unarmed");
    provision::ensure_stream(&plain, &stream, 1).await.unwrap();
    let faults = FaultInjector::off();
    // Setting a share on an unarmed injector changes nothing for its clients.
    faults.set(Faults {
        kinesis_throttle: 1.0,
        ..Faults::default()
    });
    let client = faults.kinesis(&plain);
    client
        .put_records()
        .stream_name(&stream)
        .records(entry(0))
        .send()
        .await
        .unwrap();
    assert_eq!(faults.counts().seen(), 0);
}
