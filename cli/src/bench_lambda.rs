//! `cafe bench cold-start`: how long the payment function takes from process start to
//! its first answer, under the Lambda emulator, beside a warm invocation.
//!
//! In AWS a cold start is the sandbox's init phase: the runtime starts, the function's
//! `main` reads its configuration and builds its clients, then asks the Runtime API for
//! the first event. Here each run starts a fresh process and immediately invokes it with
//! an empty SQS batch (the emulator holds the invocation until the process asks for it):
//! spawn → answer is the cold invocation, a second invocation right after is the warm
//! one, and their difference is the init cost. The handler does nothing for an empty
//! batch, so neither figure includes any store call.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_lambda_events::event::sqs::SqsEvent;
use cafe_localstack::StackConfig;
use cafe_localstack::lambda::{EmulatorInvoker, Invoke, spawn_function};

use crate::payments::{FUNCTION, INVOKE_TIMEOUT, function_env};

/// Where `cargo lambda build --release` puts the deployable binary.
fn default_binary(cfg: &StackConfig) -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .or_else(|| cfg.workspace_manifest.parent().map(|root| root.join("target")))?;
    let bootstrap = target.join("lambda").join(FUNCTION).join("bootstrap");
    bootstrap.is_file().then_some(bootstrap)
}

/// Peak resident memory of a process, from `/proc` (Linux).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

/// Runs the measurement and prints it.
pub async fn cold_start(cfg: &StackConfig, binary: Option<PathBuf>, runs: u32) -> Result<()> {
    let binary = match binary.or_else(|| default_binary(cfg)) {
        Some(b) => b,
        None => bail!(
            "no function binary: build one with `cargo lambda build --release -p {FUNCTION}` \
             (see README) or pass --binary"
        ),
    };
    let size = std::fs::metadata(&binary)
        .with_context(|| format!("reading {}", binary.display()))?
        .len();
    let mut env = function_env(cfg);
    env.push(("RUST_LOG".to_owned(), "warn".to_owned()));
    let invoker = EmulatorInvoker::new(cfg, FUNCTION, INVOKE_TIMEOUT);
    let empty = SqsEvent::default();
    // One throw-away run: the first exec of a binary also pays for reading it from disk.
    let (mut cold, mut warm, mut rss) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..=runs {
        let started = Instant::now();
        let mut child = spawn_function(cfg, Path::new(&binary), FUNCTION, &env)
            .with_context(|| format!("starting {}", binary.display()))?;
        invoker.invoke(&empty).await.context("cold invocation")?;
        let first = started.elapsed();
        let again = Instant::now();
        invoker.invoke(&empty).await.context("warm invocation")?;
        let second = again.elapsed();
        let peak = child.id().and_then(peak_rss_kib);
        child.kill().await.context("stopping the function")?;
        if run > 0 {
            cold.push(first);
            warm.push(second);
            rss.extend(peak);
        }
    }
    let (c, w) = (median(cold.clone()), median(warm));
    println!("payment function cold start, {runs} runs under the Lambda emulator");
    println!(
        "  binary               {} ({:.1} MiB)",
        binary.display(),
        size as f64 / 1_048_576.0
    );
    println!(
        "  cold invocation      median {:>7.1} ms  (min {:.1}, max {:.1})",
        millis(c),
        millis(cold.iter().min().copied().unwrap_or_default()),
        millis(cold.iter().max().copied().unwrap_or_default())
    );
    println!("  warm invocation      median {:>7.1} ms", millis(w));
    println!("  init (cold - warm)   median {:>7.1} ms", millis(c.saturating_sub(w)));
    if let Some(max) = rss.iter().max() {
        println!("  peak RSS             {:>7.1} MiB", *max as f64 / 1024.0);
    }
    Ok(())
}
