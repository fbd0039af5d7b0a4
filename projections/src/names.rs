//! The names every read model stores for order statuses and loyalty tiers, and which
//! status an order event leaves an order in: one answer for all six models, so they
//! can never disagree on a word.

use cafe_events::DomainEvent;
use cafe_events::proto::loyalty::v1::Tier;

/// The clients' name for an order status: the command side's, so reads and command
/// errors say the same word.
pub use cafe_producers::domain::order::status_name;

/// The read models' name for a tier.
pub fn tier_name(tier: Tier) -> &'static str {
    match tier {
        Tier::Unspecified | Tier::Green => "green",
        Tier::Gold => "gold",
        Tier::Platinum => "platinum",
    }
}

/// The status an order event leaves the order in, if it is an order event.
pub fn order_status(event: &DomainEvent) -> Option<&'static str> {
    Some(match event {
        DomainEvent::OrderPlaced(_) => "placed",
        DomainEvent::OrderStatusChanged(c) => status_name(c.to()),
        DomainEvent::PaymentAuthorized(_) => "paid",
        DomainEvent::PaymentDeclined(_) => "payment_declined",
        DomainEvent::OrderCancelled(_) => "cancelled",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cafe_events::proto::orders::v1::{OrderCancelled, OrderStatus, OrderStatusChanged};

    #[test]
    fn order_events_name_the_status_they_leave_and_others_none() {
        let moved = DomainEvent::OrderStatusChanged(OrderStatusChanged {
            order_id: "o".into(),
            from: OrderStatus::Ready as i32,
            to: OrderStatus::Completed as i32,
        });
        assert_eq!(order_status(&moved), Some("completed"));
        let cancelled = DomainEvent::OrderCancelled(OrderCancelled::default());
        assert_eq!(order_status(&cancelled), Some("cancelled"));
        let restocked = DomainEvent::StockRestocked(Default::default());
        assert_eq!(order_status(&restocked), None);
        assert_eq!(tier_name(Tier::Unspecified), "green");
    }
}
