//! The lag dashboard in a real browser: headless Chromium (Debian's, installed by
//! `infra/local/dev.sh`) driven through chromedriver, against the application started
//! in-process under a load. The charts' data must move with time, a projector whose
//! store stops answering must turn STALL (and red) on the page, the page must work
//! from the keyboard and fit 1280×800. A screenshot is kept as an artifact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cafe_app::{Application, Settings, load};
use cafe_consumers::monitor::MonitorConfig;
use cafe_consumers::status::Rules;
use common::Sandbox;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian's chromium-driver; infra/local/dev.sh installs it)");
        Driver { child, port }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1280,800",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let url = format!("http://127.0.0.1:{}", driver.port);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot start Chromium through chromedriver: {e}"),
        }
    }
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.unwrap()
}

/// Polls `script` until it returns something truthy; returns that.
async fn until(c: &Client, what: &str, limit: Duration, script: &str) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let v = js(c, script).await;
        let truthy = !matches!(v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
        if truthy {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {limit:?}; last {v}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The background colour of the status pill in the row `row` selects.
async fn pill_colour(c: &Client, row: &str) -> String {
    c.find(Locator::Css(&format!("{row} .pill")))
        .await
        .unwrap()
        .css_value("background-color")
        .await
        .unwrap()
}

const CHART_STATE: &str = r#"
  const f = document.getElementById("lag-chart");
  return { points: Number(f.dataset.points), last: Number(f.dataset.lastT || 0), series: Number(f.dataset.series || 0),
           canvas: !!f.querySelector("canvas") };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_in_chromium_moves_with_the_load_and_shows_a_stalled_projector() {
    let sandbox = Sandbox::new();
    sandbox.cafe(&["stack", "up"]);
    let mut settings = Settings::local(sandbox.config());
    settings.saga = false;
    // A stall is judged after 4 s here (30 s by default), so the test sees it soon.
    settings.monitor = Some(MonitorConfig {
        rules: Rules {
            stall_after: Duration::from_secs(4),
            dead_after: Duration::from_secs(10),
        },
        ..MonitorConfig::default()
    });
    let running = Application::build(settings).await.unwrap().start().await.unwrap();
    let base = format!("http://{}", running.addr());
    let http = load::client(running.config()).unwrap();
    load::seed_menu(&http, &base).await.unwrap();
    let stop_load = tokio_util::sync::CancellationToken::new();
    let load_task = {
        let (http, base, stop) = (http.clone(), base.clone(), stop_load.clone());
        tokio::spawn(async move { load::orders(&http, &base, 20, 64, stop.cancelled_owned()).await })
    };

    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    c.set_window_size(1280, 800).await.unwrap();
    c.goto(&format!("{base}/dashboard")).await.unwrap();

    // The charts are drawn by the embedded library and their data moves on.
    let first = until(
        &c,
        "the lag chart drawn, seven series, three points",
        Duration::from_secs(20),
        &format!(
            "const s = (() => {{ {CHART_STATE} }})(); return s.canvas && s.points >= 3 && s.series == 7 ? s : null;"
        ),
    )
    .await;
    let later = until(
        &c,
        "the lag chart's data to move on",
        Duration::from_secs(20),
        &format!(
            "const s = (() => {{ {CHART_STATE} }})(); return s.last > {} && s.points > {} ? s : null;",
            first["last"], first["points"]
        ),
    )
    .await;
    assert!(later["last"].as_f64() > first["last"].as_f64(), "{first} -> {later}");

    // Every application is listed with a status; the documents projector is healthy.
    let rows = c
        .find_all(Locator::Css("#applications tbody tr[data-application]"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 7);
    let documents = "#applications tr[data-application=\"documents\"]";
    let status = js(
        &c,
        &format!("return document.querySelector('{documents}').dataset.status;"),
    )
    .await;
    assert!(
        matches!(status.as_str(), Some("OK" | "IDLE" | "WARN")),
        "documents starts {status}"
    );
    let healthy_colour = pill_colour(&c, documents).await;

    // The DocumentDB stand-in stops answering (SIGSTOP): the documents projector's
    // batch cannot finish, its checkpoint stands still while orders keep arriving and
    // its owner keeps renewing.
    let mongo = sandbox.pids()["mongo.pid"];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(mongo), nix::sys::signal::Signal::SIGSTOP).unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    let stalled = loop {
        let v = js(
            &c,
            &format!("const r = document.querySelector('{documents}'); return r ? r.dataset.status : null;"),
        )
        .await;
        if v == "STALL" || Instant::now() > deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if stalled != "STALL" {
        let (_, page) = load::get(&http, &base, "/v1/lag").await.unwrap();
        let app = page["applications"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["application"] == "documents")
            .cloned();
        panic!("documents shows {stalled}, not STALL: {app:#?}");
    }
    assert_eq!(stalled, "STALL");
    let stalled_colour = pill_colour(&c, documents).await;
    assert_ne!(stalled_colour, healthy_colour);
    assert!(
        stalled_colour.contains("207, 34, 46"),
        "the error colour: {stalled_colour}"
    );
    let overall = js(&c, "return document.getElementById('overall').dataset.status;").await;
    assert_eq!(overall, "STALL", "the page's overall status is its worst application's");

    // The artifact: what an SRE saw.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.state/artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"));
    std::fs::write(dir.join("dashboard-stalled.png"), &png).unwrap();

    // Usable from the keyboard: Tab reaches a shards button, Enter opens its shards and
    // focus stays on it.
    let body = c.find(Locator::Css("body")).await.unwrap();
    let mut reached = Value::Null;
    for _ in 0..40 {
        body.send_keys("\u{E004}").await.unwrap(); // Tab
        let label = js(&c, "const a = document.activeElement; return a && a.getAttribute('aria-expanded') !== null ? a.getAttribute('aria-label') : null;").await;
        if !label.is_null() {
            reached = label;
            break;
        }
    }
    assert!(
        reached.as_str().is_some_and(|l| l.starts_with("Show the shards of")),
        "{reached}"
    );
    c.active_element().await.unwrap().send_keys("\u{E007}").await.unwrap(); // Enter
    let opened = until(
        &c,
        "shard rows after Enter",
        Duration::from_secs(5),
        "const a = document.activeElement; return a && a.getAttribute('aria-expanded') === 'true' ? document.querySelectorAll('tr.shard').length : 0;",
    )
    .await;
    assert!(opened.as_u64().unwrap() >= 1, "{opened}");
    // A visible focus ring.
    let outline = js(&c, "return getComputedStyle(document.activeElement).outlineStyle;").await;
    assert_eq!(outline, "solid");

    // Readable at 1280×800: no sideways scrolling, the table and the first chart in view.
    let fits = js(
        &c,
        "return { page: document.documentElement.scrollWidth, view: window.innerWidth, table: document.getElementById('applications').getBoundingClientRect().right };",
    )
    .await;
    assert!(fits["page"].as_f64() <= fits["view"].as_f64(), "{fits}");
    assert!(fits["table"].as_f64().unwrap() <= 1280.0, "{fits}");

    nix::sys::signal::kill(nix::unistd::Pid::from_raw(mongo), nix::sys::signal::Signal::SIGCONT).unwrap();
    c.close().await.unwrap();
    stop_load.cancel();
    let report = load_task.await.unwrap();
    assert!(!report.accepted.is_empty());
    let _ = running.stop(Duration::from_secs(20)).await.unwrap();
}
