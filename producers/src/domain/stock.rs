//! The StockItem aggregate: one SKU's on-hand count in one store.
//!
//! Rule: stock never goes below zero. A restock adds a positive quantity; an adjustment
//! (count correction, spoilage) may go either way; a reservation for an order takes
//! units. Whenever a change leaves zero on hand, `StockDepleted` follows it, so
//! replenishment can react to one event type.

use cafe_events::proto::inventory::v1::{StockAdjusted, StockDepleted, StockReserved, StockRestocked};
use cafe_events::{DomainEvent, OrderId, Sku, StoreId};

use super::Aggregate;

/// Largest single restock or adjustment we accept (a sanity bound, not a business limit).
pub const MAX_MOVE: i64 = 1_000_000;

/// A stock item's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StockItem {
    /// Units on hand.
    pub on_hand: i64,
}

/// What can be asked of a stock item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockCommand {
    /// Delivery of `quantity` units.
    Restock {
        /// Units, 1–[`MAX_MOVE`].
        quantity: i64,
    },
    /// Correction by `delta` units (non-zero).
    Adjust {
        /// Signed change.
        delta: i64,
        /// Why (spoilage, recount, ...).
        reason: String,
    },
    /// Units set aside for an order.
    Reserve {
        /// Units, 1–[`MAX_MOVE`].
        quantity: i64,
        /// The order.
        order_id: OrderId,
    },
}

/// Why a stock command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StockRejection {
    /// A quantity outside 1–[`MAX_MOVE`], or a zero/out-of-range adjustment.
    #[error("quantity {0} is out of range")]
    Quantity(i64),
    /// The change would leave negative stock.
    #[error("only {on_hand} on hand; cannot take {requested}")]
    Insufficient {
        /// Units on hand.
        on_hand: i64,
        /// Units the command would take.
        requested: i64,
    },
}

impl super::Rule for StockRejection {
    fn code(&self) -> &'static str {
        match self {
            StockRejection::Quantity(_) => "quantity",
            StockRejection::Insufficient { .. } => "insufficient_stock",
        }
    }
}

impl Aggregate for StockItem {
    type Command = (StoreId, Sku, StockCommand);
    type Context = ();
    type Rejection = StockRejection;

    fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::StockRestocked(e) => self.on_hand = e.on_hand_after,
            DomainEvent::StockAdjusted(e) => self.on_hand = e.on_hand_after,
            DomainEvent::StockReserved(e) => self.on_hand = e.on_hand_after,
            _ => {}
        }
    }

    fn decide(&self, (store, sku, command): &Self::Command, _: &()) -> Result<Vec<DomainEvent>, StockRejection> {
        let (store_id, sku_s) = (store.to_string(), sku.to_string());
        let in_range = |q: i64| (1..=MAX_MOVE).contains(&q);
        let add = |q: i64| self.on_hand.checked_add(q).ok_or(StockRejection::Quantity(q));
        let take = |requested: i64| {
            let after = self.on_hand - requested;
            if after < 0 {
                Err(StockRejection::Insufficient {
                    on_hand: self.on_hand,
                    requested,
                })
            } else {
                Ok(after)
            }
        };
        let event = match command {
            StockCommand::Restock { quantity } => {
                if !in_range(*quantity) {
                    return Err(StockRejection::Quantity(*quantity));
                }
                DomainEvent::StockRestocked(StockRestocked {
                    store_id: store_id.clone(),
                    sku: sku_s.clone(),
                    quantity: *quantity,
                    on_hand_after: add(*quantity)?,
                })
            }
            StockCommand::Adjust { delta, reason } => {
                // unsigned_abs: `i64::MIN.abs()` would overflow.
                if *delta == 0 || delta.unsigned_abs() > MAX_MOVE.unsigned_abs() {
                    return Err(StockRejection::Quantity(*delta));
                }
                let on_hand_after = if *delta < 0 { take(-delta)? } else { add(*delta)? };
                DomainEvent::StockAdjusted(StockAdjusted {
                    store_id: store_id.clone(),
                    sku: sku_s.clone(),
                    delta: *delta,
                    reason: reason.clone(),
                    on_hand_after,
                })
            }
            StockCommand::Reserve { quantity, order_id } => {
                if !in_range(*quantity) {
                    return Err(StockRejection::Quantity(*quantity));
                }
                DomainEvent::StockReserved(StockReserved {
                    store_id: store_id.clone(),
                    sku: sku_s.clone(),
                    quantity: *quantity,
                    order_id: order_id.to_string(),
                    on_hand_after: take(*quantity)?,
                })
            }
        };
        let depleted = match &event {
            DomainEvent::StockAdjusted(e) => e.on_hand_after == 0,
            DomainEvent::StockReserved(e) => e.on_hand_after == 0,
            _ => false,
        };
        let mut events = vec![event];
        if depleted {
            events.push(DomainEvent::StockDepleted(StockDepleted { store_id, sku: sku_s }));
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::given_when;

    fn cmd(c: StockCommand) -> (StoreId, Sku, StockCommand) {
        (StoreId::parse("s-1").unwrap(), Sku::parse("beans").unwrap(), c)
    }
    fn history(cmds: Vec<StockCommand>) -> Vec<DomainEvent> {
        let mut h = Vec::new();
        for c in cmds {
            let new = given_when::<StockItem>(&h, cmd(c), &()).unwrap();
            h.extend(new);
        }
        h
    }

    #[test]
    fn restock_adds_and_records_the_new_level() {
        let h = history(vec![
            StockCommand::Restock { quantity: 10 },
            StockCommand::Restock { quantity: 5 },
        ]);
        assert_eq!(StockItem::replay(&h).on_hand, 15);
    }

    #[test]
    fn stock_never_goes_below_zero() {
        let h = history(vec![StockCommand::Restock { quantity: 3 }]);
        let reserve = |q| {
            cmd(StockCommand::Reserve {
                quantity: q,
                order_id: OrderId::parse("o").unwrap(),
            })
        };
        assert_eq!(
            given_when::<StockItem>(&h, reserve(4), &()),
            Err(StockRejection::Insufficient {
                on_hand: 3,
                requested: 4
            })
        );
        let adjust = cmd(StockCommand::Adjust {
            delta: -4,
            reason: "spoilage".into(),
        });
        assert_eq!(
            given_when::<StockItem>(&h, adjust, &()),
            Err(StockRejection::Insufficient {
                on_hand: 3,
                requested: 4
            })
        );
    }

    #[test]
    fn reaching_zero_emits_depleted() {
        let h = history(vec![StockCommand::Restock { quantity: 2 }]);
        let out = given_when::<StockItem>(
            &h,
            cmd(StockCommand::Reserve {
                quantity: 2,
                order_id: OrderId::parse("o").unwrap(),
            }),
            &(),
        )
        .unwrap();
        assert!(
            matches!(out.as_slice(), [DomainEvent::StockReserved(r), DomainEvent::StockDepleted(_)] if r.on_hand_after == 0)
        );
    }

    #[test]
    fn zero_negative_and_huge_quantities_are_refused() {
        for q in [0, -1, MAX_MOVE + 1] {
            assert_eq!(
                given_when::<StockItem>(&[], cmd(StockCommand::Restock { quantity: q }), &()),
                Err(StockRejection::Quantity(q))
            );
        }
        let zero = cmd(StockCommand::Adjust {
            delta: 0,
            reason: String::new(),
        });
        assert_eq!(
            given_when::<StockItem>(&[], zero, &()),
            Err(StockRejection::Quantity(0))
        );
        let min = cmd(StockCommand::Adjust {
            delta: i64::MIN,
            reason: String::new(),
        });
        assert!(
            given_when::<StockItem>(&[], min, &()).is_err(),
            "i64::MIN must not overflow"
        );
    }
}
