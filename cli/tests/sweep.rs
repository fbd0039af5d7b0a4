//! A black-box sweep of the running API with schemathesis (PyPI, in the stack's venv)
//! against its own `/openapi.json`: for a customer, a member of staff and headquarters,
//! every documented operation with generated valid and invalid inputs; no 5xx, and
//! every answer (status, content type, headers, body) as documented. Bounded here
//! (examples per operation and a time budget); the README gives the unbounded command.
//!
//! The queries run with two checks fewer, for two documented answers to schema-valid
//! requests that an OpenAPI document cannot express: `?min_version=` that the read
//! model has not reached is a 503 with Retry-After (read-your-writes: a generated
//! version is usually one no aggregate reaches), and on a list `min_version` needs
//! `wait_for`, a dependency between parameters, so alone it is a 400. Any other 5xx
//! still fails them: 503 is the only server error they document.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use cafe_app::{Application, Settings, load};
use cafe_producers::auth::{Caller, Role};
use common::Sandbox;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_undocumented_answer() {
    let sandbox = Sandbox::new();
    sandbox.cafe(&["stack", "up"]);
    let mut settings = Settings::local(sandbox.config());
    settings.saga = false;
    // The sweep is one caller sending as fast as it can; the rate limit has a test
    // of its own, and 429s here would only hide the operations behind them.
    settings.limits = None;
    // A query's `min_version` wait is what makes its 503; a short one keeps the sweep
    // about the API rather than about waiting.
    settings.read_wait = std::time::Duration::from_millis(100);
    let schemathesis = settings.stack.venv.join("bin").join("schemathesis");
    assert!(
        schemathesis.exists(),
        "{} is missing: `infra/local/dev.sh test` installs it (infra/local/requirements.txt)",
        schemathesis.display()
    );
    let running = Application::build(settings).await.unwrap().start().await.unwrap();
    let base = format!("http://{}", running.addr());
    let http = load::client(running.config()).unwrap();
    load::seed_menu(&http, &base).await.unwrap();
    // Every route the server has is in its document, and nothing else.
    let (status, doc) = load::get(&http, &base, "/openapi.json").await.unwrap();
    assert_eq!(status, 200);
    let mut paths: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    paths.sort_unstable();
    let mut routes = vec![
        "/healthz",
        "/openapi.json",
        "/metrics",
        "/dashboard",
        "/dashboard/assets/uPlot.iife.min.js",
        "/dashboard/assets/uPlot.min.css",
        "/v1/lag",
        "/v1/orders",
        "/v1/orders/{id}",
        "/v1/orders/{id}/status",
        "/v1/orders/{id}/cancel",
        "/v1/customers/{id}/orders",
        "/v1/stores/{store}/inventory",
        "/v1/stores/{store}/inventory/{sku}/restock",
        "/v1/stores/{store}/inventory/{sku}/adjust",
        "/v1/loyalty/{customer}",
        "/v1/loyalty/{customer}/earn",
        "/v1/loyalty/{customer}/redeem",
        "/v1/menu/items",
    ];
    routes.sort_unstable();
    assert_eq!(paths, routes);
    let person = |subject: &str, role: Role| Caller {
        subject: subject.into(),
        role,
    };
    let callers = [
        person("cust-1", Role::Customer),
        person(
            "barista-1",
            Role::Staff {
                store: "store-00001".into(),
            },
        ),
        person("hq-1", Role::Headquarters),
    ];
    let runs: [(&str, &[&str]); 2] = [
        ("commands", &["--exclude-tag", "queries"]),
        (
            "queries",
            &[
                "--include-tag",
                "queries",
                "--exclude-checks",
                "not_a_server_error,positive_data_acceptance",
            ],
        ),
    ];
    for caller in callers {
        let authorization = format!("Authorization: {}", http.bearer(&caller).unwrap());
        for (what, filter) in runs {
            let out = tokio::task::spawn_blocking({
                let (schemathesis, base, authorization) = (schemathesis.clone(), base.clone(), authorization.clone());
                move || {
                    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/local/schemathesis.toml");
                    Command::new(schemathesis)
                        .args(["--config-file", config, "run", &format!("{base}/openapi.json")])
                        .args(["--header", &authorization])
                        .args(["--checks", "all"])
                        .args(filter)
                        .args(["--max-examples", "10", "--seed", "7", "--max-time", "30"])
                        .args(["--workers", "1", "--no-color"])
                        .output()
                        .unwrap()
                }
            })
            .await
            .unwrap();
            assert!(
                out.status.success(),
                "schemathesis on the {what} as {caller:?} failed:\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    running.stop(std::time::Duration::from_secs(20)).await.unwrap();
}
