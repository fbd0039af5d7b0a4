//! Validated identifier newtypes.
//!
//! Ids arrive from HTTP paths, JSON bodies and decoded events; parsing them once at the
//! edge means the rest of the code never sees an empty id, a 10 KB id, or one that
//! contains the `#` we use to join a store and a SKU into one partition key.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest id we accept. DynamoDB keys and Kinesis partition keys (256 chars) both fit.
pub const MAX_ID_LEN: usize = 64;

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is empty.
    #[error("{kind} must not be empty")]
    Empty {
        /// Which id kind was being parsed.
        kind: &'static str,
    },
    /// The id is longer than [`MAX_ID_LEN`].
    #[error("{kind} is {len} characters long; the limit is {MAX_ID_LEN}")]
    TooLong {
        /// Which id kind was being parsed.
        kind: &'static str,
        /// The length found.
        len: usize,
    },
    /// The id does not start with a letter or a digit (`.`, `..`, `-x`): a client
    /// could not put it in a URL path, where `.` and `..` are dot-segments that
    /// clients and proxies resolve away.
    #[error("{kind} must start with a letter or a digit")]
    NotAddressable {
        /// Which id kind was being parsed.
        kind: &'static str,
    },
    /// The id has a character outside `[A-Za-z0-9_.:-]`.
    #[error("{kind} may only contain letters, digits, '-', '_', '.' and ':' (found {found:?})")]
    BadChar {
        /// Which id kind was being parsed.
        kind: &'static str,
        /// The first offending character.
        found: char,
    },
}

fn check(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong { kind, len: s.len() });
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        Some(found) => Err(IdError::BadChar { kind, found }),
        None => Ok(()),
    }
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses and validates an id.
            pub fn parse(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                check($kind, &s)?;
                Ok(Self(s))
            }

            /// [`Self::parse`], and the id must start with a letter or a digit: what
            /// the API accepts for a new id, so every id it creates can be addressed
            /// in a URL path. Ids already in events are read with `parse`.
            pub fn parse_addressable(s: impl Into<String>) -> Result<Self, IdError> {
                let id = Self::parse(s)?;
                if id.0.starts_with(|c: char| c.is_ascii_alphanumeric()) {
                    Ok(id)
                } else {
                    Err(IdError::NotAddressable { kind: $kind })
                }
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(
    /// An order, chosen by the client (so a retried POST names the same order).
    OrderId,
    "order_id"
);
id_type!(
    /// A loyalty customer.
    CustomerId,
    "customer_id"
);
id_type!(
    /// One of the ~30K stores.
    StoreId,
    "store_id"
);
id_type!(
    /// A stock-keeping unit, unique within a store's inventory.
    Sku,
    "sku"
);
id_type!(
    /// A menu item.
    ItemId,
    "item_id"
);

/// An event's id: a UUIDv7, so ids sort by creation time and index with locality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EventId(uuid::Uuid);

impl EventId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(uuid::Uuid::now_v7())
    }

    /// Wraps a known UUID (tests, fixtures, decoding).
    pub fn from_uuid(uuid: uuid::Uuid) -> Self {
        Self(uuid)
    }

    /// The underlying UUID.
    pub fn as_uuid(&self) -> uuid::Uuid {
        self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for EventId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_ids() {
        for ok in ["o-1", "store_0042", "cust:9", "sku.latte.12oz", "A"] {
            assert!(OrderId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_empty_long_and_odd_ids() {
        assert_eq!(StoreId::parse(""), Err(IdError::Empty { kind: "store_id" }));
        assert_eq!(
            Sku::parse("x".repeat(65)),
            Err(IdError::TooLong { kind: "sku", len: 65 })
        );
        assert_eq!(
            StoreId::parse("s#1"),
            Err(IdError::BadChar {
                kind: "store_id",
                found: '#'
            })
        );
        assert!(ItemId::parse("caffè").is_err());
        assert!(CustomerId::parse("a b").is_err());
    }

    #[test]
    fn a_new_id_from_a_client_must_be_addressable_in_a_path() {
        for bad in [".", "..", "...", "-o", "_o", ":o", ".hidden"] {
            assert_eq!(
                OrderId::parse_addressable(bad),
                Err(IdError::NotAddressable { kind: "order_id" }),
                "{bad}"
            );
            // Already in an event, it still reads.
            assert!(OrderId::parse(bad).is_ok(), "{bad}");
        }
        for ok in ["o-1", "0", "A.b", "sku.latte.12oz"] {
            assert!(OrderId::parse_addressable(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn serde_validates_too() {
        let bad: Result<OrderId, _> = serde_json::from_str("\"\"");
        assert!(bad.is_err());
        let good: OrderId = serde_json::from_str("\"o-1\"").unwrap();
        assert_eq!(good.as_str(), "o-1");
    }
}
