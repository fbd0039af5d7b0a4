//! The catalog of domain events: one enum variant per protobuf message.
//!
//! Adding an event type means one line in the `catalog!` invocation below, a `.proto`
//! message, and a golden file; the test `event_type_names_match_the_schema` keeps the
//! names here equal to the schema's fully qualified names.

use bytes::Bytes;
use prost::Message;

use crate::aggregate::AggregateType;
use crate::error::DecodeError;
use crate::proto::{inventory::v1 as inventory, loyalty::v1 as loyalty, menu::v1 as menu, orders::v1 as orders};
use crate::upcast;

/// An event whose type this build does not know. Its bytes are kept so that a
/// pass-through (a relay, a replay, an archive) loses nothing written by a newer producer.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownEvent {
    /// The fully qualified type name from the envelope.
    pub event_type: String,
    /// The layout version from the envelope.
    pub schema_version: u32,
    /// The payload, untouched.
    pub payload: Bytes,
}

macro_rules! catalog {
    ($( $variant:ident($ty:ty) = $name:literal, $agg:ident, schema $ver:literal; )*) => {
        /// A decoded domain event.
        #[derive(Debug, Clone, PartialEq)]
        #[allow(clippy::large_enum_variant)]
        pub enum DomainEvent {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant($ty),
            )*
            /// An event type this build does not know; see [`UnknownEvent`].
            Unknown(UnknownEvent),
        }

        /// Every known event type name with its aggregate type and current schema version.
        pub const KNOWN_EVENT_TYPES: &[(&str, AggregateType, u32)] = &[
            $( ($name, AggregateType::$agg, $ver), )*
        ];

        impl DomainEvent {
            /// The fully qualified protobuf type name (the envelope's `event_type`).
            pub fn event_type(&self) -> &str {
                match self {
                    $( DomainEvent::$variant(_) => $name, )*
                    DomainEvent::Unknown(u) => &u.event_type,
                }
            }

            /// The payload layout version this event is encoded with.
            pub fn schema_version(&self) -> u32 {
                match self {
                    $( DomainEvent::$variant(_) => $ver, )*
                    DomainEvent::Unknown(u) => u.schema_version,
                }
            }

            /// The aggregate type this event belongs to, if the type is known.
            pub fn aggregate_type(&self) -> Option<AggregateType> {
                match self {
                    $( DomainEvent::$variant(_) => Some(AggregateType::$agg), )*
                    DomainEvent::Unknown(_) => None,
                }
            }

            /// Encodes the payload (not the envelope).
            pub fn encode_payload(&self) -> Bytes {
                match self {
                    $( DomainEvent::$variant(m) => Bytes::from(m.encode_to_vec()), )*
                    DomainEvent::Unknown(u) => u.payload.clone(),
                }
            }

            /// Decodes a payload, upcasting old layouts to the current one first.
            pub fn decode_payload(
                event_type: &str,
                schema_version: u32,
                payload: Bytes,
            ) -> Result<Self, DecodeError> {
                match event_type {
                    $(
                        $name => {
                            let payload = upcast::to_current(event_type, schema_version, $ver, payload)?;
                            <$ty>::decode(payload)
                                .map(DomainEvent::$variant)
                                .map_err(|source| DecodeError::Payload { event_type: event_type.to_owned(), source })
                        }
                    )*
                    _ => Ok(DomainEvent::Unknown(UnknownEvent {
                        event_type: event_type.to_owned(),
                        schema_version,
                        payload,
                    })),
                }
            }
        }
    };
}

catalog! {
    OrderPlaced(orders::OrderPlaced) = "cloudcafe.orders.v1.OrderPlaced", Order, schema 2;
    OrderStatusChanged(orders::OrderStatusChanged) = "cloudcafe.orders.v1.OrderStatusChanged", Order, schema 1;
    OrderCancelled(orders::OrderCancelled) = "cloudcafe.orders.v1.OrderCancelled", Order, schema 1;
    PaymentAuthorized(orders::PaymentAuthorized) = "cloudcafe.orders.v1.PaymentAuthorized", Order, schema 1;
    PaymentDeclined(orders::PaymentDeclined) = "cloudcafe.orders.v1.PaymentDeclined", Order, schema 1;
    StockRestocked(inventory::StockRestocked) = "cloudcafe.inventory.v1.StockRestocked", StockItem, schema 1;
    StockAdjusted(inventory::StockAdjusted) = "cloudcafe.inventory.v1.StockAdjusted", StockItem, schema 1;
    StockReserved(inventory::StockReserved) = "cloudcafe.inventory.v1.StockReserved", StockItem, schema 1;
    StockDepleted(inventory::StockDepleted) = "cloudcafe.inventory.v1.StockDepleted", StockItem, schema 1;
    PointsEarned(loyalty::PointsEarned) = "cloudcafe.loyalty.v1.PointsEarned", LoyaltyAccount, schema 1;
    PointsRedeemed(loyalty::PointsRedeemed) = "cloudcafe.loyalty.v1.PointsRedeemed", LoyaltyAccount, schema 1;
    TierChanged(loyalty::TierChanged) = "cloudcafe.loyalty.v1.TierChanged", LoyaltyAccount, schema 1;
    MenuItemPublished(menu::MenuItemPublished) = "cloudcafe.menu.v1.MenuItemPublished", MenuItem, schema 1;
    MenuItemRetired(menu::MenuItemRetired) = "cloudcafe.menu.v1.MenuItemRetired", MenuItem, schema 1;
}

/// The current schema version of a known event type.
pub fn current_schema_version(event_type: &str) -> Option<u32> {
    KNOWN_EVENT_TYPES
        .iter()
        .find(|(name, ..)| *name == event_type)
        .map(|&(_, _, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Name;

    #[test]
    fn event_type_names_match_the_schema() {
        let schema_names = [
            orders::OrderPlaced::full_name(),
            orders::OrderStatusChanged::full_name(),
            orders::OrderCancelled::full_name(),
            orders::PaymentAuthorized::full_name(),
            orders::PaymentDeclined::full_name(),
            inventory::StockRestocked::full_name(),
            inventory::StockAdjusted::full_name(),
            inventory::StockReserved::full_name(),
            inventory::StockDepleted::full_name(),
            loyalty::PointsEarned::full_name(),
            loyalty::PointsRedeemed::full_name(),
            loyalty::TierChanged::full_name(),
            menu::MenuItemPublished::full_name(),
            menu::MenuItemRetired::full_name(),
        ];
        let catalog: Vec<&str> = KNOWN_EVENT_TYPES.iter().map(|(n, ..)| *n).collect();
        assert_eq!(catalog, schema_names);
    }

    #[test]
    fn unknown_types_keep_their_bytes() {
        let payload = Bytes::from_static(b"\x0a\x03abc\x10\x07");
        let ev = DomainEvent::decode_payload("cloudcafe.gifts.v1.GiftCardIssued", 3, payload.clone()).unwrap();
        assert_eq!(ev.event_type(), "cloudcafe.gifts.v1.GiftCardIssued");
        assert_eq!(ev.schema_version(), 3);
        assert_eq!(ev.aggregate_type(), None);
        assert_eq!(ev.encode_payload(), payload);
    }

    #[test]
    fn newer_schema_of_a_known_type_is_refused() {
        let err = DomainEvent::decode_payload("cloudcafe.menu.v1.MenuItemRetired", 2, Bytes::new()).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::SchemaTooNew {
                    found: 2,
                    current: 1,
                    ..
                }
            ),
            "{err}"
        );
    }
}
