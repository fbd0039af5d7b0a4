//! Aggregates and their partition keys.
//!
//! The partition key is the aggregate id, so Kinesis keeps every event of one
//! aggregate on one shard, in version order. The StockItem id joins store and SKU with
//! `#`, a character [`crate::ids`] forbids inside either part, so the join is reversible.

use std::fmt;

use crate::ids::{CustomerId, IdError, ItemId, OrderId, Sku, StoreId};
use crate::proto::envelope::v1::AggregateType as ProtoAggregateType;

/// The four aggregate kinds of the domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AggregateType {
    /// A customer's order.
    Order,
    /// One SKU's stock in one store.
    StockItem,
    /// A customer's loyalty account.
    LoyaltyAccount,
    /// A menu item.
    MenuItem,
}

impl AggregateType {
    /// Every aggregate type, for iteration in tests and tools.
    pub const ALL: [AggregateType; 4] = [
        AggregateType::Order,
        AggregateType::StockItem,
        AggregateType::LoyaltyAccount,
        AggregateType::MenuItem,
    ];

    /// A short stable name for logs, metrics labels and table attributes.
    pub fn as_str(self) -> &'static str {
        match self {
            AggregateType::Order => "order",
            AggregateType::StockItem => "stock_item",
            AggregateType::LoyaltyAccount => "loyalty_account",
            AggregateType::MenuItem => "menu_item",
        }
    }

    pub(crate) fn to_proto(self) -> ProtoAggregateType {
        match self {
            AggregateType::Order => ProtoAggregateType::Order,
            AggregateType::StockItem => ProtoAggregateType::StockItem,
            AggregateType::LoyaltyAccount => ProtoAggregateType::LoyaltyAccount,
            AggregateType::MenuItem => ProtoAggregateType::MenuItem,
        }
    }

    pub(crate) fn from_proto(p: ProtoAggregateType) -> Option<Self> {
        match p {
            ProtoAggregateType::Unspecified => None,
            ProtoAggregateType::Order => Some(AggregateType::Order),
            ProtoAggregateType::StockItem => Some(AggregateType::StockItem),
            ProtoAggregateType::LoyaltyAccount => Some(AggregateType::LoyaltyAccount),
            ProtoAggregateType::MenuItem => Some(AggregateType::MenuItem),
        }
    }
}

impl fmt::Display for AggregateType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A typed aggregate id. Its text form is the event-store key and the partition key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AggregateId {
    /// An order.
    Order(OrderId),
    /// Stock of one SKU in one store.
    StockItem(StoreId, Sku),
    /// A customer's loyalty account.
    LoyaltyAccount(CustomerId),
    /// A menu item.
    MenuItem(ItemId),
}

/// Separator between store and SKU in a StockItem id.
pub const STOCK_ITEM_SEPARATOR: char = '#';

impl AggregateId {
    /// Which kind of aggregate this is.
    pub fn aggregate_type(&self) -> AggregateType {
        match self {
            AggregateId::Order(_) => AggregateType::Order,
            AggregateId::StockItem(..) => AggregateType::StockItem,
            AggregateId::LoyaltyAccount(_) => AggregateType::LoyaltyAccount,
            AggregateId::MenuItem(_) => AggregateType::MenuItem,
        }
    }

    /// The Kinesis partition key: the aggregate id's text form.
    pub fn partition_key(&self) -> String {
        self.to_string()
    }

    /// Parses the text form of an id of a known aggregate type.
    pub fn parse(aggregate_type: AggregateType, s: &str) -> Result<Self, IdError> {
        Ok(match aggregate_type {
            AggregateType::Order => AggregateId::Order(OrderId::parse(s)?),
            AggregateType::LoyaltyAccount => AggregateId::LoyaltyAccount(CustomerId::parse(s)?),
            AggregateType::MenuItem => AggregateId::MenuItem(ItemId::parse(s)?),
            AggregateType::StockItem => {
                let (store, sku) = s
                    .split_once(STOCK_ITEM_SEPARATOR)
                    .ok_or(IdError::Empty { kind: "sku" })?;
                AggregateId::StockItem(StoreId::parse(store)?, Sku::parse(sku)?)
            }
        })
    }
}

impl fmt::Display for AggregateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AggregateId::Order(id) => id.fmt(f),
            AggregateId::StockItem(store, sku) => write!(f, "{store}{STOCK_ITEM_SEPARATOR}{sku}"),
            AggregateId::LoyaltyAccount(id) => id.fmt(f),
            AggregateId::MenuItem(id) => id.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn id_text() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.:-]{1,64}"
    }

    proptest! {
        #[test]
        fn stock_item_key_round_trips(store in id_text(), sku in id_text()) {
            let id = AggregateId::StockItem(StoreId::parse(store).unwrap(), Sku::parse(sku).unwrap());
            let key = id.partition_key();
            prop_assert!(key.len() <= 256, "Kinesis partition keys are at most 256 chars");
            prop_assert_eq!(AggregateId::parse(AggregateType::StockItem, &key).unwrap(), id);
        }

        #[test]
        fn every_type_round_trips(raw in id_text(), t in 0usize..4) {
            let t = AggregateType::ALL[t];
            let text = if t == AggregateType::StockItem { format!("{raw}#{raw}") } else { raw };
            let id = AggregateId::parse(t, &text).unwrap();
            prop_assert_eq!(id.aggregate_type(), t);
            prop_assert_eq!(id.partition_key(), text);
        }
    }

    #[test]
    fn stock_item_needs_both_parts() {
        assert!(AggregateId::parse(AggregateType::StockItem, "store-1").is_err());
        assert!(AggregateId::parse(AggregateType::StockItem, "#sku").is_err());
        assert!(AggregateId::parse(AggregateType::StockItem, "s#").is_err());
        assert!(AggregateId::parse(AggregateType::StockItem, "s#a#b").is_err());
    }
}
