//! The catalogue is the only place a variable is named: every `"CAFE_…"` literal in the
//! workspace's library and binary code is one of [`vars::ALL`] or a name's `CAFE_<KEY>`,
//! and every catalogued variable is read somewhere. Tests (after `#[cfg(test)]`, and
//! `tests/` directories) may spell variables out: that is how they check the constants.

// Tests fail by panicking; unwrap is the assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cafe_settings::{Names, vars};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `.rs` file under a `src/` directory of the workspace, but this crate's.
fn sources() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![workspace()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                let skipped = name.starts_with('.')
                    || ["target", "tests", "fuzz", "node_modules", "settings"].contains(&name.as_str());
                if !skipped {
                    dirs.push(path);
                }
            } else if name.ends_with(".rs") && path.components().any(|c| c.as_os_str() == "src") {
                out.push(path);
            }
        }
    }
    out
}

/// The code of a file before its test module.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// `"CAFE_X"` literals (a quote, the name, a quote) in `text`.
fn literals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (at, _) in text.match_indices("\"CAFE_") {
        let rest = &text[at + 1..];
        let end = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        // `CAFE__STACK__…` is the local stack's figment prefix, not a variable of ours.
        if rest[end..].starts_with('"') && !rest.starts_with("CAFE__") {
            out.push(rest[..end].to_owned());
        }
    }
    out
}

#[test]
fn the_code_names_no_variable_outside_the_catalogue() {
    let known: BTreeSet<String> = vars::ALL
        .iter()
        .map(|v| (*v).to_owned())
        .chain(Names::keys().iter().map(|k| Names::var(k)))
        .collect();
    let files = sources();
    assert!(files.len() > 50, "found only {} source files", files.len());
    let mut strays = Vec::new();
    for file in &files {
        for var in literals(&code(file)) {
            if !known.contains(&var) {
                strays.push(format!("{}: {var}", file.display()));
            }
        }
    }
    assert!(
        strays.is_empty(),
        "variables read outside cafe_settings::vars: {strays:#?}"
    );
}

#[test]
fn every_catalogued_variable_is_read_somewhere() {
    let consts = std::fs::read_to_string(workspace().join("infra/settings/src/vars.rs")).unwrap();
    let all: String = sources().iter().map(|f| code(f)).collect();
    let names: Vec<&str> = consts
        .lines()
        .filter_map(|l| l.strip_prefix("pub const ")?.split(':').next())
        .filter(|n| *n != "ALL")
        .collect();
    assert_eq!(names.len(), vars::ALL.len(), "vars::ALL lists every constant");
    for name in names {
        assert!(
            all.contains(&format!("vars::{name}")),
            "vars::{name} is catalogued but nothing reads it"
        );
    }
}

#[test]
fn the_scan_finds_a_stray_literal() {
    // The scan itself: a literal is found, a prefix or a longer message is not.
    assert_eq!(literals(r#"get("CAFE_NEW_THING")"#), ["CAFE_NEW_THING"]);
    assert!(literals(r#"Env::prefixed("CAFE__STACK__")"#).is_empty());
    assert!(literals(r#"#[error("CAFE_PROJECTION={0:?} is not")]"#).is_empty());
}
