//! Any bytes as a Kinesis record, and the same bytes as the body of a correctly framed
//! aggregate (magic and MD5 added, which random bytes would almost never carry, so the
//! protobuf decoding and the table lookups behind the checksum get fuzzed too):
//! deaggregation never panics, and what it unpacks from a valid aggregate aggregates
//! back to the same user records (an invalid one comes back whole, as the KCL treats it;
//! a single record is put as its own data).
#![no_main]

use bytes::Bytes;
use cafe_events::kpl;
use libfuzzer_sys::fuzz_target;
use md5::{Digest, Md5};

fn check(data: Bytes) {
    let users = kpl::deaggregate("pk", data.clone());
    let whole = users.len() == 1 && users[0].data == data && users[0].partition_key == "pk";
    match users.as_slice() {
        _ if whole => {}
        [] => {}
        // One record is put as its own data (its key travels with the put, not in it).
        [only] => assert_eq!(kpl::aggregate(&users), only.data),
        _ => {
            let again = kpl::deaggregate("other", kpl::aggregate(&users));
            assert_eq!(again, users);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(Bytes::copy_from_slice(data));
    let mut framed = kpl::MAGIC.to_vec();
    framed.extend_from_slice(data);
    framed.extend_from_slice(&Md5::digest(data));
    check(Bytes::from(framed));
});
