//! Any bytes as a Kinesis record's data: decoding never panics, and what decodes
//! encodes back to an envelope that decodes to the same thing (a projector that parks
//! nothing it should not, and a relay that republishes exactly what it read).
#![no_main]

use cafe_events::EventEnvelope;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cafe_events::envelope::occurred_at_of(data);
    if let Ok(envelope) = EventEnvelope::decode(data) {
        let again = EventEnvelope::decode(&envelope.encode());
        assert_eq!(again.as_ref().ok(), Some(&envelope), "{again:?}");
        let _ = envelope.partition_key();
    }
});
