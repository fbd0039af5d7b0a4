//! The LoyaltyAccount aggregate: a customer's points balance and tier.
//!
//! Rules: points earned and redeemed are positive; a redemption never exceeds the
//! balance. The tier follows *lifetime* points earned (redeeming does not demote):
//! Green below 500, Gold from 500, Platinum from 2,500. Crossing a threshold adds a
//! `TierChanged` after the `PointsEarned` that crossed it.

use cafe_events::proto::loyalty::v1::{PointsEarned, PointsRedeemed, Tier, TierChanged};
use cafe_events::{CustomerId, DomainEvent, OrderId};

use super::Aggregate;

/// Lifetime points at which an account becomes Gold.
pub const GOLD_AT: i64 = 500;
/// Lifetime points at which an account becomes Platinum.
pub const PLATINUM_AT: i64 = 2_500;
/// Most points in one command (a sanity bound).
pub const MAX_POINTS: i64 = 1_000_000;

/// The tier for a lifetime total.
pub fn tier_for(lifetime: i64) -> Tier {
    if lifetime >= PLATINUM_AT {
        Tier::Platinum
    } else if lifetime >= GOLD_AT {
        Tier::Gold
    } else {
        Tier::Green
    }
}

/// An account's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoyaltyAccount {
    /// Points available to redeem.
    pub balance: i64,
    /// Points ever earned.
    pub lifetime: i64,
}

/// What can be asked of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoyaltyCommand {
    /// Add points, usually for an order.
    Earn {
        /// Points, 1–[`MAX_POINTS`].
        points: i64,
        /// The order that earned them, if any.
        order_id: Option<OrderId>,
    },
    /// Spend points.
    Redeem {
        /// Points, 1–[`MAX_POINTS`].
        points: i64,
    },
}

/// Why a loyalty command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LoyaltyRejection {
    /// Not a positive number within bounds.
    #[error("points must be 1 to {MAX_POINTS}, got {0}")]
    Points(i64),
    /// More than the balance.
    #[error("cannot redeem {requested} points; the balance is {balance}")]
    Insufficient {
        /// Current balance.
        balance: i64,
        /// Points asked for.
        requested: i64,
    },
}

impl super::Rule for LoyaltyRejection {
    fn code(&self) -> &'static str {
        match self {
            LoyaltyRejection::Points(_) => "points",
            LoyaltyRejection::Insufficient { .. } => "insufficient_points",
        }
    }
}

impl Aggregate for LoyaltyAccount {
    type Command = (CustomerId, LoyaltyCommand);
    type Context = ();
    type Rejection = LoyaltyRejection;

    fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::PointsEarned(e) => {
                self.balance = e.balance_after;
                self.lifetime += e.points;
            }
            DomainEvent::PointsRedeemed(e) => self.balance = e.balance_after,
            _ => {}
        }
    }

    fn decide(&self, (customer, command): &Self::Command, _: &()) -> Result<Vec<DomainEvent>, LoyaltyRejection> {
        let customer_id = customer.to_string();
        match command {
            LoyaltyCommand::Earn { points, order_id } => {
                if !(1..=MAX_POINTS).contains(points) {
                    return Err(LoyaltyRejection::Points(*points));
                }
                let mut events = vec![DomainEvent::PointsEarned(PointsEarned {
                    customer_id: customer_id.clone(),
                    points: *points,
                    order_id: order_id.as_ref().map(ToString::to_string).unwrap_or_default(),
                    balance_after: self.balance + points,
                })];
                let (from, to) = (tier_for(self.lifetime), tier_for(self.lifetime + points));
                if from != to {
                    events.push(DomainEvent::TierChanged(TierChanged {
                        customer_id,
                        from: from as i32,
                        to: to as i32,
                    }));
                }
                Ok(events)
            }
            LoyaltyCommand::Redeem { points } => {
                if !(1..=MAX_POINTS).contains(points) {
                    return Err(LoyaltyRejection::Points(*points));
                }
                if *points > self.balance {
                    return Err(LoyaltyRejection::Insufficient {
                        balance: self.balance,
                        requested: *points,
                    });
                }
                Ok(vec![DomainEvent::PointsRedeemed(PointsRedeemed {
                    customer_id,
                    points: *points,
                    balance_after: self.balance - points,
                })])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::given_when;

    fn c(cmd: LoyaltyCommand) -> (CustomerId, LoyaltyCommand) {
        (CustomerId::parse("c-1").unwrap(), cmd)
    }
    fn earn(points: i64) -> LoyaltyCommand {
        LoyaltyCommand::Earn { points, order_id: None }
    }
    fn run(cmds: Vec<LoyaltyCommand>) -> Vec<DomainEvent> {
        let mut h = Vec::new();
        for cmd in cmds {
            let new = given_when::<LoyaltyAccount>(&h, c(cmd), &()).unwrap();
            h.extend(new);
        }
        h
    }

    #[test]
    fn redeem_never_exceeds_the_balance() {
        let h = run(vec![earn(100)]);
        assert_eq!(
            given_when::<LoyaltyAccount>(&h, c(LoyaltyCommand::Redeem { points: 101 }), &()),
            Err(LoyaltyRejection::Insufficient {
                balance: 100,
                requested: 101
            })
        );
        let h = run(vec![earn(100), LoyaltyCommand::Redeem { points: 100 }]);
        assert_eq!(LoyaltyAccount::replay(&h).balance, 0);
    }

    #[test]
    fn tiers_change_at_the_thresholds_and_redeeming_does_not_demote() {
        let h = run(vec![earn(499)]);
        assert!(!h.iter().any(|e| matches!(e, DomainEvent::TierChanged(_))));
        let out = given_when::<LoyaltyAccount>(&h, c(earn(1)), &()).unwrap();
        assert!(
            matches!(&out[1], DomainEvent::TierChanged(t) if t.to == Tier::Gold as i32 && t.from == Tier::Green as i32)
        );
        let h = run(vec![earn(600), LoyaltyCommand::Redeem { points: 600 }, earn(1)]);
        let changes: Vec<_> = h.iter().filter(|e| matches!(e, DomainEvent::TierChanged(_))).collect();
        assert_eq!(changes.len(), 1, "one change to Gold, no demotion: {h:?}");
        // One big earn can jump straight to Platinum.
        let out = given_when::<LoyaltyAccount>(&[], c(earn(PLATINUM_AT)), &()).unwrap();
        assert!(matches!(&out[1], DomainEvent::TierChanged(t) if t.to == Tier::Platinum as i32));
    }

    #[test]
    fn points_must_be_positive_and_bounded() {
        for p in [0, -5, MAX_POINTS + 1] {
            assert_eq!(
                given_when::<LoyaltyAccount>(&[], c(earn(p)), &()),
                Err(LoyaltyRejection::Points(p))
            );
            assert_eq!(
                given_when::<LoyaltyAccount>(&[], c(LoyaltyCommand::Redeem { points: p }), &()),
                Err(LoyaltyRejection::Points(p))
            );
        }
    }
}
