//! Rebuilds from the event store: every model's shadow verifies against a copy built
//! in order from the same history, a stopped replay resumes to the same result, and bad
//! input writes nothing.

use std::time::Duration;

use cafe_localstack::{StackConfig, aws, provision};
use cafe_producers::store::DynamoEventStore;
use cafe_projections::catalog::{Namespace, ReadModel};
use cafe_projections::serving::LiveSide;
use cafe_projections::verify::{Buckets, Verdict};
use cafe_replay::record::Source;
use cafe_replay::{Filter, Params, ReplayError, Replayer};
use tokio_util::sync::CancellationToken;

use crate::helpers::{World, params, unique, world};

#[tokio::test]
async fn every_model_rebuilt_from_the_event_store_matches_its_live_copy() {
    let w = world(80).await;
    let meta = w.replayer.create(params(&ReadModel::ALL, None), None).await.unwrap();
    let out = w
        .replayer
        .run(&meta.id, CancellationToken::new(), false, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(out.finished, "{out:?}");
    assert_eq!(out.read as usize, w.history.len());
    assert_eq!((out.applied as usize, out.refused), (w.history.len(), 0));
    let reports = w
        .replayer
        .verify(&meta.id, Buckets::new(64).unwrap(), 10)
        .await
        .unwrap();
    assert_eq!(reports.len(), ReadModel::ALL.len());
    for (model, report) in &reports {
        assert_eq!(report.verdict(), Verdict::Match, "{model}: {:?}", report.keys);
        assert!(
            report.buckets.iter().map(|b| b.shadow.rows).sum::<u64>() > 0,
            "{model}: empty"
        );
    }
    let (meta, segments) = w.replayer.status(&meta.id).await.unwrap();
    assert_eq!(meta.state, cafe_replay::record::State::Finished);
    assert!(segments.iter().all(|s| s.done));
    w.replayer.drop(&meta.id).await.unwrap();
    w.drop_all(&meta.id.namespace()).await;
}

#[tokio::test]
async fn a_stopped_replay_resumes_from_its_checkpoints_to_the_same_result() {
    let w = world(60).await;
    let models = [ReadModel::Orders, ReadModel::Inventory, ReadModel::Analytics];
    // Slow enough that the stop lands mid-way.
    let meta = w.replayer.create(params(&models, Some(400)), None).await.unwrap();
    let stop = CancellationToken::new();
    let stopper = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            stop.cancel();
        })
    };
    let first = w
        .replayer
        .run(&meta.id, stop, false, Duration::from_secs(60))
        .await
        .unwrap();
    stopper.await.unwrap();
    assert!(!first.finished && first.read > 0, "{first:?}");
    assert!((first.read as usize) < w.history.len(), "{first:?}");
    let (_, segments) = w.replayer.status(&meta.id).await.unwrap();
    assert!(segments.iter().any(|s| s.after.is_some()), "no checkpoint written");

    let second = w
        .replayer
        .run(&meta.id, CancellationToken::new(), false, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(second.finished, "{second:?}");
    // Resumed, not restarted: each event read once over both runs.
    assert_eq!(second.read as usize, w.history.len());
    for (model, report) in w
        .replayer
        .verify(&meta.id, Buckets::new(64).unwrap(), 10)
        .await
        .unwrap()
    {
        assert_eq!(report.verdict(), Verdict::Match, "{model}: {:?}", report.keys);
    }
    w.replayer.drop(&meta.id).await.unwrap();
    w.drop_all(&meta.id.namespace()).await;
}

#[tokio::test]
async fn bad_input_is_refused_before_anything_is_written() {
    let w = world(5).await;
    let t = |s: &str| s.parse().unwrap();
    let mut reversed = params(&[ReadModel::Orders], None);
    reversed.filter = Filter {
        since: Some(t("2026-11-30T10:00:00Z")),
        until: Some(t("2026-11-30T09:00:00Z")),
        ..Filter::default()
    };
    let unknown = Params {
        models: vec!["order".into()],
        ..params(&[], None)
    };
    for bad in [reversed, unknown, params(&[], None)] {
        let err = w.replayer.create(bad, None).await.unwrap_err();
        assert!(err.is_usage(), "{err}");
    }
    assert!(
        w.replays.list().await.unwrap().is_empty(),
        "a refused replay left a record"
    );
    let missing = cafe_replay::ReplayId::new();
    for err in [
        w.replayer.status(&missing).await.unwrap_err(),
        w.replayer.verify(&missing, Buckets::DEFAULT, 1).await.unwrap_err(),
    ] {
        assert!(matches!(err, ReplayError::Unknown(_)), "{err}");
    }
    w.drop_all(&Namespace::shadow("unused_ns").unwrap()).await;
}

/// `w`'s history on a stream of its own (one record per event), and a replayer that
/// reads it.
async fn on_stream(w: &World) -> (Replayer<DynamoEventStore>, aws_sdk_kinesis::Client, String) {
    let cfg = StackConfig::load().unwrap();
    let sdk = aws::sdk_config(&cfg).await;
    let kinesis = aws::kinesis(&sdk, &cfg);
    let stream = unique("it-replay").replace('_', "-");
    provision::ensure_stream(&kinesis, &stream, 3).await.unwrap();
    let records: Vec<(String, bytes::Bytes)> = w.history.iter().map(|e| (e.partition_key(), e.encode())).collect();
    cafe_localstack::testing::put_raw(&kinesis, &stream, &records).await;
    let dynamodb = aws::dynamodb(&sdk, &cfg);
    let store = DynamoEventStore::new(dynamodb, "unused-events", "unused-idempotency");
    let replayer = Replayer::new(store, w.replays.clone(), w.at.clone(), LiveSide::Fixed(w.live.clone()))
        .with_stream(kinesis.clone(), &stream);
    (replayer, kinesis, stream)
}

#[tokio::test]
async fn a_rebuild_from_the_stream_matches_and_a_sequence_not_in_it_is_refused() {
    let w = world(40).await;
    let (replayer, kinesis, stream) = on_stream(&w).await;
    // The plan reads every shard to the watermark's bound and writes nothing.
    let plan = replayer.plan_stream(&Filter::default(), vec![]).await.unwrap();
    assert_eq!(plan.shards.len(), 3);
    assert!(plan.segments.is_empty());
    let total: u64 = plan.shards.iter().map(|s| s.counts.events).sum();
    let selected: u64 = plan.shards.iter().map(|s| s.counts.selected).sum();
    assert_eq!((total as usize, selected as usize), (w.history.len(), w.history.len()));
    for s in plan.shards.iter().filter(|s| s.counts.events > 0) {
        let (first, last) = (s.first.as_deref().unwrap(), s.last.as_deref().unwrap());
        assert!(!cafe_consumers::retrieval::is_before(last, first), "{s:?}");
    }
    assert!(w.replays.list().await.unwrap().is_empty(), "a plan writes nothing");
    let mut p = params(&[ReadModel::Orders, ReadModel::Inventory, ReadModel::Analytics], None);
    p.source = Source::Stream { shards: vec![] };
    let meta = replayer.create(p.clone(), None).await.unwrap();
    assert_eq!(meta.params.segments, 3, "one segment per shard");
    let out = replayer
        .run(&meta.id, CancellationToken::new(), false, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(out.finished, "{out:?}");
    assert_eq!(out.applied as usize, w.history.len());
    // The live copy was built from the same events: the stream's rebuild matches it.
    // (Verification asks the event store about newer rows; nothing is newer here.)
    let models = [ReadModel::Orders, ReadModel::Inventory, ReadModel::Analytics];
    for model in models {
        let live = model.connect(&w.at, &w.live).await.unwrap();
        let shadow = model.connect(&w.at, &meta.id.namespace()).await.unwrap();
        let r = cafe_projections::verify::compare(
            &live,
            &shadow,
            Buckets::new(32).unwrap(),
            &cafe_projections::verify::Settled,
            5,
        )
        .await
        .unwrap();
        assert_eq!(r.verdict(), Verdict::Match, "{model}: {:?}", r.keys);
    }

    // A starting sequence number the shard does not hold: refused, nothing written.
    let shard = cafe_replay::stream::shards(&kinesis, &stream).await.unwrap().remove(0);
    let before = w.replays.list().await.unwrap().len();
    for range in [
        format!("{shard}:49999999999999999999999999999999999999999999999999999999.."),
        "shardId-000000000099".to_owned(),
    ] {
        let mut bad = p.clone();
        bad.source = Source::Stream {
            shards: vec![cafe_replay::record::ShardRange::parse(&range).unwrap()],
        };
        let err = replayer.create(bad, None).await.unwrap_err();
        assert!(err.is_usage(), "{range}: {err}");
        let range = cafe_replay::record::ShardRange::parse(&range).unwrap();
        let err = replayer.plan_stream(&Filter::default(), vec![range]).await.unwrap_err();
        assert!(err.is_usage(), "plan: {err}");
    }
    assert_eq!(w.replays.list().await.unwrap().len(), before);
    replayer.drop(&meta.id).await.unwrap();
    w.drop_all(&meta.id.namespace()).await;
}
