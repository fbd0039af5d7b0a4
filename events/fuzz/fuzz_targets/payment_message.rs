//! Any bytes as an SQS payment message body: parsing never panics; what parses passes
//! the function's checks (so it may be charged), and serialises back to a body that
//! parses to the same request (the saga that sends it and the function that reads it
//! agree on every value the parser lets through).
#![no_main]

use cafe_events::payment::PaymentRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // An SQS message body is text: the queue refuses anything else at send.
    let Ok(body) = std::str::from_utf8(data) else { return };
    if let Ok(request) = PaymentRequest::parse(body) {
        assert!(request.amount_cents > 0 && request.attempt > 0, "{request:?}");
        let again = serde_json::to_string(&request).expect("a request serialises");
        assert_eq!(PaymentRequest::parse(&again).as_ref(), Ok(&request), "{again}");
    }
});
