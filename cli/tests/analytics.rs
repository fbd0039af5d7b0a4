//! `cafe analytics` argument handling (the reports themselves are tested in
//! `cafe-projections` against the local warehouse).

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
