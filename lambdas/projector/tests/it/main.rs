//! The projector Lambda's handler on Kinesis event fixtures (the JSON Lambda delivers),
//! parking into the DynamoDB stand-in.
// Tests fail by panicking; unwrap is the assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use aws_lambda_events::event::kinesis::KinesisEvent;
use cafe_consumers::parking::{DynamoParkingLot, ParkError, Parked, ParkingLot};
use cafe_consumers::{BatchContext, Outcome, Processor, Record};
use cafe_events::EventEnvelope;
use cafe_lambda_projector::{EnvelopeCheck, handle, handle_measured};
use cafe_localstack::{StackConfig, aws, provision};

/// A Lambda Kinesis event from one shard: an envelope, a KPL aggregate of three
/// envelopes, the AWS documentation's sample text (not an envelope), an envelope.
fn fixture() -> KinesisEvent {
    let path =
        std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("tests/fixtures/kinesis-event.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

const SEQ: [&str; 4] = [
    "49590338271490256608559692538361571095921575989136588801",
    "49590338271490256608559692538361571095921575989136588802",
    "49590338271490256608559692538361571095921575989136588803",
    "49590338271490256608559692538361571095921575989136588804",
];

/// Remembers what it was offered; answers from a script.
#[derive(Default)]
struct Scripted {
    offered: Mutex<Vec<(String, u64)>>,
    retry_at: Option<(usize, u64)>,
}

impl Processor for Scripted {
    async fn process(&self, _ctx: BatchContext<'_>, records: &[Record]) -> Vec<Outcome> {
        let mut out = Vec::new();
        for r in records {
            self.offered.lock().unwrap().push((r.sequence.clone(), r.sub));
            if self
                .retry_at
                .is_some_and(|(i, sub)| SEQ[i] == r.sequence && sub == r.sub)
            {
                out.push(Outcome::Retry("database restarting".into()));
                break;
            }
            out.push(match EventEnvelope::decode(&r.data) {
                Ok(_) => Outcome::Done,
                Err(e) => Outcome::Park(e.to_string()),
            });
        }
        out
    }
}

/// Parks nowhere: every park fails.
struct Broken;

impl ParkingLot for Broken {
    async fn park(&self, _application: &str, _parked: &Parked) -> Result<(), ParkError> {
        Err(ParkError("table unavailable".into()))
    }
}

/// Parks in memory.
#[derive(Default)]
struct Memory(Mutex<Vec<Parked>>);

impl ParkingLot for Memory {
    async fn park(&self, _application: &str, parked: &Parked) -> Result<(), ParkError> {
        self.0.lock().unwrap().push(parked.clone());
        Ok(())
    }
}

#[tokio::test]
async fn the_event_becomes_the_workers_records_with_aggregates_deaggregated() {
    let p = Scripted::default();
    let response = handle(&p, &Memory::default(), "fixture", &fixture()).await;
    assert!(response.batch_item_failures.is_empty());
    let offered = p.offered.lock().unwrap().clone();
    let expected: Vec<(String, u64)> = [(0, 0), (1, 0), (1, 1), (1, 2), (2, 0), (3, 0)]
        .iter()
        .map(|(i, sub)| (SEQ[*i].to_owned(), *sub))
        .collect();
    assert_eq!(offered, expected);
}

#[tokio::test]
async fn poison_is_parked_in_dynamodb_with_its_bytes_and_the_batch_succeeds_with_its_units_calls() {
    let cfg = StackConfig::load().unwrap();
    let dynamodb = aws::dynamodb(&aws::sdk_config(&cfg).await, &cfg);
    let name = format!("it-parked-{}", uuid::Uuid::now_v7().simple());
    let spec = provision::ensure_table_like(&dynamodb, &cfg.names, &cfg.names.parked_table, &name)
        .await
        .unwrap();
    // Its calls recorded: they must be on the function's unit's list (its IAM role).
    let calls = aws::CallCounter::default();
    let recorded =
        aws_sdk_dynamodb::Client::from_conf(dynamodb.config().to_builder().interceptor(calls.clone()).build());
    let parking = DynamoParkingLot::new(recorded, &spec.name);

    let response = handle(&EnvelopeCheck, &parking, "lambda-fixture", &fixture()).await;
    assert!(response.batch_item_failures.is_empty(), "{response:?}");
    let made = cafe_settings::units::iam_actions(calls.take().keys());
    let strays = cafe_settings::units::PROJECTOR_FUNCTION.unlisted(&made);
    assert!(strays.is_empty(), "calls not on the unit's list: {strays:?}");
    assert!(made.contains("dynamodb:PutItem"), "{made:?}");
    let parked = parking.list("lambda-fixture").await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].shard_id, "shardId-000000000006");
    assert_eq!(parked[0].record.sequence, SEQ[2]);
    assert_eq!(&parked[0].record.data[..], b"Hello, this is a test.");
    assert!(
        parked[0].reason.starts_with("not an event envelope"),
        "{}",
        parked[0].reason
    );
}

#[tokio::test]
async fn a_transient_failure_inside_an_aggregate_reports_the_aggregate_to_retry_from() {
    let p = Scripted {
        retry_at: Some((1, 1)),
        ..Scripted::default()
    };
    let parking = Memory::default();
    let response = handle(&p, &parking, "fixture", &fixture()).await;
    assert_eq!(
        serde_json::to_value(&response).unwrap(),
        serde_json::json!({ "batchItemFailures": [{ "itemIdentifier": SEQ[1] }] }),
        "the partial batch response Lambda expects"
    );
    assert!(
        parking.0.lock().unwrap().is_empty(),
        "nothing after the failure was parked"
    );
}

#[tokio::test]
async fn a_record_that_cannot_be_parked_is_reported_for_retry() {
    let response = handle(&EnvelopeCheck, &Broken, "fixture", &fixture()).await;
    let ids: Vec<_> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone().unwrap())
        .collect();
    assert_eq!(ids, vec![SEQ[2].to_owned()]);
}

/// The invocation's metrics: one valid EMF line with the worker's metric names, per
/// user record (the aggregate's three counted apart), the parked one counted and not
/// timed, every applied envelope's end-to-end latency, the stream from the ARN.
#[tokio::test]
async fn an_invocation_is_one_valid_emf_line_with_the_workers_metric_names() {
    use cafe_consumers::metrics::{END_TO_END_SECONDS, PARKED, PROJECTION_LAG_SECONDS, RECORDS, RETRIES};
    let handled = handle_measured(&EnvelopeCheck, &Memory::default(), "fixture", &fixture()).await;
    assert_eq!(handled.stream, "events");
    assert_eq!(handled.shards.len(), 1);
    let shard = &handled.shards[0];
    assert_eq!((shard.records, shard.parked, shard.retried), (6, 1, false));
    assert_eq!(shard.end_to_end_seconds.len(), 5, "five envelopes applied");
    assert!(shard.end_to_end_seconds.iter().all(|s| *s > 0.0));

    let line = handled.emf("CloudCafe/Test", "fixture", 1_700_000_000_000);
    cafe_consumers::emf::validate(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["Stream"], "events");
    assert_eq!(v["Application"], "fixture");
    assert_eq!(v[RECORDS], 6.0);
    assert_eq!(v[PARKED], 1.0);
    assert_eq!(v[RETRIES], 0.0);
    assert_eq!(v[END_TO_END_SECONDS].as_array().unwrap().len(), 5);
    assert_eq!(v[PROJECTION_LAG_SECONDS], *shard.end_to_end_seconds.last().unwrap());

    // A retried shard: counted, and only what finished before it is timed.
    let p = Scripted {
        retry_at: Some((1, 1)),
        ..Scripted::default()
    };
    let handled = handle_measured(&p, &Memory::default(), "fixture", &fixture()).await;
    let shard = &handled.shards[0];
    assert_eq!((shard.records, shard.parked, shard.retried), (2, 0, true));
    let line = handled.emf("CloudCafe/Test", "fixture", 1_700_000_000_000);
    cafe_consumers::emf::validate(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(serde_json::from_str::<serde_json::Value>(&line).unwrap()[RETRIES], 1.0);
}
