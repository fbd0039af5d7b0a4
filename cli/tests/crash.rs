//! Kill -9 of the API process between append and publish, as a real child process:
//! the event is in the store but not on the stream; a restarted process's outbox relay
//! publishes exactly it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::types::ShardIteratorType;
use bytes::Bytes;
use cafe_events::{EventEnvelope, kpl};
use cafe_localstack::{StackConfig, aws, provision};
use tokio::io::AsyncWriteExt;

/// Starts `cafe api` on a free port over the event store `events_table`; returns the
/// child and its address. The table is the test's own: any other test's relay on the
/// shared table would also republish the stranded event (at-least-once allows that)
/// and blur what this process's relay did.
fn start_api(events_table: &str, pause_ms: Option<u64>) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cafe"));
    cmd.args(["api", "--listen", "127.0.0.1:0"])
        .env("CAFE__STACK__NAMES__EVENTS_TABLE", events_table)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(ms) = pause_ms {
        cmd.env("CAFE_FAULT_PAUSE_AFTER_APPEND_MS", ms.to_string());
    }
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .unwrap_or_else(|| panic!("unexpected: {line:?}"))
        .to_owned();
    (child, addr)
}

/// Fire-and-forget POST (the first process never answers: it dies mid-request).
async fn post_earn(cfg: &StackConfig, addr: &str, customer: &str) {
    let body = r#"{"points": 25}"#;
    let path = format!("/v1/loyalty/{customer}/earn");
    let auth = cafe_producers::api::guard::LocalAuth::open(&cfg.auth_dir()).unwrap();
    let bearer = auth.bearer(&cafe_producers::auth::sender(true, &path, None)).unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {bearer}\r\nContent-Type: application/json\r\nIdempotency-Key: crash-{customer}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    // Keep the connection open; the server will be killed under it.
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        drop(s);
    });
}

async fn stored_versions(cfg: &StackConfig, table: &str, aggregate_id: &str) -> usize {
    let sdk = aws::sdk_config(cfg).await;
    aws::dynamodb(&sdk, cfg)
        .query()
        .table_name(table)
        .key_condition_expression("aggregate_id = :id")
        .expression_attribute_values(":id", AttributeValue::S(aggregate_id.into()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .count() as usize
}

/// Iterators at LATEST on every shard, taken now.
async fn tap(k: &aws_sdk_kinesis::Client, stream: &str) -> Vec<Option<String>> {
    let shards = k.list_shards().stream_name(stream).send().await.unwrap();
    let mut its = Vec::new();
    for s in shards.shards() {
        let out = k
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(s.shard_id())
            .shard_iterator_type(ShardIteratorType::Latest)
            .send()
            .await
            .unwrap();
        its.push(out.shard_iterator);
    }
    its
}

/// Versions of `aggregate_id` that arrived since the last call.
async fn arrived(k: &aws_sdk_kinesis::Client, its: &mut [Option<String>], aggregate_id: &str) -> Vec<u64> {
    let mut versions = Vec::new();
    for slot in its.iter_mut() {
        let Some(it) = slot.take() else { continue };
        let out = k.get_records().shard_iterator(it).send().await.unwrap();
        for r in out.records() {
            for u in kpl::deaggregate(r.partition_key(), Bytes::copy_from_slice(r.data().as_ref())) {
                let e = EventEnvelope::decode(&u.data).unwrap();
                if e.aggregate_id.to_string() == aggregate_id {
                    versions.push(e.version);
                }
            }
        }
        *slot = out.next_shard_iterator;
    }
    versions
}

/// A command killed between its append and its publish: the event is in the store, on
/// the test's own events table, and not on the stream.
struct Stranded {
    kinesis: aws_sdk_kinesis::Client,
    its: Vec<Option<String>>,
    customer: String,
    table: String,
}

async fn strand_an_event() -> Stranded {
    let cfg = StackConfig::load().unwrap();
    let kinesis = aws::kinesis(&aws::sdk_config(&cfg).await, &cfg);
    let mut its = tap(&kinesis, &cfg.names.stream).await;
    let customer = format!("crash-{}", uuid::Uuid::now_v7().simple());
    let table = format!("it-events-{customer}");
    let dynamodb = aws::dynamodb(&aws::sdk_config(&cfg).await, &cfg);
    provision::ensure_table_like(&dynamodb, &cfg.names, &cfg.names.events_table, &table)
        .await
        .unwrap();

    // The first process appends, then "hangs" before publishing; we kill it there.
    let (mut first, addr) = start_api(&table, Some(60_000));
    post_earn(&cfg, &addr, &customer).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while stored_versions(&cfg, &table, &customer).await == 0 {
        assert!(Instant::now() < deadline, "the command was never appended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    first.wait().unwrap();
    assert_eq!(
        stored_versions(&cfg, &table, &customer).await,
        1,
        "PointsEarned is in the event store"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        arrived(&kinesis, &mut its, &customer).await.is_empty(),
        "and not on the stream"
    );
    Stranded {
        kinesis,
        its,
        customer,
        table,
    }
}

impl Stranded {
    /// What arrives for the customer within 30 s, and 1.5 s more (anything else for
    /// this aggregate would show up within another pass).
    async fn published(&mut self) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        while seen.is_empty() && Instant::now() < deadline {
            seen.extend(arrived(&self.kinesis, &mut self.its, &self.customer).await);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        seen.extend(arrived(&self.kinesis, &mut self.its, &self.customer).await);
        seen
    }
}

fn terminate(child: &mut Child) -> bool {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap().success()
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_between_append_and_publish_loses_nothing() {
    let mut stranded = strand_an_event().await;
    // A restarted process's relay publishes exactly the missing event.
    let (mut second, _) = start_api(&stranded.table, None);
    assert_eq!(stranded.published().await, vec![1], "exactly the missing event, once");
    // SIGTERM drains and exits cleanly.
    assert!(terminate(&mut second));
}

/// As deployed in AWS: the API function publishes its own events, and `cafe relay`, a
/// service of its own, publishes those a crash stranded; its AWS calls are all on its
/// unit's list (its IAM role).
#[tokio::test(flavor = "multi_thread")]
async fn the_relay_service_alone_publishes_a_stranded_event_with_its_units_calls() {
    let mut stranded = strand_an_event().await;
    let dir = tempfile::tempdir().unwrap();
    let recorded = dir.path().join("calls.json");
    let mut relay = Command::new(env!("CARGO_BIN_EXE_cafe"))
        .arg("relay")
        .env("CAFE_EVENTS_TABLE", &stranded.table)
        .env("CAFE_RECORD_AWS_CALLS", &recorded)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(relay.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains(&stranded.table), "{line:?}");
    assert_eq!(stranded.published().await, vec![1], "exactly the missing event, once");
    assert!(terminate(&mut relay));
    let made: std::collections::BTreeMap<String, u64> =
        serde_json::from_slice(&std::fs::read(&recorded).unwrap()).unwrap();
    let actions = cafe_settings::units::iam_actions(made.keys());
    let strays = cafe_settings::units::RELAY.unlisted(&actions);
    assert!(strays.is_empty(), "calls not on the unit's list: {strays:?}");
    for seen in ["dynamodb:Query", "dynamodb:BatchWriteItem", "kinesis:PutRecords"] {
        assert!(actions.contains(seen), "{seen} not in {actions:?}");
    }
}

#[test]
fn a_deployed_service_refuses_to_start_without_what_its_unit_needs() {
    let cafe = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cafe"));
        c.env_remove("CAFE_EVENTS_TABLE").env_remove("CAFE_STREAM");
        c
    };
    for (args, env, missing) in [
        (vec!["relay", "--aws"], vec![], "CAFE_EVENTS_TABLE"),
        (
            vec![
                "consume",
                "--aws",
                "--application",
                "orders",
                "--sink",
                "projector:orders",
            ],
            vec![
                ("CAFE_STREAM", "s"),
                ("CAFE_LEASES_TABLE", "l"),
                ("CAFE_PARKED_TABLE", "p"),
            ],
            "CAFE_POSTGRES_URL",
        ),
    ] {
        let out = cafe()
            .args(&args)
            .envs(env)
            .env_remove("CAFE_POSTGRES_URL")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(missing), "{args:?}: {stderr}");
    }
}
