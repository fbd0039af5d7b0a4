//! `cafe replay` as an operator runs it, against a sandboxed stack the main job filled:
//! a rebuild of every model verifies against what the running pipeline built, a
//! corrupted live row is named, a kill -9 resumes to the same result, and bad input
//! exits 2 with nothing written.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::Sandbox;

const ALL: &str = "orders,active_orders,documents,cache,inventory,analytics";

fn cafe_any(sandbox: &Sandbox, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cafe"))
        .args(args)
        .envs(sandbox.env())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The replay id a rebuild printed first.
fn replay_id(stdout: &str) -> String {
    let line = stdout.lines().find(|l| l.starts_with("replay ")).unwrap();
    line["replay ".len()..].split(':').next().unwrap().to_owned()
}

/// Runs `cafe replay verify ID` and asserts every one of `models` (comma-separated)
/// matches in all 256 partitions.
fn verify_matches(sandbox: &Sandbox, id: &str, models: &str) {
    let out = cafe_any(sandbox, &["replay", "verify", id]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
    for model in models.split(',') {
        assert!(
            stdout.contains(&format!(
                "{model}: match — 256 partitions match, 0 live ahead, 0 differ"
            )),
            "{model}: {stdout}"
        );
    }
}

/// A sandbox whose main job ran and kept up, settled past a replay's watermark margin.
fn filled() -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.cafe(&["run", "--for", "4s", "--rate", "40", "--listen", "127.0.0.1:0"]);
    std::thread::sleep(cafe_replay::SETTLE + Duration::from_millis(500));
    sandbox
}

#[test]
fn a_rebuild_verifies_against_the_pipelines_models_and_names_a_corrupted_row() {
    let sandbox = filled();
    let out = cafe_any(
        &sandbox,
        &[
            "replay",
            "rebuild",
            "--projector",
            ALL,
            "--page-size",
            "50",
            "--progress-every",
            "1ms",
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    // Without a terminal, progress comes as log lines with a rate and an ETA.
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("replay: ") && l.contains("events/s, ETA ")),
        "{stderr}"
    );
    let id = replay_id(&stdout);

    verify_matches(&sandbox, &id, ALL);

    // A changed total in the live orders model: named, and verify fails.
    let cfg = sandbox.config();
    let order_id = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let (client, conn) =
            tokio_postgres::connect(&cfg.postgres_url(&cfg.names.orders_database), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        let row = client
            .query_one(
                "UPDATE orders SET total_cents = total_cents + 1
                  WHERE order_id = (SELECT min(order_id) FROM orders) RETURNING order_id",
                &[],
            )
            .await
            .unwrap();
        row.get::<_, String>(0)
    });
    let out = cafe_any(&sandbox, &["replay", "verify", &id]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("orders: differs — 255 partitions match, 0 live ahead, 1 differ"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(r#"{{"kind":"changed","key":"orders:{order_id}","version":"#)),
        "{stdout}"
    );

    // A swap is refused on that verdict; --force swaps the rebuilt model in, which
    // repairs the damaged row as queries see it.
    let out = cafe_any(&sandbox, &["replay", "swap", &id]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("found differences in orders"),
        "{}",
        text(&out.stderr)
    );
    let out = cafe_any(&sandbox, &["replay", "swap", &id, "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("warning: --force"), "{}", text(&out.stderr));
    let status = text(&cafe_any(&sandbox, &["replay", "status", &id]).stdout);
    assert!(status.contains(&format!("{id}  swapped in")), "{status}");

    // Drop now removes the copies that served before, never the serving ones.
    let out = cafe_any(&sandbox, &["replay", "drop", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("dropped the orders copy in live"),
        "{}",
        text(&out.stdout)
    );
    let status = text(&cafe_any(&sandbox, &["replay", "status", &id]).stdout);
    assert!(status.contains(&format!("{id}  dropped")), "{status}");
}

#[test]
fn a_swap_under_live_traffic_loses_nothing_and_queries_follow_it() {
    let sandbox = Sandbox::new();
    let log = sandbox.dir.path().join("run.log");
    let mut run = Command::new(env!("CARGO_BIN_EXE_cafe"))
        .args(["run", "--for", "35s", "--rate", "30", "--listen", "127.0.0.1:0"])
        .envs(sandbox.env())
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(12));
    let models = "orders,active_orders";
    let out = cafe_any(&sandbox, &["replay", "rebuild", "--projector", models]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let id = replay_id(&text(&out.stdout));

    let out = cafe_any(&sandbox, &["replay", "swap", &id]);
    assert_eq!(out.status.code(), Some(2), "an unverified replay swapped");
    assert!(
        text(&out.stderr).contains("has not been verified"),
        "{}",
        text(&out.stderr)
    );
    let out = cafe_any(&sandbox, &["replay", "verify", &id]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("orders: live ahead"),
        "traffic did not move past the watermark: {stdout}"
    );
    let out = cafe_any(&sandbox, &["replay", "swap", &id]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        run.try_wait().unwrap().is_none(),
        "the run ended before the swap: no traffic across it"
    );

    run.wait().unwrap();
    let run_out = std::fs::read_to_string(&log).unwrap();
    // The run's read-backs after the swap went through the queries, which followed it.
    assert!(run_out.contains("orders read back              3"), "{run_out}");

    // Nothing lost: the live models (the swapped-in copies, caught up and then written
    // by the live projectors) equal a fresh rebuild taken after the traffic stopped.
    std::thread::sleep(cafe_replay::SETTLE + Duration::from_millis(500));
    let out = cafe_any(&sandbox, &["replay", "rebuild", "--projector", models]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let fresh = replay_id(&text(&out.stdout));
    verify_matches(&sandbox, &fresh, models);

    // The lease table holds the live consumers' leases and checkpoints only: nothing
    // in it names a replay.
    let cfg = sandbox.config();
    let items: Vec<String> = tokio::runtime::Runtime::new().unwrap().block_on(async {
        let sdk = cafe_localstack::aws::sdk_config(&cfg).await;
        let out = cafe_localstack::aws::dynamodb(&sdk, &cfg)
            .scan()
            .table_name(&cfg.names.leases_table)
            .send()
            .await
            .unwrap();
        out.items().iter().map(|i| format!("{i:?}")).collect()
    });
    assert!(items.iter().any(|i| i.contains("orders")), "{items:?}");
    assert!(items.iter().all(|i| !i.contains("replay")), "{items:?}");
}

#[test]
fn a_replay_killed_mid_run_resumes_to_the_same_verified_result() {
    let sandbox = filled();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cafe"))
        .args([
            "replay",
            "rebuild",
            "--projector",
            ALL,
            "--page-size",
            "20",
            "--max-rate",
            "150",
        ])
        .envs(sandbox.env())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let id = replay_id(&first);
    std::thread::sleep(Duration::from_millis(1500));
    // kill -9: no drain, no final checkpoint.
    child.kill().unwrap();
    child.wait().unwrap();
    let status = text(&cafe_any(&sandbox, &["replay", "status", &id]).stdout);
    assert!(status.contains("running (or stopped: resume it)"), "{status}");

    let out = cafe_any(&sandbox, &["replay", "rebuild", "--resume", &id]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains(&format!("resuming replay {id}")), "{stdout}");
    verify_matches(&sandbox, &id, ALL);
}

#[test]
fn bad_input_exits_2_with_a_message_and_writes_nothing() {
    let sandbox = Sandbox::new();
    sandbox.cafe(&["stack", "up"]);
    // Arguments split at spaces (none contains one).
    let cases: [(&str, &str); 12] = [
        (
            "replay rebuild --projector orders --from stream --shard-range shardId-000000000000:1..",
            "is not in shard shardId-000000000000",
        ),
        (
            "replay rebuild --projector orders --from stream --shard-range shardId-000000000000:x..",
            "expected SHARD, SHARD:FROM.. or SHARD:FROM..TO",
        ),
        (
            "replay rebuild --projector orders --shard-range shardId-000000000000",
            "--shard-range needs --from stream",
        ),
        (
            "replay rebuild --projector orders --since 2026-11-30T10:00:00Z --until 2026-11-30T09:00:00Z",
            "the time range is reversed",
        ),
        ("replay rebuild --projector order", "no read model is called \"order\""),
        (
            "replay rebuild --projector orders --aggregate-type orders",
            "no aggregate type is called",
        ),
        (
            "replay rebuild --resume 0123456789ab",
            "no replay has id \"0123456789ab\"",
        ),
        ("replay verify not-an-id", "no replay has id \"not-an-id\""),
        (
            "replay plan --shard-range shardId-000000000000",
            "--shard-range needs --from stream",
        ),
        ("replay storm --clients 0", "--clients"),
        ("replay storm --rate-multiple 0", "--rate-multiple must be above 0"),
        ("replay storm --rate-multiple 2 --max-rate 10", "cannot be used with"),
    ];
    for (args, message) in cases {
        let args: Vec<&str> = args.split(' ').collect();
        let out = cafe_any(&sandbox, &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
    let status = text(&cafe_any(&sandbox, &["replay", "status"]).stdout);
    assert_eq!(status.trim(), "no replays");
}

#[test]
fn lag_samples_every_live_application_judges_its_shards_and_refuses_a_zero_interval() {
    let sandbox = Sandbox::new();
    sandbox.cafe(&["run", "--for", "3s", "--rate", "20", "--listen", "127.0.0.1:0"]);
    let out = cafe_any(&sandbox, &["lag", "--for", "2s", "--every", "500ms"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
    for app in ALL.split(',').chain(["payment-requests"]) {
        assert!(stdout.lines().any(|l| l.starts_with(app)), "{app}: {stdout}");
    }
    let statuses = |sandbox: &Sandbox| -> Vec<(String, String, Vec<String>)> {
        let out = cafe_any(sandbox, &["lag", "--for", "1s", "--every", "500ms", "--json"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let apps: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        apps.as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let shards = a["shards"].as_array().unwrap();
                (
                    a["application"].as_str().unwrap().to_owned(),
                    a["status"].as_str().unwrap().to_owned(),
                    shards.iter().map(|s| s[1].as_str().unwrap().to_owned()).collect(),
                )
            })
            .collect()
    };
    // The run ended: every projector released its leases with nothing left to read.
    for (app, status, shards) in statuses(&sandbox) {
        assert_eq!(status, "IDLE", "{app}: {shards:?}");
        assert!(
            !shards.is_empty() && shards.iter().all(|s| s == "IDLE"),
            "{app}: {shards:?}"
        );
    }
    // Records arrive while no worker runs: each projector is stopped where they wait.
    let cfg = sandbox.config();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let sdk = cafe_localstack::aws::sdk_config(&cfg).await;
        let kinesis = cafe_localstack::aws::kinesis(&sdk, &cfg);
        let records: Vec<(String, &[u8])> = (0..16).map(|k| (format!("k-{k}"), &b"x"[..])).collect();
        cafe_localstack::testing::put_raw(&kinesis, &cfg.names.stream, &records).await;
    });
    for (app, status, shards) in statuses(&sandbox) {
        assert_eq!(status, "STOP", "{app}: {shards:?}");
        assert!(shards.iter().all(|s| s == "STOP"), "{app}: {shards:?}");
    }
    let out = cafe_any(&sandbox, &["lag", "--every", "0s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("must be longer than zero"),
        "{}",
        text(&out.stderr)
    );
}
