//! `cafe lag` in the terminal and on its own HTTP server, as an SRE runs it: `--watch`
//! refreshes a table of every application, `serve` answers `/v1/lag` and the page, and
//! `--watch --from` reads a running server's data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Sandbox;

const APPS: [&str; 7] = [
    "orders",
    "active_orders",
    "documents",
    "cache",
    "inventory",
    "analytics",
    "payment-requests",
];

/// Runs `cafe ARGS` until it printed `blocks` tables (or 30 s), then SIGINTs it; returns
/// what it printed and its exit code.
fn watch(sandbox: &Sandbox, args: &[&str], blocks: usize) -> (String, Option<i32>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cafe"))
        .args(args)
        .envs(sandbox.env())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = String::new();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.matches("lag at ").count() < blocks + 1 && Instant::now() < deadline {
        match lines.next() {
            Some(Ok(l)) => {
                out.push_str(&l);
                out.push('\n');
            }
            _ => break,
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    (out, status.code())
}

#[test]
fn watch_serve_and_watch_from_show_every_application() {
    let sandbox = Sandbox::new();
    sandbox.cafe(&["stack", "up"]);

    // Sampling from here: a table per refresh, every application with a status.
    let (out, code) = watch(&sandbox, &["lag", "--watch", "--every", "200ms", "--shards"], 2);
    assert_eq!(code, Some(0), "{out}");
    // A fresh stack: no worker has made a lease yet, so nothing waits and there are no
    // shards to list.
    let statuses = ["OK", "IDLE", "WARN", "REWIND", "STALL", "STOP", "DEAD"];
    for app in APPS {
        let line = out.lines().find(|l| l.split_whitespace().next() == Some(app));
        let status = line.and_then(|l| l.split_whitespace().nth(1));
        assert!(status.is_some_and(|s| statuses.contains(&s)), "{app}: {out}");
    }

    // The dashboard on its own.
    let mut serve = Command::new(env!("CARGO_BIN_EXE_cafe"))
        .args(["lag", "serve", "--listen", "127.0.0.1:0", "--every", "200ms"])
        .envs(sandbox.env())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(serve.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    let base = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .trim_end_matches("/dashboard")
        .to_owned();
    let addr = base.trim_start_matches("http://").to_owned();
    let get = |path: &str| -> String {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        std::io::Write::write_all(&mut s, format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let json = loop {
        let resp = get("/v1/lag");
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        if v["at"].is_string() || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let names: Vec<&str> = json["applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["application"].as_str().unwrap())
        .collect();
    assert_eq!(names, APPS);
    assert!(get("/dashboard").contains("uPlot.iife.min.js"));

    // The terminal reading the server's data.
    let (out, code) = watch(&sandbox, &["lag", "--watch", "--every", "200ms", "--from", &base], 2);
    assert_eq!(code, Some(0), "{out}");
    for app in APPS {
        assert!(out.lines().any(|l| l.starts_with(app)), "{app}: {out}");
    }

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(serve.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(serve.wait().unwrap().success());
}
