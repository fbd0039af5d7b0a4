//! What the binary's integration tests share: a sandboxed stack of its own (private
//! state dir, free ports) that the `cafe` binary runs against as a user would.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::process::{Command, Output};

use cafe_localstack::StackConfig;
use cafe_localstack::supervisor::start_time_of;

pub struct Sandbox {
    pub dir: tempfile::TempDir,
    pub ports: BTreeMap<&'static str, u16>,
}

impl Sandbox {
    pub fn new() -> Self {
        // Bind port 0 for each service at once so the ports differ, then release them.
        let names = [
            "KINESIS", "DYNAMODB", "SQS", "MOTO", "POSTGRES", "REDIS", "MONGO", "LAMBDA",
        ];
        let mut listeners: Vec<_> = (0..names.len())
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let mut ports: BTreeMap<&'static str, u16> = names
            .into_iter()
            .zip(listeners.iter().map(|l| l.local_addr().unwrap().port()))
            .collect();
        // A cluster node's bus listens 10000 above its port: both must be free.
        for name in ["MEMORYDB", "MEMORYDB_2"] {
            // From a place that differs per test process, so sandboxes rarely race.
            let max = cafe_localstack::config::MAX_CLUSTER_PORT;
            let start = 20000 + (std::process::id() % u32::from(max - 20000)) as u16;
            let (node, bus) = (start..=max)
                .chain(20000..start)
                .find_map(|p| {
                    let node = std::net::TcpListener::bind(("127.0.0.1", p)).ok()?;
                    let bus = std::net::TcpListener::bind(("127.0.0.1", p + 10000)).ok()?;
                    Some((node, bus))
                })
                .expect("a free port with a free bus port");
            ports.insert(name, node.local_addr().unwrap().port());
            listeners.extend([node, bus]);
        }
        // Under /tmp so that PostgreSQL's own user can reach the cluster when we are root.
        let dir = tempfile::Builder::new()
            .prefix("cafe-stack-it")
            .tempdir_in("/tmp")
            .unwrap();
        Sandbox { dir, ports }
    }

    pub fn env(&self) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .ports
            .iter()
            .map(|(k, v)| (format!("CAFE__STACK__PORTS__{k}"), v.to_string()))
            .collect();
        env.push(("CAFE__STACK__STATE_DIR".into(), self.dir.path().display().to_string()));
        env.push(("CAFE__STACK__STREAM_SHARDS".into(), "1".into()));
        // Durable streams (off by default for speed) so this test can show that every
        // stand-in's data survives down/up.
        env.push(("CAFE__STACK__KINESIS_DURABLE".into(), "true".into()));
        env
    }

    pub fn cafe(&self, args: &[&str]) -> Output {
        let out = Command::new(env!("CARGO_BIN_EXE_cafe"))
            .args(args)
            .envs(self.env())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cafe {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    pub fn config(&self) -> StackConfig {
        // The same layering the binary uses, with this sandbox's overrides.
        let mut cfg = StackConfig::load().unwrap();
        cfg.state_dir = self.dir.path().to_owned();
        cfg.stream_shards = 1;
        cfg.kinesis_durable = true;
        let p = |k: &str| self.ports[k];
        cfg.ports = cafe_localstack::Ports {
            kinesis: p("KINESIS"),
            dynamodb: p("DYNAMODB"),
            sqs: p("SQS"),
            moto: p("MOTO"),
            postgres: p("POSTGRES"),
            redis: p("REDIS"),
            memorydb: p("MEMORYDB"),
            memorydb_2: p("MEMORYDB_2"),
            mongo: p("MONGO"),
            lambda: p("LAMBDA"),
        };
        cfg
    }

    pub fn pids(&self) -> BTreeMap<String, i32> {
        std::fs::read_dir(self.dir.path().join("run"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let pid = std::fs::read_to_string(e.path())
                    .unwrap()
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                (e.file_name().to_string_lossy().into_owned(), pid)
            })
            .collect()
    }

    /// Every live process that carries this sandbox's state dir in its environment:
    /// the services and anything they forked.
    pub fn our_processes(&self) -> Vec<i32> {
        let marker = format!("CAFE__STACK__STATE_DIR={}", self.dir.path().display());
        processes_with_env(&marker)
    }
}

pub fn processes_with_env(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| start_time_of(pid).is_some())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == marker.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // Never leave servers behind, even when an assertion failed midway.
        let _ = Command::new(env!("CARGO_BIN_EXE_cafe"))
            .args(["stack", "down"])
            .envs(self.env())
            .output();
    }
}

/// The check called `name` in a command's JSON report (`verdicts.checks`), if any.
pub fn check<'a>(report: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    report["verdicts"]["checks"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

/// Whether the report has the check `name` and it holds.
pub fn holds(report: &serde_json::Value, name: &str) -> bool {
    check(report, name).is_some_and(|c| c["holds"] == true)
}
