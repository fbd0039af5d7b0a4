use aws_sdk_kinesis::primitives::Blob;
use aws_sdk_kinesis::types::{PutRecordsRequestEntry, ShardIteratorType};
use cafe_localstack::{Service, aws, provision};

use crate::helpers::{stack_with, unique};

#[tokio::test]
async fn put_records_then_read_every_shard_back() {
    let cfg = stack_with(Service::Kinesis).await;
    let sdk = aws::sdk_config(&cfg).await;
    let client = aws::kinesis(&sdk, &cfg);
    let stream = unique("it-stream");
    provision::ensure_stream(&client, &stream, 3).await.unwrap();

    let sent: Vec<String> = (0..50).map(|i| format!("record-{i}")).collect();
    let entries = sent
        .iter()
        .map(|d| {
            PutRecordsRequestEntry::builder()
                .partition_key(d)
                .data(Blob::new(d.as_bytes()))
                .build()
                .unwrap()
        })
        .collect();
    let out = client
        .put_records()
        .stream_name(&stream)
        .set_records(Some(entries))
        .send()
        .await
        .unwrap();
    assert_eq!(out.failed_record_count(), Some(0));

    let shards = client.list_shards().stream_name(&stream).send().await.unwrap();
    assert_eq!(shards.shards().len(), 3);
    let mut got = Vec::new();
    for shard in shards.shards() {
        let it = client
            .get_shard_iterator()
            .stream_name(&stream)
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap();
        let records = client.get_records().shard_iterator(it).send().await.unwrap();
        got.extend(
            records
                .records()
                .iter()
                .map(|r| String::from_utf8(r.data().as_ref().to_vec()).unwrap()),
        );
    }
    got.sort();
    let mut want = sent.clone();
    want.sort();
    assert_eq!(got, want);

    client.delete_stream().stream_name(&stream).send().await.unwrap();
}

#[tokio::test]
async fn smoke_round_trip_reads_back_the_published_envelope() {
    let cfg = stack_with(Service::Kinesis).await;
    let report = cafe_localstack::smoke::round_trip(&cfg).await.unwrap();
    assert_eq!(report.event_type, cafe_localstack::smoke::PROBE_TYPE);
    assert!(report.bytes > 0);
}
