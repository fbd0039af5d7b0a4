//! KPL-compatible record aggregation and deaggregation.
//!
//! Kinesis charges and throttles per record (1,000 records/s per shard) long before it
//! runs out of bytes (1 MiB/s): a restock storm of small events hits the record limit
//! first. Packing many user records into one Kinesis record, in the format the Kinesis
//! Producer Library writes and the Kinesis Client Library reads, lifts that limit and
//! stays readable by any KCL consumer:
//!
//! ```text
//! F3 89 9A C2 | protobuf AggregatedRecord | MD5 of the protobuf (16 bytes)
//! ```
//!
//! Every user record of one aggregate must land on the same shard, so callers group by
//! [`partition_hash`] against the shards' hash-key ranges before calling [`aggregate`].

use std::collections::HashMap;

use bytes::Bytes;
use md5::{Digest, Md5};
use prost::Message;

use crate::proto::kpl::{AggregatedRecord, Record};

/// The four bytes that open every aggregated record.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];
const DIGEST_LEN: usize = 16;

/// One user record: what a producer would have sent alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Its partition key.
    pub partition_key: String,
    /// Its explicit hash key, if it had one.
    pub explicit_hash_key: Option<String>,
    /// Its data.
    pub data: Bytes,
}

/// The 128-bit hash Kinesis routes a partition key by (MD5, big-endian).
pub fn partition_hash(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// Bytes one user record adds to an aggregate, a close upper bound used to cut
/// aggregates below the 1 MiB record limit without encoding twice.
pub fn encoded_len_upper_bound(r: &UserRecord) -> usize {
    // Record: two varint fields + the data field; key table entry; framing.
    r.data.len() + r.partition_key.len() + r.explicit_hash_key.as_ref().map_or(0, String::len) + 32
}

/// Packs records into one aggregated record. One record is returned as its own data:
/// an aggregate of one only adds overhead.
pub fn aggregate(records: &[UserRecord]) -> Bytes {
    if let [only] = records {
        return only.data.clone();
    }
    // Key tables with a map for lookups: a storm aggregate holds thousands of keys.
    let mut keys: Vec<String> = Vec::new();
    let mut hash_keys: Vec<String> = Vec::new();
    let mut key_index: HashMap<&str, u64> = HashMap::new();
    let mut hash_key_index: HashMap<&str, u64> = HashMap::new();
    fn index_of<'a>(table: &mut Vec<String>, index: &mut HashMap<&'a str, u64>, key: &'a str) -> u64 {
        *index.entry(key).or_insert_with(|| {
            table.push(key.to_owned());
            (table.len() - 1) as u64
        })
    }
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let partition_key_index = index_of(&mut keys, &mut key_index, &r.partition_key);
        let explicit_hash_key_index = r
            .explicit_hash_key
            .as_deref()
            .map(|h| index_of(&mut hash_keys, &mut hash_key_index, h));
        out.push(Record {
            partition_key_index,
            explicit_hash_key_index,
            data: r.data.clone(),
            tags: vec![],
        });
    }
    let message = AggregatedRecord {
        partition_key_table: keys,
        explicit_hash_key_table: hash_keys,
        records: out,
    };
    let body = message.encode_to_vec();
    let mut bytes = Vec::with_capacity(MAGIC.len() + body.len() + DIGEST_LEN);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&body);
    bytes.extend_from_slice(&Md5::digest(&body));
    Bytes::from(bytes)
}

/// Unpacks a Kinesis record into its user records. A record that is not an aggregate
/// (no magic, bad checksum, or not a valid AggregatedRecord) is one user record, as the
/// KCL treats it; `partition_key` is the Kinesis record's own key in that case.
pub fn deaggregate(partition_key: &str, data: Bytes) -> Vec<UserRecord> {
    let raw = |data: Bytes| {
        vec![UserRecord {
            partition_key: partition_key.to_owned(),
            explicit_hash_key: None,
            data,
        }]
    };
    if data.len() < MAGIC.len() + DIGEST_LEN || data[..MAGIC.len()] != MAGIC {
        return raw(data);
    }
    let body = data.slice(MAGIC.len()..data.len() - DIGEST_LEN);
    if Md5::digest(&body)[..] != data[data.len() - DIGEST_LEN..] {
        return raw(data);
    }
    let Ok(message) = AggregatedRecord::decode(body) else {
        return raw(data);
    };
    let key = |table: &[String], i: u64| usize::try_from(i).ok().and_then(|i| table.get(i)).cloned();
    let mut users = Vec::with_capacity(message.records.len());
    for r in message.records {
        // An index outside its table makes the whole record untrustworthy.
        let Some(pk) = key(&message.partition_key_table, r.partition_key_index) else {
            return raw(data);
        };
        let ehk = match r.explicit_hash_key_index {
            Some(i) => match key(&message.explicit_hash_key_table, i) {
                Some(k) => Some(k),
                None => return raw(data),
            },
            None => None,
        };
        users.push(UserRecord {
            partition_key: pk,
            explicit_hash_key: ehk,
            data: r.data,
        });
    }
    users
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rec(pk: &str, data: &'static [u8]) -> UserRecord {
        UserRecord {
            partition_key: pk.into(),
            explicit_hash_key: None,
            data: Bytes::from_static(data),
        }
    }

    /// Built by hand from aggregation-format.md (protobuf wire rules), MD5 by an
    /// independent implementation (Python's hashlib), not by this module.
    const GOLDEN: &str = concat!(
        "f3899ac2", // magic
        "0a0161",
        "0a0162", // partition_key_table: "a", "b"
        "1a05",
        "0800",
        "1a0178", // record { partition_key_index: 0, data: "x" }
        "1a06",
        "0801",
        "1a02797a",                         // record { partition_key_index: 1, data: "yz" }
        "6fe1bc1407aabc41e3e0c88f3f668baf"  // MD5 of the protobuf bytes
    );

    fn golden() -> Vec<u8> {
        hex::decode(GOLDEN).unwrap()
    }

    #[test]
    fn aggregate_matches_bytes_built_from_the_spec() {
        let bytes = aggregate(&[rec("a", b"x"), rec("b", b"yz")]);
        assert_eq!(hex::encode(&bytes), hex::encode(golden()));
    }

    #[test]
    fn deaggregate_reads_bytes_built_from_the_spec() {
        let users = deaggregate("ignored", Bytes::from(golden()));
        assert_eq!(users, vec![rec("a", b"x"), rec("b", b"yz")]);
    }

    #[test]
    fn keys_are_shared_in_the_table() {
        let bytes = aggregate(&[rec("k", b"1"), rec("k", b"2"), rec("k", b"3")]);
        let message = AggregatedRecord::decode(&bytes[4..bytes.len() - 16]).unwrap();
        assert_eq!(message.partition_key_table, vec!["k".to_owned()]);
        assert_eq!(deaggregate("k", bytes).len(), 3);
    }

    #[test]
    fn a_single_record_is_sent_raw() {
        assert_eq!(aggregate(&[rec("a", b"hello")]), Bytes::from_static(b"hello"));
    }

    #[test]
    fn a_bad_checksum_or_plain_data_is_one_raw_record() {
        let mut bytes = golden();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let users = deaggregate("pk", Bytes::from(bytes.clone()));
        assert_eq!(
            users,
            vec![UserRecord {
                partition_key: "pk".into(),
                explicit_hash_key: None,
                data: Bytes::from(bytes)
            }]
        );
        assert_eq!(deaggregate("pk", Bytes::from_static(b"plain")).len(), 1);
    }

    #[test]
    fn partition_hash_is_md5_big_endian() {
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(partition_hash(""), 0xd41d8cd98f00b204e9800998ecf8427e);
    }

    fn user() -> impl Strategy<Value = UserRecord> {
        (
            "[a-z0-9#-]{1,40}",
            proptest::option::of("[0-9]{1,38}"),
            prop::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(partition_key, explicit_hash_key, data)| UserRecord {
                partition_key,
                explicit_hash_key,
                data: Bytes::from(data),
            })
    }

    proptest! {
        #[test]
        fn aggregates_round_trip(users in prop::collection::vec(user(), 2..60)) {
            prop_assert_eq!(deaggregate("outer", aggregate(&users)), users);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..400)) {
            let mut with_magic = MAGIC.to_vec();
            with_magic.extend_from_slice(&data);
            let _ = deaggregate("k", Bytes::from(data));
            let _ = deaggregate("k", Bytes::from(with_magic));
        }
    }
}
