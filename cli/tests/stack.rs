//! The `cafe stack` lifecycle as a user runs it: real OS processes, a private state dir
//! and free ports, so it never touches the developer's (or the suite's) own stack.

// Tests fail by panicking; unwrap is the assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use cafe_localstack::supervisor::start_time_of;
use common::Sandbox;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_kinesis::types::ShardIteratorType;
use cafe_localstack::{StackConfig, aws, smoke};

async fn redis_get(cfg: &StackConfig, key: &str) -> Option<String> {
    let client = redis::Client::open(cfg.redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("GET").arg(key).query_async(&mut conn).await.unwrap()
}

async fn redis_set(cfg: &StackConfig, key: &str) {
    let client = redis::Client::open(cfg.redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("SET")
        .arg(key)
        .arg("kept")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
}

/// The MemoryDB stand-in through the cluster client, as the inventory reaches it: a
/// command fails unless the cluster is formed and serves the key's slot. `SET` when
/// `value` is given, then `GET`.
async fn memorydb(cfg: &StackConfig, key: &str, value: Option<&str>) -> Option<String> {
    let client = redis::cluster::ClusterClient::new(vec![cfg.memorydb_url()]).unwrap();
    let mut conn = client.get_async_connection().await.unwrap();
    if let Some(v) = value {
        redis::cmd("SET")
            .arg(key)
            .arg(v)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
    redis::cmd("GET").arg(key).query_async(&mut conn).await.unwrap()
}

async fn put_marker_event(cfg: &StackConfig) {
    let sdk = aws::sdk_config(cfg).await;
    aws::dynamodb(&sdk, cfg)
        .put_item()
        .table_name(&cfg.names.events_table)
        .item("aggregate_id", AttributeValue::S("marker".into()))
        .item("version", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap();
}

async fn marker_event_exists(cfg: &StackConfig) -> bool {
    let sdk = aws::sdk_config(cfg).await;
    aws::dynamodb(&sdk, cfg)
        .get_item()
        .table_name(&cfg.names.events_table)
        .key("aggregate_id", AttributeValue::S("marker".into()))
        .key("version", AttributeValue::N("1".into()))
        .send()
        .await
        .unwrap()
        .item
        .is_some()
}

async fn lease_marker(cfg: &StackConfig, put: bool) -> bool {
    let sdk = aws::sdk_config(cfg).await;
    let d = aws::dynamodb(&sdk, cfg);
    let key = AttributeValue::S("marker:shardId-000000000000".into());
    if put {
        d.put_item()
            .table_name(&cfg.names.leases_table)
            .item("leaseKey", key.clone())
            .send()
            .await
            .unwrap();
    }
    d.get_item()
        .table_name(&cfg.names.leases_table)
        .key("leaseKey", key)
        .send()
        .await
        .unwrap()
        .item
        .is_some()
}

async fn records_in_stream(cfg: &StackConfig) -> usize {
    let sdk = aws::sdk_config(cfg).await;
    let k = aws::kinesis(&sdk, cfg);
    let shards = k.list_shards().stream_name(&cfg.names.stream).send().await.unwrap();
    let mut n = 0;
    for s in shards.shards() {
        let it = k
            .get_shard_iterator()
            .stream_name(&cfg.names.stream)
            .shard_id(s.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap()
            .shard_iterator
            .unwrap();
        n += k.get_records().shard_iterator(it).send().await.unwrap().records().len();
    }
    n
}

fn assert_all_gone(sandbox: &Sandbox, pids: &BTreeMap<String, i32>) {
    for (file, pid) in pids {
        assert_eq!(start_time_of(*pid), None, "{file} (pid {pid}) still alive after down");
    }
    assert_eq!(
        sandbox.our_processes(),
        Vec::<i32>::new(),
        "processes of ours left behind"
    );
    assert!(
        !sandbox.dir.path().join("run").read_dir().unwrap().any(|_| true),
        "pid files left behind"
    );
}

fn is_dir(p: &Path) -> bool {
    p.is_dir()
}

#[tokio::test(flavor = "multi_thread")]
async fn up_is_idempotent_down_leaves_nothing_and_data_survives_unless_fresh() {
    let sandbox = Sandbox::new();
    let cfg = sandbox.config();

    // First up starts every service, healthy, and provisions.
    let first = sandbox.cafe(&["stack", "up"]);
    let table = String::from_utf8_lossy(&first.stdout).into_owned();
    for svc in [
        "kinesis",
        "dynamodb",
        "sqs",
        "moto",
        "postgres",
        "redis",
        "memorydb ",
        "memorydb-2",
        "mongo",
    ] {
        let row = table
            .lines()
            .find(|l| l.starts_with(svc))
            .unwrap_or_else(|| panic!("no row for {svc}:\n{table}"));
        assert!(row.trim_end().ends_with("yes"), "{svc} not healthy:\n{table}");
    }
    let pids = sandbox.pids();
    assert_eq!(pids.len(), cafe_localstack::Service::ALL.len(), "{pids:?}");

    // Second up is a no-op: nothing started, the same processes.
    let second = sandbox.cafe(&["stack", "up"]);
    let said = String::from_utf8_lossy(&second.stderr);
    assert_eq!(
        said.matches("already running").count(),
        cafe_localstack::Service::ALL.len(),
        "{said}"
    );
    assert_eq!(sandbox.pids(), pids);

    // Data written now survives down/up.
    smoke::round_trip(&cfg).await.unwrap();
    assert_eq!(records_in_stream(&cfg).await, 1);
    redis_set(&cfg, "marker").await;
    // A key on each shard of the MemoryDB stand-in (slots 15,495 and 3,300).
    for key in ["a", "b"] {
        assert_eq!(memorydb(&cfg, key, Some("kept")).await.as_deref(), Some("kept"));
    }
    put_marker_event(&cfg).await;
    assert!(lease_marker(&cfg, true).await);
    sandbox.cafe(&["stack", "down"]);
    assert_all_gone(&sandbox, &pids);

    sandbox.cafe(&["stack", "up"]);
    assert_ne!(sandbox.pids(), pids, "a new set of processes");
    assert_eq!(redis_get(&cfg, "marker").await.as_deref(), Some("kept"));
    for key in ["a", "b"] {
        let kept = memorydb(&cfg, key, None).await;
        assert_eq!(kept.as_deref(), Some("kept"), "the cluster re-formed with its data");
    }
    assert!(marker_event_exists(&cfg).await, "the event store kept its items");
    assert_eq!(records_in_stream(&cfg).await, 1, "the durable stream kept its record");
    assert!(lease_marker(&cfg, false).await, "the same stream keeps its leases");

    // A stream that is new (as after a restart of the non-durable stand-in) starts with
    // no leases: the old ones' checkpoints name sequence numbers it would refuse.
    let sdk = aws::sdk_config(&cfg).await;
    let kinesis = aws::kinesis(&sdk, &cfg);
    kinesis
        .delete_stream()
        .stream_name(&cfg.names.stream)
        .send()
        .await
        .unwrap();
    cafe_localstack::testing::eventually("the stream deleted", std::time::Duration::from_secs(10), async || {
        kinesis
            .describe_stream_summary()
            .stream_name(&cfg.names.stream)
            .send()
            .await
            .is_err()
    })
    .await;
    sandbox.cafe(&["stack", "up"]);
    assert!(
        !lease_marker(&cfg, false).await,
        "a new stream's lease table starts empty"
    );
    assert!(marker_event_exists(&cfg).await, "the event store is untouched");

    // --fresh starts from nothing.
    sandbox.cafe(&["stack", "up", "--fresh"]);
    assert_eq!(redis_get(&cfg, "marker").await, None);
    assert_eq!(memorydb(&cfg, "a", None).await, None, "a fresh cluster");
    assert_eq!(records_in_stream(&cfg).await, 0);
    assert!(!marker_event_exists(&cfg).await);

    let last = sandbox.pids();
    sandbox.cafe(&["stack", "down"]);
    assert_all_gone(&sandbox, &last);
    assert!(is_dir(&sandbox.dir.path().join("data")), "down keeps data");
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    for args in [
        &["run", "--for", "soon"][..],
        &["stack", "frobnicate"],
        &["run", "--rate", "0"],
        &["bench", "cold-start", "--binary", "/no/such/bootstrap"],
        &["bench", "cold-start", "--runs", "0"],
        &["run", "--cloudwatch-every", "0s"],
        &["lag", "--json", "--watch"],
        &["lag", "--shards"],
        &["lag", "--from", "http://127.0.0.1:1"],
        &["lag", "serve", "--listen", "nowhere"],
        &["cloudwatch", "render", "--bogus"],
        &["chaos", "nothing"],
        &["chaos", "poison", "--rate", "0"],
        &["chaos", "consumer-kill", "--kills", "0"],
        &["chaos", "postgres-restart", "--outage", "0s"],
        &["consume", "--application", "orders", "--sink", "projector:nothing"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_cafe")).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} printed no message");
    }
}

/// Runs the bounded main job with extra environment; asserts it exits 0 after its smoke
/// round trip and returns what it printed.
fn run_main_job(args: &[&str], env: Vec<(String, String)>) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cafe"))
        .args(["run", "--listen", "127.0.0.1:0"])
        .args(args)
        .envs(env)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("read back intact"), "{stdout}");
    stdout
}

/// The bounded main job against the suite's stack: every accepted order reaches the stream.
#[test]
fn run_for_a_bounded_time_prints_a_summary_and_exits_0() {
    let stdout = run_main_job(&["--for", "3s", "--rate", "100"], Vec::new());
    let number = |label: &str| -> u64 {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("{stdout}"));
        line.split_whitespace()
            .nth(label.split_whitespace().count())
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(number("orders accepted") > 0, "{stdout}");
    assert_eq!(number("orders accepted"), number("orders on stream"), "{stdout}");
    assert!(number("payment invocations") > 0, "the saga ran: {stdout}");
    // Every part is judged, and each kept up (the run exits 1 otherwise).
    for part in [
        "command API",
        "orders",
        "active_orders",
        "documents",
        "cache",
        "inventory",
        "analytics",
        "payment-requests",
        "payment function",
    ] {
        let (verdict, row) = health_row(&stdout, part).unwrap_or_else(|| panic!("no health row for {part}: {stdout}"));
        assert_eq!(verdict, "ok", "{row}");
    }
    // The payment function wrote a metrics line per batch to its stdout (CloudWatch
    // Logs in AWS), each one valid EMF.
    let log = cafe_localstack::StackConfig::load()
        .unwrap()
        .log_dir()
        .join("cafe-lambda-payment.log");
    let text = std::fs::read_to_string(&log).unwrap();
    let emf: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('{') && l.contains("\"_aws\""))
        .collect();
    assert!(!emf.is_empty(), "no EMF line in {}", log.display());
    for line in emf {
        cafe_consumers::emf::validate(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
}

/// Not on a terminal, logs are JSON lines carrying their spans' fields: a shard's lines
/// name the application, stream and shard, so a log search finds one shard's story.
#[test]
fn logs_off_a_terminal_are_json_lines_with_span_fields() {
    let out = Command::new(env!("CARGO_BIN_EXE_cafe"))
        .args(["run", "--listen", "127.0.0.1:0", "--for", "2s", "--rate", "20"])
        .env("RUST_LOG", "info,cafe_consumers=info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(logs.len() > 5, "{stderr}");
    assert!(
        logs.iter()
            .all(|l| l["level"].is_string() && l["timestamp"].is_string())
    );
    let shard_line = logs
        .iter()
        .find(|l| l["span"]["name"] == "shard")
        .unwrap_or_else(|| panic!("no line inside a shard span: {stderr}"));
    for field in ["application", "stream", "shard"] {
        assert!(shard_line["span"][field].is_string(), "{field}: {shard_line}");
    }
    // And --log-format pretty is text even off a terminal.
    let text = Command::new(env!("CARGO_BIN_EXE_cafe"))
        .args(["stack", "status", "--log-format", "pretty"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&text.stderr)
            .lines()
            .any(|l| l.starts_with('{'))
    );
}

/// The verdict and the row of `part` in the main job's health table: the row whose name
/// column is exactly `part` (so `orders` is not `active_orders`, nor the API's row).
fn health_row<'a>(stdout: &'a str, part: &str) -> Option<(&'a str, &'a str)> {
    let table = stdout.split("health (").nth(1)?;
    table.lines().find_map(|row| {
        let (verdict, rest) = row.trim_start().split_once(char::is_whitespace)?;
        let after = rest.trim_start().strip_prefix(part)?;
        after.starts_with(char::is_whitespace).then_some((verdict, row))
    })
}

/// A part that cannot keep up fails the run, named: a gateway that takes 2 s a charge
/// lets the function settle about 10 payments/s, far under the 50 orders/s asked. On a
/// stack of its own: its backlog and its slow function must not meet another run's.
#[test]
fn a_part_that_falls_behind_is_named_and_fails_the_run() {
    let sandbox = Sandbox::new();
    let out = Command::new(env!("CARGO_BIN_EXE_cafe"))
        .args(["run", "--listen", "127.0.0.1:0", "--for", "3s", "--rate", "50"])
        .envs(sandbox.env())
        .env("CAFE__STACK__KINESIS_DURABLE", "false")
        .env("CAFE_GATEWAY_LATENCY_MS", "2000")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let verdict = |part: &str| health_row(&stdout, part).map(|(v, _)| v);
    assert!(
        verdict("payment-requests") == Some("BEHIND") || verdict("payment function") == Some("BEHIND"),
        "{stdout}"
    );
    assert_eq!(verdict("orders"), Some("ok"), "the projectors kept up: {stdout}");
    assert!(stderr.contains("did not keep up"), "{stderr}");
}

/// `--aws` uses nothing but the SDK's default chain; pointing that chain at the local
/// stack with the standard AWS_ENDPOINT_URL_* variables shows that moving to AWS is a
/// change of environment, not of code.
#[test]
fn aws_mode_reaches_whatever_the_standard_environment_names() {
    let cfg = StackConfig::load().unwrap();
    let stdout = run_main_job(&["--aws", "--for", "2s", "--rate", "50"], cfg.aws_env());
    assert!(
        !stdout.contains("service   replaces"),
        "--aws must not touch the local stack: {stdout}"
    );
}

/// The operators' tools reach AWS the same way: through what the SDK's standard
/// environment names (here, the suite's stack), not the local stack's configuration,
/// which points nowhere in this test.
#[test]
fn replay_and_lag_reach_aws_through_the_standard_environment() {
    let cfg = StackConfig::load().unwrap();
    for args in [&["replay", "status", "--aws"][..], &["lag", "--aws", "--for", "1s"][..]] {
        let out = Command::new(env!("CARGO_BIN_EXE_cafe"))
            .args(args)
            .envs(cfg.aws_env())
            .env("CAFE__STACK__PORTS__DYNAMODB", "1")
            .env("CAFE__STACK__PORTS__KINESIS", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
