//! Every `cafe scenario` in its short form, on a stack of its own: each runs its story
//! through the API, prints its figures, and passes the invariant checker; the figures
//! say the story happened (every command answered, the accounts in the read model).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::Sandbox;

/// Runs `cafe scenario <args> --json` (which must succeed) and answers its report,
/// every invariant of which must hold.
fn scenario(sandbox: &Sandbox, args: &[&str]) -> serde_json::Value {
    let args: Vec<&str> = ["scenario"]
        .into_iter()
        .chain(args.iter().copied())
        .chain(["--json"])
        .collect();
    let out = sandbox.cafe(&args);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for c in report["verdicts"]["checks"].as_array().unwrap() {
        assert_eq!(c["holds"], true, "{args:?}: {c}");
    }
    report
}

/// The value of the figure whose name starts with `name`.
fn figure<'a>(report: &'a serde_json::Value, name: &str) -> &'a str {
    report["figures"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"].as_str().unwrap().starts_with(name))
        .unwrap_or_else(|| panic!("no figure {name:?} in {report}"))["value"]
        .as_str()
        .unwrap()
}

/// "sent / accepted / 503 / other" as numbers.
fn outcome(value: &str) -> Vec<u64> {
    value.split(" / ").map(|n| n.parse().unwrap()).collect()
}

#[test]
fn every_scenario_runs_its_story_and_keeps_every_invariant() {
    let sandbox = Sandbox::new();
    sandbox.cafe(&["stack", "up"]);

    let rush = scenario(
        &sandbox,
        &[
            "morning-rush",
            "--base",
            "5",
            "--peak",
            "30",
            "--ramp",
            "2s",
            "--hold",
            "2s",
        ],
    );
    let ramp = outcome(figure(&rush, "orders (ramp)"));
    let peak = outcome(figure(&rush, "orders (peak)"));
    // 5/s rising to 30/s over 2 s is 35 orders; 30/s for 2 s is 60 (the last tick of
    // each phase may fall just before its end).
    assert!((33..=35).contains(&ramp[0]) && (58..=60).contains(&peak[0]), "{rush}");
    assert_eq!((ramp[1], peak[1]), (ramp[0], peak[0]), "every order accepted: {rush}");
    assert!(figure(&rush, "end to end p50 / p99: orders").contains("events"));

    let restock = scenario(
        &sandbox,
        &["restock-storm", "--stores", "4", "--skus", "10", "--rate", "200"],
    );
    assert_eq!(outcome(figure(&restock, "restocks sent")), [40, 40, 0, 0], "{restock}");
    assert!(figure(&restock, "caught up after the load (inventory)").ends_with(" s"));

    let loyalty = scenario(&sandbox, &["loyalty-batch", "--customers", "120", "--rate", "200"]);
    assert_eq!(
        outcome(figure(&loyalty, "earn commands")),
        [120, 120, 0, 0],
        "{loyalty}"
    );
    // 100 + (37 n mod 700) points: the accounts of 500 or more are gold.
    let gold = (1..=120u64).filter(|n| 100 + (n * 37) % 700 >= 500).count();
    assert_eq!(
        figure(&loyalty, "accounts per tier"),
        format!("gold {gold}, green {}", 120 - gold),
        "every account in the read model, in its tier"
    );

    let menu = scenario(
        &sandbox,
        &["menu-sync-storm", "--items", "60", "--rate", "100", "--readers", "3"],
    );
    assert_eq!(outcome(figure(&menu, "menu items")), [60, 60, 0, 0], "{menu}");
    assert_eq!(
        figure(&menu, "stale listings after the TTL"),
        "0 of 20 listings read once the listings' TTL (5s) had passed"
    );
    assert!(common::holds(&menu, "no stale menu after sync"), "{menu}");
    let reads: u64 = figure(&menu, "listing reads")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(reads > 0, "{menu}");

    let avalanche = scenario(
        &sandbox,
        &[
            "cold-start-avalanche",
            "--orders",
            "60",
            "--rate",
            "100",
            "--concurrency",
            "4",
        ],
    );
    assert_eq!(
        outcome(figure(&avalanche, "orders sent")),
        [60, 60, 0, 0],
        "{avalanche}"
    );
    assert_eq!(
        figure(&avalanche, "payment requests waiting"),
        "60 (60 / 0: the consumer's bound is 500)",
        "{avalanche}"
    );
    assert_eq!(figure(&avalanche, "instances started at once"), "4");
    // Every instance that got an invocation reported its init, and at least one did.
    let reported: u64 = figure(&avalanche, "init duration")
        .split("(reported by ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=4).contains(&reported), "{avalanche}");
    assert!(figure(&avalanche, "backlog taken up").ends_with("/s)"), "{avalanche}");
    assert!(
        figure(&avalanche, "backlog drained").ends_with(" started"),
        "{avalanche}"
    );
    assert!(
        common::holds(&avalanche, "the backlog drained after the cold starts"),
        "{avalanche}"
    );

    let storm = scenario(
        &sandbox,
        &["query-storm", "--rate", "20", "--history", "2s", "--clients", "4"],
    );
    let answered: Vec<u64> = figure(&storm, "queries answered")
        .split(" / ")
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(answered[0] > 0 && answered[1] == 0, "{storm}");
    assert!(figure(&storm, "replay").ends_with("finished: true"), "{storm}");
}
