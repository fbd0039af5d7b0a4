//! `cafe chaos all` in its short form on a stack of its own: every experiment injects
//! its fault under load, recovers, and passes the invariant checker; each fault is
//! seen to have happened (the poison parked, the services' outages noticed, the cache
//! rebuilt), so a pass is not a fault that never bit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Sandbox;

/// The number that follows `marker` in an outcome's fault line.
fn count_after(fault: &str, marker: &str) -> u64 {
    fault
        .split(marker)
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count after {marker:?} in {fault:?}"))
}

#[test]
fn every_experiment_recovers_and_keeps_every_invariant() {
    let sandbox = Sandbox::new();
    sandbox.cafe(&["stack", "up"]);
    let out = sandbox.cafe(&[
        "chaos",
        "all",
        "--rate",
        "20",
        "--warm-up",
        "3s",
        "--outage",
        "2s",
        "--after",
        "3s",
        "--records",
        "5",
        "--json",
    ]);
    let outcomes: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = outcomes.iter().map(|o| o["experiment"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "poison",
            "duplicates",
            "redis-flush",
            "postgres-restart",
            "memorydb-restart",
            "docdb-restart",
            "kinesis-throttle",
            "dynamodb-throttle",
            "consumer-kill",
            "api-kill",
            "worker-restart",
            "sqs-redelivery"
        ]
    );
    let of = |name: &str| outcomes.iter().find(|o| o["experiment"] == name).unwrap();
    for o in &outcomes {
        assert!(!o["recovered_after"].is_null(), "{o}");
        assert!(o["orders_accepted"].as_u64().unwrap() > 0, "{o}");
        for c in o["verdicts"]["checks"].as_array().unwrap() {
            assert_eq!(c["holds"], true, "{c}");
        }
    }
    // The poison was parked by every consumer, exactly the five injected.
    let parked: Vec<&str> = of("poison")["verdicts"]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "parked = injected poison")
        .map(|c| c["detail"].as_str().unwrap())
        .collect();
    assert_eq!(parked.len(), 7, "{parked:?}");
    assert!(
        parked.iter().all(|d| d.ends_with(": 5 parked, as injected")),
        "{parked:?}"
    );
    assert!(!of("poison")["detected_after"].is_null());
    // The flushed cache was found by verification, and the outage by the projectors.
    assert!(!of("redis-flush")["detected_after"].is_null(), "{}", of("redis-flush"));
    assert!(
        of("redis-flush")["fault"]
            .as_str()
            .unwrap()
            .contains("rebuilt and swapped in")
    );
    assert!(
        !of("postgres-restart")["detected_after"].is_null(),
        "{}",
        of("postgres-restart")
    );
    // The throttles refused requests of the pipeline's own clients (a throttle that
    // never bit would pass without proving anything).
    for name in ["kinesis-throttle", "dynamodb-throttle"] {
        let fault = of(name)["fault"].as_str().unwrap().to_owned();
        assert!(count_after(&fault, ": ") > 0, "{fault}");
    }
    // The API died with events appended and not yet published, a relay published
    // them (the outbox invariant), and every order it had accepted is stored.
    let api = of("api-kill");
    let fault = api["fault"].as_str().unwrap();
    assert!(
        count_after(fault, " under load (") > 0,
        "the kill met no event between append and publish: {fault}"
    );
    assert!(common::holds(api, "every accepted order stored"), "{api}");
    // Payment messages were delivered again while their first delivery was held, and
    // the gateway's books still hold one decision per payment.
    let redelivery = of("sqs-redelivery");
    let fault = redelivery["fault"].as_str().unwrap();
    assert!(
        count_after(fault, " held, ") > 0,
        "nothing was delivered again: {fault}"
    );
    assert!(!redelivery["detected_after"].is_null(), "{redelivery}");
    let books = common::check(redelivery, "gateway charged each once").unwrap();
    assert!(
        books["holds"] == true && !books["detail"].as_str().unwrap().starts_with("0 decisions"),
        "{redelivery}"
    );
    // Every restarted worker drained and exited cleanly, and its replacement took over.
    let restart = of("worker-restart");
    assert_eq!(restart["rounds"].as_array().unwrap().len(), 3, "{restart}");
    for r in restart["rounds"].as_array().unwrap() {
        assert!(!r["recovered_after"].is_null(), "{r}");
    }
    assert!(common::holds(restart, "SIGTERM drains cleanly"), "{restart}");
}
