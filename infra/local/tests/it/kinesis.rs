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

/// A reader polling at the tip of a shard must see every record exactly once, in
/// sequence order, however many writers put concurrently: a consumer's next iterator
/// continues after the last record it read, so a record made visible after a later
/// one is skipped for good. (ferrokinesis 0.7 numbers a put's records before storing
/// them; without the stack's one-put-at-a-time layer, concurrent puts become visible
/// out of order and this reader loses records, or the server deadlocks.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_at_the_tip_sees_every_concurrently_put_record_in_order() {
    const WRITERS: usize = 8;
    const PUTS: usize = 40;
    const PER_PUT: usize = 25;
    let cfg = stack_with(Service::Kinesis).await;
    let sdk = aws::sdk_config(&cfg).await;
    let client = aws::kinesis(&sdk, &cfg);
    let stream = unique("it-order");
    provision::ensure_stream(&client, &stream, 1).await.unwrap();
    let shard = client.list_shards().stream_name(&stream).send().await.unwrap().shards()[0]
        .shard_id()
        .to_owned();

    let writers_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (client, stream, shard, done) = (client.clone(), stream.clone(), shard.clone(), writers_done.clone());
        tokio::spawn(async move {
            let mut it = client
                .get_shard_iterator()
                .stream_name(&stream)
                .shard_id(&shard)
                .shard_iterator_type(ShardIteratorType::TrimHorizon)
                .send()
                .await
                .unwrap()
                .shard_iterator
                .unwrap();
            let mut seen: Vec<(String, String)> = Vec::new();
            let mut empty_after_done = 0;
            loop {
                let out = client.get_records().shard_iterator(&it).send().await.unwrap();
                let finished = done.load(std::sync::atomic::Ordering::SeqCst);
                seen.extend(out.records().iter().map(|r| {
                    (
                        r.sequence_number().to_owned(),
                        String::from_utf8(r.data().as_ref().to_vec()).unwrap(),
                    )
                }));
                if out.records().is_empty() && finished {
                    empty_after_done += 1;
                    if empty_after_done == 3 {
                        return seen;
                    }
                }
                it = out.next_shard_iterator().unwrap().to_owned();
            }
        })
    };
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (client, stream) = (client.clone(), stream.clone());
            tokio::spawn(async move {
                for p in 0..PUTS {
                    let entries = (0..PER_PUT)
                        .map(|r| {
                            let d = format!("w{w}-p{p}-r{r}");
                            PutRecordsRequestEntry::builder()
                                .partition_key(&d)
                                .data(Blob::new(d.into_bytes()))
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
                }
            })
        })
        .collect();
    // A deadlocked server fails the test instead of hanging it.
    let patience = std::time::Duration::from_secs(120);
    for w in writers {
        tokio::time::timeout(patience, w)
            .await
            .expect("the Kinesis stand-in stopped answering puts")
            .unwrap();
    }
    writers_done.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = tokio::time::timeout(patience, reader)
        .await
        .expect("the Kinesis stand-in stopped answering reads")
        .unwrap();

    let total = WRITERS * PUTS * PER_PUT;
    let in_order = seen
        .windows(2)
        .all(|p| (p[0].0.len(), &p[0].0) < (p[1].0.len(), &p[1].0));
    assert!(in_order, "the reader saw sequence numbers out of order");
    let distinct: std::collections::HashSet<&str> = seen.iter().map(|(_, d)| d.as_str()).collect();
    assert_eq!(
        (seen.len(), distinct.len()),
        (total, total),
        "the reader at the tip missed {} of {total} records",
        total - distinct.len()
    );
    client.delete_stream().stream_name(&stream).send().await.unwrap();
}
