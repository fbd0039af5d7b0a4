//! Usage errors that need no stack: `cafe analytics` and `cafe cost` arguments (the reports
//! themselves are tested in `cafe-projections` against the local warehouse), and a
//! bad configuration, refused by every command before it starts anything.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

#[test]
fn a_bad_from_is_a_usage_error_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_cafe"))
        .args(["analytics", "sales-by-store-hour", "--from", "yesterday"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--from") && stderr.contains("RFC 3339"), "{stderr}");
}

#[test]
fn a_bad_configuration_is_a_usage_error_before_anything_starts() {
    for (key, value, named) in [
        ("CAFE__FAULTS__KINESIS_THROTTLE", "1.5", "faults.kinesis_throttle"),
        ("CAFE__FAULTS__DYNAMODB_THROTLE", "0.2", "dynamodb_throtle"),
        ("CAFE__STACK__PORTZ__KINESIS", "1", "portz"),
        // A name's own variable, as a deployment sets it.
        (
            "CAFE_PAYMENTS_MAX_RECEIVE_COUNT",
            "five",
            "CAFE_PAYMENTS_MAX_RECEIVE_COUNT",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_cafe"))
            .args(["consume", "--application", "never-started"])
            .env(key, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {stderr}");
        assert!(
            stderr.contains("configuration") && stderr.contains(named),
            "{key}: {stderr}"
        );
    }
}

#[test]
fn the_cost_model_prints_every_service_and_refuses_a_nonsense_workload() {
    let out = Command::new(env!("CARGO_BIN_EXE_cafe"))
        .args(["cost"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    for service in [
        "Kinesis",
        "DynamoDB",
        "Lambda",
        "API Gateway",
        "Aurora",
        "Redshift",
        "**Total**",
    ] {
        assert!(table.contains(service), "{service}: {table}");
    }
    for bad in [["--peak", "0"], ["--peak", "nan"], ["--orders-per-day", "many"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_cafe"))
            .arg("cost")
            .args(bad)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {stderr}");
        assert!(stderr.contains(bad[0]), "{bad:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{bad:?}");
    }
}
