//! Writes the fuzzers' starting corpus: valid records to mutate from, so libFuzzer
//! starts inside the envelope and aggregate formats instead of finding their framing
//! byte by byte. `.ci/fuzz` runs it when a corpus is empty:
//! `cargo run -p cafe-events --example fuzz_seeds -- <corpus dir>` writes
//! `<dir>/envelope/*`, `<dir>/kpl/*` and `<dir>/payment_message/*`.

use std::path::PathBuf;

use cafe_events::kpl::{self, UserRecord};
use cafe_events::payment::PaymentRequest;
use cafe_events::samples;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::args().nth(1).ok_or("usage: fuzz_seeds <corpus dir>")?);
    let envelopes = [
        samples::restocked(1, 1)?,
        samples::restocked(42, 7)?,
        samples::restocked(99_999, 99_999)?,
    ];
    let records: Vec<_> = envelopes.iter().map(|e| e.encode()).collect();
    std::fs::create_dir_all(dir.join("envelope"))?;
    std::fs::create_dir_all(dir.join("kpl"))?;
    for (i, r) in records.iter().enumerate() {
        std::fs::write(dir.join("envelope").join(format!("restocked-{i}")), r)?;
    }
    let users: Vec<UserRecord> = envelopes
        .iter()
        .zip(&records)
        .enumerate()
        .map(|(i, (e, r))| UserRecord {
            partition_key: e.partition_key(),
            explicit_hash_key: (i == 1).then(|| kpl::partition_hash("other").to_string()),
            data: r.clone(),
        })
        .collect();
    std::fs::write(dir.join("kpl").join("aggregate-3"), kpl::aggregate(&users))?;
    std::fs::write(dir.join("kpl").join("aggregate-1"), kpl::aggregate(&users[..1]))?;
    std::fs::write(dir.join("kpl").join("plain"), &records[0])?;
    // Payment requests as the saga's consumer writes them: a first attempt and a retry.
    std::fs::create_dir_all(dir.join("payment_message"))?;
    for attempt in [1, 3] {
        let request = PaymentRequest {
            order_id: "o-run-42".into(),
            customer_id: "cust-42".into(),
            amount_cents: 890,
            currency: "USD".into(),
            attempt,
            idempotency_key: "o-run-42:payment".into(),
        };
        std::fs::write(
            dir.join("payment_message").join(format!("attempt-{attempt}")),
            serde_json::to_vec(&request)?,
        )?;
    }
    println!("seeds written under {}", dir.display());
    Ok(())
}
