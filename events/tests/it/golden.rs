//! Golden wire bytes: a renumbered field, a changed type or a renamed event fails here.
//!
//! To accept an intentional change (a *new* event type, never an edit of an old one):
//! `CAFE_BLESS=1 cargo test -p cafe-events --test it golden`, then review the diff.

use std::path::PathBuf;

use cafe_events::{EventEnvelope, KNOWN_EVENT_TYPES};

use crate::samples;

/// Read at run time (cargo and nextest both set it): clones that share one target
/// directory share test binaries, so a path baked in at compile time can name another
/// clone's files.
fn golden_path(stem: &str) -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run under cargo test or nextest"))
        .join("tests/golden")
        .join(format!("{stem}.hex"))
}

#[test]
fn every_known_event_type_has_a_sample() {
    let sampled: Vec<String> = samples::all()
        .iter()
        .map(|(_, e)| e.event.event_type().to_owned())
        .collect();
    let known: Vec<String> = KNOWN_EVENT_TYPES.iter().map(|(n, ..)| (*n).to_owned()).collect();
    assert_eq!(sampled, known);
}

#[test]
fn wire_bytes_match_the_golden_files() {
    let bless = std::env::var_os("CAFE_BLESS").is_some();
    let mut mismatches = Vec::new();
    for (stem, envelope) in samples::all() {
        let path = golden_path(stem);
        let actual = hex::encode(envelope.encode());
        if bless {
            std::fs::write(&path, format!("{actual}\n")).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with CAFE_BLESS=1 to create it)", path.display()));
        if expected.trim() != actual {
            mismatches.push(stem);
        }
    }
    assert!(mismatches.is_empty(), "wire bytes changed for {mismatches:?}");
}

#[test]
fn golden_files_decode_to_the_samples() {
    for (stem, envelope) in samples::all() {
        let text = std::fs::read_to_string(golden_path(stem)).unwrap();
        let bytes = hex::decode(text.trim()).unwrap();
        assert_eq!(EventEnvelope::decode(&bytes).unwrap(), envelope, "{stem}");
    }
}
