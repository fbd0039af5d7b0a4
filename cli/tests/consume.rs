//! Consumer workers as real OS processes (`cafe consume`) against the local stack:
//! balance across processes, takeover after kill -9, and a SIGTERM handoff.
//!
//! Each worker appends what it processed to a JSON-lines file; the tests judge
//! ownership, loss and duplicates from those files and the lease table.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cafe_consumers::lease::{Checkpoint, DynamoLeaseTable, Lease, LeaseTable};
use cafe_localstack::testing::{eventually, put_raw};
use cafe_localstack::{StackConfig, aws, provision};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio_util::sync::CancellationToken;

struct Setup {
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
    application: String,
    leases: DynamoLeaseTable,
    dir: tempfile::TempDir,
}

async fn setup(shards: u32, name: &str) -> Setup {
    let cfg = StackConfig::load().unwrap();
    let sdk = aws::sdk_config(&cfg).await;
    let kinesis = aws::kinesis(&sdk, &cfg);
    let id = uuid::Uuid::now_v7().simple().to_string();
    let stream = format!("it-{name}-{id}");
    provision::ensure_stream(&kinesis, &stream, shards).await.unwrap();
    // The shared lease table; the application name keeps this test's leases apart.
    let application = format!("{name}-{id}");
    let leases = DynamoLeaseTable::new(aws::dynamodb(&sdk, &cfg), &cfg.names.leases_table, &application);
    Setup {
        kinesis,
        stream,
        application,
        leases,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// A `cafe consume` child that is killed if the test panics.
struct WorkerProcess {
    id: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl WorkerProcess {
    fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.as_ref().unwrap().id()).unwrap())
    }

    /// SIGTERM, then the exit status and what it printed last.
    fn terminate(&mut self) -> (bool, String) {
        kill(self.pid(), Signal::SIGTERM).unwrap();
        let out = self.child.take().unwrap().wait_with_output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn kill9(&mut self) {
        kill(self.pid(), Signal::SIGKILL).unwrap();
        self.child.take().unwrap().wait().unwrap();
    }
}

impl Setup {
    fn worker(&self, id: &str, extra: &[&str]) -> WorkerProcess {
        let log = self.dir.path().join(format!("{id}.jsonl"));
        self.worker_with(id, &format!("jsonl:{}", log.display()), log, &[], extra)
    }

    /// A worker with any sink and extra environment.
    fn worker_with(&self, id: &str, sink: &str, log: PathBuf, env: &[(&str, &str)], extra: &[&str]) -> WorkerProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cafe"))
            .args(["consume", "--application", &self.application, "--stream", &self.stream])
            .args(["--worker-id", id, "--sink", sink])
            .args(["--failover", "3s", "--idle-poll", "200ms", "--discovery-interval", "1s"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with(&format!("worker {id} consuming")), "{line:?}");
        WorkerProcess {
            id: id.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// Puts `key-K:N` records for `keys` keys every 50 ms until `stop`.
    fn produce(&self, keys: usize, stop: CancellationToken) -> tokio::task::JoinHandle<HashSet<String>> {
        let (kinesis, stream) = (self.kinesis.clone(), self.stream.clone());
        tokio::spawn(async move {
            let mut sent = HashSet::new();
            let mut n = 0u64;
            while !stop.is_cancelled() {
                let round: Vec<(String, String)> = (0..keys)
                    .map(|k| (format!("key-{k}"), format!("key-{k}:{n}")))
                    .collect();
                put_raw(&kinesis, &stream, &round).await;
                sent.extend(round.into_iter().map(|(_, data)| data));
                n += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            sent
        })
    }

    async fn leases(&self) -> Vec<Lease> {
        self.leases.list().await.unwrap()
    }

    async fn owner_counts(&self) -> Vec<usize> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for l in self.leases().await {
            if let Some(o) = l.owner {
                *counts.entry(o).or_default() += 1;
            }
        }
        let mut c: Vec<usize> = counts.into_values().collect();
        c.sort_unstable();
        c
    }
}

/// One processed record from a worker's log.
#[derive(Debug, Clone)]
struct Line {
    worker: String,
    shard: String,
    sequence: String,
    data: String,
}

fn read_logs(workers: &[&WorkerProcess]) -> Vec<Line> {
    let mut lines = Vec::new();
    for w in workers {
        let Ok(text) = std::fs::read_to_string(&w.log) else {
            continue;
        };
        for l in text.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            lines.push(Line {
                worker: v["worker"].as_str().unwrap().to_owned(),
                shard: v["shard"].as_str().unwrap().to_owned(),
                sequence: v["sequence"].as_str().unwrap().to_owned(),
                data: v["data"].as_str().unwrap().to_owned(),
            });
        }
    }
    lines
}

fn processed(workers: &[&WorkerProcess]) -> HashSet<String> {
    read_logs(workers).into_iter().map(|l| l.data).collect()
}

/// Kinesis sequence numbers are decimal strings longer than u128: compare by length,
/// then text.
fn after(sequence: &str, checkpoint: &str) -> bool {
    (sequence.len(), sequence) > (checkpoint.len(), checkpoint)
}

/// 3 worker processes, 8 shards, a steady producer: leases end balanced within one,
/// every record is processed, and no record twice (two workers never read one shard
/// at the same time, or both would have processed its records).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_share_eight_shards_and_process_every_record_once() {
    let s = setup(8, "three").await;
    let stop = CancellationToken::new();
    let producer = s.produce(16, stop.clone());
    let mut workers = [s.worker("w-1", &[]), s.worker("w-2", &[]), s.worker("w-3", &[])];
    eventually("leases balanced 3/3/2", Duration::from_secs(60), async || {
        s.owner_counts().await == vec![2, 3, 3]
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let sent = producer.await.unwrap();
    eventually("every record processed", Duration::from_secs(30), async || {
        processed(&workers.iter().collect::<Vec<_>>()).is_superset(&sent)
    })
    .await;
    assert_eq!(s.owner_counts().await, vec![2, 3, 3], "still balanced");
    for w in &mut workers {
        let (ok, out) = w.terminate();
        assert!(ok, "{} exited non-zero: {out}", w.id);
    }
    let lines = read_logs(&workers.iter().collect::<Vec<_>>());
    let mut count: HashMap<&str, usize> = HashMap::new();
    for l in &lines {
        *count.entry(&l.data).or_default() += 1;
    }
    let twice: Vec<_> = count.iter().filter(|(_, c)| **c > 1).collect();
    assert!(twice.is_empty(), "processed more than once: {twice:?}");
    assert_eq!(count.len(), sent.len());
    let workers_seen: HashSet<&str> = lines.iter().map(|l| l.worker.as_str()).collect();
    assert_eq!(workers_seen.len(), 3);
    assert!(
        s.leases().await.iter().all(|l| l.owner.is_none()),
        "every lease released at SIGTERM"
    );
}

/// Kill -9 of a worker mid-stream: the survivor takes its shards within the failover
/// time + 5 s, every record is processed at least once, and the only duplicates are
/// records of the dead worker's shards after its last checkpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_shards_are_taken_over_and_only_its_uncheckpointed_window_repeats() {
    let s = setup(4, "kill").await;
    let stop = CancellationToken::new();
    let producer = s.produce(12, stop.clone());
    let mut doomed = s.worker("doomed", &[]);
    let mut survivor = s.worker("survivor", &[]);
    eventually("two shards each", Duration::from_secs(60), async || {
        s.owner_counts().await == vec![2, 2]
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    doomed.kill9();
    let killed_at = Instant::now();
    let at_kill: HashMap<String, Checkpoint> = s
        .leases()
        .await
        .into_iter()
        .filter(|l| l.is_owned_by("doomed"))
        .map(|l| (l.shard_id, l.checkpoint))
        .collect();
    assert_eq!(at_kill.len(), 2);
    eventually("the survivor holds all four", Duration::from_secs(30), async || {
        s.leases().await.iter().all(|l| l.is_owned_by("survivor"))
    })
    .await;
    let takeover = killed_at.elapsed();
    assert!(
        takeover <= Duration::from_secs(3 + 5),
        "takeover took {takeover:?} (failover 3 s)"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.cancel();
    let sent = producer.await.unwrap();
    eventually("every record processed", Duration::from_secs(30), async || {
        processed(&[&doomed, &survivor]).is_superset(&sent)
    })
    .await;
    let (ok, out) = survivor.terminate();
    assert!(ok, "{out}");

    let lines = read_logs(&[&doomed, &survivor]);
    let mut by_data: HashMap<&str, Vec<&Line>> = HashMap::new();
    for l in &lines {
        by_data.entry(&l.data).or_default().push(l);
    }
    for (data, copies) in by_data.iter().filter(|(_, c)| c.len() > 1) {
        let l = copies[0];
        let Some(cp) = at_kill.get(&l.shard) else {
            panic!("{data} repeated on {}, which the killed worker never held", l.shard)
        };
        match cp {
            Checkpoint::Sequence { sequence, .. } => assert!(
                after(&l.sequence, sequence),
                "{data} at {} repeated although checkpointed up to {sequence}",
                l.sequence
            ),
            Checkpoint::TrimHorizon => {}
            other => panic!("unexpected checkpoint {other:?}"),
        }
        assert!(copies.iter().any(|c| c.worker == "doomed"), "{data}: {copies:?}");
        assert_eq!(copies.len(), 2, "{data}: {copies:?}");
    }
    eprintln!(
        "takeover after kill -9: {takeover:?}; duplicates: {}",
        by_data.values().filter(|c| c.len() > 1).count()
    );
}

/// SIGTERM: the worker finishes its batch, checkpoints, releases its leases and exits 0;
/// a successor resumes exactly there: zero duplicates. Periodic checkpoints are off, so
/// only the final one can make that true.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_checkpoints_and_releases_and_the_successor_repeats_nothing() {
    let s = setup(4, "term").await;
    let stop = CancellationToken::new();
    let producer = s.produce(12, stop.clone());
    let no_periodic = ["--checkpoint-interval", "1h"];
    let mut first = s.worker("first", &no_periodic);
    eventually("first holds all four", Duration::from_secs(30), async || {
        s.owner_counts().await == vec![4]
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (ok, out) = first.terminate();
    assert!(ok, "{out}");
    assert!(out.contains("stopped:"), "{out}");
    let leases = s.leases().await;
    assert!(leases.iter().all(|l| l.owner.is_none()), "released: {leases:?}");
    assert!(
        leases
            .iter()
            .all(|l| matches!(l.checkpoint, Checkpoint::Sequence { .. })),
        "checkpointed: {leases:?}"
    );

    let mut second = s.worker("second", &no_periodic);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let sent = producer.await.unwrap();
    eventually("every record processed", Duration::from_secs(30), async || {
        processed(&[&first, &second]).is_superset(&sent)
    })
    .await;
    let (ok, out) = second.terminate();
    assert!(ok, "{out}");
    let lines = read_logs(&[&first, &second]);
    assert_eq!(lines.len(), sent.len(), "zero duplicates");
    assert!(lines.iter().any(|l| l.worker == "first") && lines.iter().any(|l| l.worker == "second"));
}

/// `cafe consume --sink payment-requests`: the saga's first step as its own process sends
/// one payment request per `OrderPlaced` to the configured queue, and nothing for other
/// events.
#[tokio::test]
async fn a_payment_requests_worker_sends_one_request_per_placed_order() {
    use cafe_events::proto::menu::v1::MenuItemPublished;
    use cafe_events::proto::orders::v1::{OrderLine, OrderPlaced};
    use cafe_events::{AggregateId, DomainEvent, EventEnvelope, EventId, ItemId, OrderId};

    let s = setup(1, "payreq").await;
    let cfg = StackConfig::load().unwrap();
    let sqs = aws::sqs(&aws::sdk_config(&cfg).await, &cfg);
    let queue = format!("it-payreq-{}", uuid::Uuid::now_v7().simple());
    let url = provision::ensure_queue_with_dlq(&sqs, &queue, &format!("{queue}-dlq"), 5)
        .await
        .unwrap();
    let envelope = |aggregate_id: AggregateId, event: DomainEvent| EventEnvelope {
        event_id: EventId::new(),
        aggregate_id,
        version: 1,
        occurred_at: chrono::Utc::now(),
        correlation_id: "c".into(),
        causation_id: "c".into(),
        command_id: "c".into(),
        event,
    };
    let placed = envelope(
        AggregateId::Order(OrderId::parse("o-pr-1").unwrap()),
        DomainEvent::OrderPlaced(OrderPlaced {
            order_id: "o-pr-1".into(),
            customer_id: "cust-1".into(),
            store_id: "store-1".into(),
            lines: vec![OrderLine {
                item_id: "latte".into(),
                quantity: 2,
                unit_price_cents: 450,
            }],
            currency: "USD".into(),
            total_cents: 900,
        }),
    );
    let published = envelope(
        AggregateId::MenuItem(ItemId::parse("latte").unwrap()),
        DomainEvent::MenuItemPublished(MenuItemPublished {
            item_id: "latte".into(),
            name: "latte".into(),
            category: "coffee".into(),
            price_cents: 450,
            ..Default::default()
        }),
    );
    put_raw(
        &s.kinesis,
        &s.stream,
        &[
            ("latte".to_owned(), published.encode()),
            ("o-pr-1".to_owned(), placed.encode()),
        ],
    )
    .await;

    let log = s.dir.path().join("unused");
    let mut worker = s.worker_with(
        "payreq",
        "payment-requests",
        log,
        // The name's own variable, as its deployment hands it.
        &[("CAFE_PAYMENTS_QUEUE", &queue)],
        &[],
    );
    let mut bodies = Vec::new();
    eventually(
        "the payment request on the queue",
        Duration::from_secs(30),
        async || {
            let out = sqs
                .receive_message()
                .queue_url(&url)
                .max_number_of_messages(10)
                .visibility_timeout(60)
                .send()
                .await
                .unwrap();
            bodies.extend(out.messages().iter().filter_map(|m| m.body().map(str::to_owned)));
            !bodies.is_empty()
        },
    )
    .await;
    let (ok, _) = worker.terminate();
    assert!(ok, "the worker exits 0 on SIGTERM");
    // The menu event was put before the order on the one shard, so it was processed by
    // the time the request arrived: nothing else may have been sent.
    let rest = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    bodies.extend(rest.messages().iter().filter_map(|m| m.body().map(str::to_owned)));
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    let request: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(
        request,
        serde_json::json!({
            "order_id": "o-pr-1", "customer_id": "cust-1", "amount_cents": 900,
            "currency": "USD", "attempt": 1, "idempotency_key": "o-pr-1:payment",
        })
    );
}

/// A worker publishes its metrics to CloudWatch (moto here), under the namespace its
/// deployment hands it and its application's dimension: what the ECS services scale on
/// and the alarms watch. Only on request locally; with `--aws` every minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_publishes_its_metrics_to_cloudwatch_under_the_deployed_namespace() {
    let s = setup(1, "cw").await;
    let cfg = StackConfig::load().unwrap();
    let cw = aws::cloudwatch(&aws::sdk_config(&cfg).await, &cfg);
    let namespace = format!("it-cw-{}", uuid::Uuid::now_v7().simple());
    put_raw(&s.kinesis, &s.stream, &[("k".to_owned(), "k:1".to_owned())]).await;
    let log = s.dir.path().join("cw.jsonl");
    let sink = format!("jsonl:{}", log.display());
    let mut worker = s.worker_with(
        "cw",
        &sink,
        log,
        &[("CAFE_METRICS_NAMESPACE", &namespace)],
        &["--cloudwatch-every", "1s"],
    );
    eventually("the record processed", Duration::from_secs(30), async || {
        !read_logs(&[&worker]).is_empty()
    })
    .await;
    let records = cafe_consumers::metrics::RECORDS;
    eventually("records published", Duration::from_secs(30), async || {
        let listed = cw.list_metrics().namespace(&namespace).send().await.unwrap();
        listed.metrics().iter().any(|m| {
            m.metric_name() == Some(records)
                && m.dimensions()
                    .iter()
                    .any(|d| d.name() == Some("Application") && d.value() == Some(s.application.as_str()))
        })
    })
    .await;
    let (ok, out) = worker.terminate();
    assert!(ok, "{out}");
}

/// A menu item, an order of it and a restock, as the stream carries them: something for
/// every read model and for the payment requests.
fn sample_events(tag: &str) -> Vec<(String, Vec<u8>)> {
    use cafe_events::samples;
    let item = format!("item-{tag}");
    [
        samples::menu_item_published(&item),
        samples::order_placed(&format!("o-{tag}"), &format!("cust-{tag}"), &item),
        samples::restocked(1, 1),
    ]
    .map(|e| e.unwrap())
    .iter()
    .map(|e| (e.aggregate_id.to_string(), e.encode().to_vec()))
    .collect()
}

/// Every deployed worker (`cafe consume --sink` of each unit), run over a stream with
/// something for it and publishing its metrics, makes only AWS calls on its unit's list:
/// what its IAM role grants. The calls are recorded inside the process (a test hook).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_aws_call_a_worker_makes_is_on_its_units_list() {
    let cfg = StackConfig::load().unwrap();
    let sqs = aws::sqs(&aws::sdk_config(&cfg).await, &cfg);
    let queue = format!("it-calls-{}", uuid::Uuid::now_v7().simple());
    provision::ensure_queue_with_dlq(&sqs, &queue, &format!("{queue}-dlq"), 5)
        .await
        .unwrap();
    let mut strays = Vec::new();
    for (sink, unit) in cafe_settings::units::WORKERS {
        let s = setup(1, &format!("calls-{}", unit.name.replace('_', "-"))).await;
        let tag = &s.application[s.application.len() - 8..];
        for (key, data) in sample_events(tag) {
            cafe_localstack::testing::put_raw(&s.kinesis, &s.stream, &[(key, data)]).await;
        }
        let recorded = s.dir.path().join("calls.json");
        let log = s.dir.path().join("unused");
        let mut worker = s.worker_with(
            unit.name,
            sink,
            log,
            &[
                ("CAFE_RECORD_AWS_CALLS", recorded.to_str().unwrap()),
                ("CAFE_PAYMENTS_QUEUE", &queue),
            ],
            &["--cloudwatch-every", "1s", "--checkpoint-interval", "200ms"],
        );
        eventually(
            &format!("{sink}: the records checkpointed"),
            Duration::from_secs(60),
            async || {
                let leases = s.leases().await;
                !leases.is_empty()
                    && leases
                        .iter()
                        .all(|l| matches!(l.checkpoint, Checkpoint::Sequence { .. }))
            },
        )
        .await;
        tokio::time::sleep(Duration::from_millis(1200)).await; // one metrics send
        let (ok, out) = worker.terminate();
        assert!(ok, "{sink}: {out}");
        let made: std::collections::BTreeMap<String, u64> =
            serde_json::from_slice(&std::fs::read(&recorded).unwrap()).unwrap();
        let actions = cafe_settings::units::iam_actions(made.keys());
        strays.extend(unit.unlisted(&actions).into_iter().map(|a| format!("{sink}: {a}")));
        // It worked: read, leased, published its metrics, and did its sink's part (sent
        // the payment request; found its serving copy through the pointers).
        let part = if *sink == "payment-requests" {
            "sqs:SendMessage"
        } else {
            "dynamodb:GetItem"
        };
        for seen in [
            "kinesis:GetRecords",
            "dynamodb:UpdateItem",
            "cloudwatch:PutMetricData",
            part,
        ] {
            assert!(actions.contains(seen), "{sink}: {seen} not seen in {actions:?}");
        }
    }
    assert!(
        strays.is_empty(),
        "calls not on the units' lists (nor in their IAM roles): {strays:#?}"
    );
}
