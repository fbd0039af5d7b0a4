use cafe_consumers::lease::Checkpoint;
use cafe_consumers::retrieval::{get_batch, start_iterator};
use cafe_events::EventEnvelope;
use cafe_localstack::{StackConfig, aws, provision};
use cafe_producers::publish::{KinesisSink, Publisher, PublisherConfig};

fn restocked(sku: u32) -> EventEnvelope {
    cafe_events::samples::restocked(1, sku).unwrap()
}

/// Fifty events go out as one KPL aggregate on a one-shard stream; reading yields them
/// one by one with sub-sequence numbers, and a checkpoint in the middle of the aggregate
/// resumes at the next user record.
#[tokio::test]
async fn aggregated_records_are_read_one_by_one_and_resume_mid_aggregate() {
    let cfg = StackConfig::load().unwrap();
    let kinesis = aws::kinesis(&aws::sdk_config(&cfg).await, &cfg);
    let stream = format!("it-read-{}", uuid::Uuid::now_v7().simple());
    provision::ensure_stream(&kinesis, &stream, 1).await.unwrap();
    let publisher = Publisher::new(KinesisSink::new(kinesis.clone(), &stream), PublisherConfig::default());
    let sent: Vec<EventEnvelope> = (0..50).map(restocked).collect();
    let report = publisher.publish(&sent).await.unwrap();
    assert_eq!(report.kinesis_records, 1, "one shard, one aggregate");
    let shard = kinesis
        .list_shards()
        .stream_name(&stream)
        .send()
        .await
        .unwrap()
        .shards()[0]
        .shard_id()
        .to_owned();

    let read = |from: Checkpoint| {
        let (kinesis, stream, shard) = (kinesis.clone(), stream.clone(), shard.clone());
        async move {
            let it = start_iterator(&kinesis, &stream, &shard, &from, None)
                .await
                .unwrap()
                .unwrap();
            get_batch(&kinesis, &shard, &it, 1_000, &from).await.unwrap()
        }
    };
    let all = read(Checkpoint::TrimHorizon).await;
    assert_eq!(all.records.len(), 50);
    assert_eq!(
        all.records.iter().map(|r| r.sub).collect::<Vec<_>>(),
        (0..50).collect::<Vec<u64>>()
    );
    let decoded: Vec<EventEnvelope> = all
        .records
        .iter()
        .map(|r| EventEnvelope::decode(&r.data).unwrap())
        .collect();
    assert_eq!(decoded, sent, "every user record intact and in order");
    assert!(all.next_iterator.is_some(), "an open shard always has a next iterator");

    let resumed = read(all.records[19].checkpoint()).await;
    assert_eq!(resumed.records.len(), 30);
    assert_eq!(resumed.records[0].sub, 20, "resumes after the checkpointed user record");
    assert!(read(all.records[49].checkpoint()).await.records.is_empty());
    assert!(
        start_iterator(&kinesis, &stream, &shard, &Checkpoint::ShardEnd, None)
            .await
            .unwrap()
            .is_none()
    );
    kinesis.delete_stream().stream_name(&stream).send().await.unwrap();
}
