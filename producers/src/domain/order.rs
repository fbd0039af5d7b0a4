//! The Order aggregate.
//!
//! Rules: an order has 1–50 lines, each of quantity 1–20, for items published on the
//! menu; its total is the sum of the lines in cents, priced from the menu at the moment
//! of ordering (a client never sends prices). Status only moves forward:
//!
//! ```text
//! placed ──PaymentAuthorized──► paid ──► preparing ──► ready ──► completed
//!    └────PaymentDeclined───► payment_declined
//! cancel: from placed, paid or payment_declined (not once preparing has begun)
//! ```

use std::collections::HashMap;

use cafe_events::proto::orders::v1::{
    OrderCancelled, OrderLine, OrderPlaced, OrderStatus, OrderStatusChanged, PaymentAuthorized, PaymentDeclined,
};
use cafe_events::{Cents, CustomerId, DomainEvent, ItemId, OrderId, StoreId};

use super::Aggregate;

/// Most lines one order may have.
pub const MAX_LINES: usize = 50;
/// Most units of one item per line.
pub const MAX_QUANTITY: u32 = 20;

/// An order's state, rebuilt from its events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Order {
    /// `None` until placed.
    pub status: Option<OrderStatus>,
    /// Total in cents.
    pub total: Cents,
    /// Who placed it (empty until placed): whose order a later command touches.
    pub customer_id: String,
    /// Where (empty until placed): whose staff may change it.
    pub store_id: String,
}

/// One requested line: what and how many. The price comes from the menu.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRequest {
    /// The menu item.
    pub item_id: ItemId,
    /// Units, 1–20.
    pub quantity: u32,
}

/// Place a new order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaceOrder {
    /// Chosen by the client, so a retried request names the same order.
    pub order_id: OrderId,
    /// Who ordered.
    pub customer_id: CustomerId,
    /// Where.
    pub store_id: StoreId,
    /// What.
    pub lines: Vec<LineRequest>,
    /// ISO 4217 code of the prices.
    pub currency: String,
}

/// What can be asked of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderCommand {
    /// Place it.
    Place(PlaceOrder),
    /// Move it to `preparing`, `ready` or `completed`.
    Advance {
        /// The next status.
        to: OrderStatus,
    },
    /// Cancel it.
    Cancel {
        /// Why.
        reason: String,
    },
    /// The payment went through (from the payment Lambda).
    Authorize {
        /// The gateway's payment id.
        payment_id: String,
        /// Amount charged.
        amount: Cents,
    },
    /// The payment was refused (from the payment Lambda).
    Decline {
        /// Why.
        reason: String,
    },
}

/// Menu prices of published items, looked up by the command handler before deciding.
pub type MenuPrices = HashMap<ItemId, Cents>;

/// Why an order command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderRejection {
    /// The order id is taken.
    #[error("order already exists")]
    AlreadyPlaced,
    /// No such order.
    #[error("order does not exist")]
    NotFound,
    /// No lines, or more than [`MAX_LINES`].
    #[error("an order needs 1 to {MAX_LINES} lines, got {0}")]
    LineCount(usize),
    /// A quantity outside 1–[`MAX_QUANTITY`].
    #[error("line {line}: quantity must be 1 to {MAX_QUANTITY}, got {quantity}")]
    Quantity {
        /// Zero-based line index.
        line: usize,
        /// The quantity asked for.
        quantity: u32,
    },
    /// An item that is not published on the menu.
    #[error("line {line}: item {item_id} is not on the menu")]
    NotOnMenu {
        /// Zero-based line index.
        line: usize,
        /// The item.
        item_id: ItemId,
    },
    /// The total does not fit in 64 bits of cents.
    #[error("order total overflows")]
    TotalOverflow,
    /// A status change that is not forward along the lifecycle.
    #[error("cannot move an order from {from} to {to}")]
    Transition {
        /// Current status.
        from: &'static str,
        /// Requested status.
        to: &'static str,
    },
    /// An authorization for another amount than the total.
    #[error("payment of {got} does not match the order total {expected}")]
    AmountMismatch {
        /// The order total.
        expected: Cents,
        /// The amount authorized.
        got: Cents,
    },
}

impl super::Rule for OrderRejection {
    fn code(&self) -> &'static str {
        match self {
            OrderRejection::AlreadyPlaced => "order_exists",
            OrderRejection::NotFound => "order_not_found",
            OrderRejection::LineCount(_) => "line_count",
            OrderRejection::Quantity { .. } => "quantity",
            OrderRejection::NotOnMenu { .. } => "not_on_menu",
            OrderRejection::TotalOverflow => "total_overflow",
            OrderRejection::Transition { .. } => "illegal_transition",
            OrderRejection::AmountMismatch { .. } => "amount_mismatch",
        }
    }
    fn is_not_found(&self) -> bool {
        matches!(self, OrderRejection::NotFound)
    }
}

/// The snake_case name clients see for a status.
pub fn status_name(s: OrderStatus) -> &'static str {
    match s {
        OrderStatus::Unspecified => "unspecified",
        OrderStatus::Placed => "placed",
        OrderStatus::Paid => "paid",
        OrderStatus::PaymentDeclined => "payment_declined",
        OrderStatus::Preparing => "preparing",
        OrderStatus::Ready => "ready",
        OrderStatus::Completed => "completed",
        OrderStatus::Cancelled => "cancelled",
    }
}

fn transition(from: OrderStatus, to: OrderStatus) -> OrderRejection {
    OrderRejection::Transition {
        from: status_name(from),
        to: status_name(to),
    }
}

impl Order {
    fn current(&self) -> Result<OrderStatus, OrderRejection> {
        self.status.ok_or(OrderRejection::NotFound)
    }

    fn change(order_id: &str, from: OrderStatus, to: OrderStatus) -> DomainEvent {
        DomainEvent::OrderStatusChanged(OrderStatusChanged {
            order_id: order_id.to_owned(),
            from: from as i32,
            to: to as i32,
        })
    }
}

impl Aggregate for Order {
    type Command = (OrderId, OrderCommand);
    type Context = MenuPrices;
    type Rejection = OrderRejection;

    fn is_creation((_, command): &Self::Command) -> bool {
        matches!(command, OrderCommand::Place(_))
    }

    fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::OrderPlaced(e) => {
                self.status = Some(OrderStatus::Placed);
                self.total = Cents::new(e.total_cents);
                self.customer_id.clone_from(&e.customer_id);
                self.store_id.clone_from(&e.store_id);
            }
            DomainEvent::OrderStatusChanged(e) => {
                self.status = OrderStatus::try_from(e.to).ok().or(self.status);
            }
            DomainEvent::PaymentAuthorized(_) => self.status = Some(OrderStatus::Paid),
            DomainEvent::PaymentDeclined(_) => self.status = Some(OrderStatus::PaymentDeclined),
            DomainEvent::OrderCancelled(_) => self.status = Some(OrderStatus::Cancelled),
            _ => {}
        }
    }

    fn decide(
        &self,
        (order_id, command): &Self::Command,
        menu: &MenuPrices,
    ) -> Result<Vec<DomainEvent>, OrderRejection> {
        let id = order_id.as_str();
        match command {
            OrderCommand::Place(place) => {
                if self.status.is_some() {
                    return Err(OrderRejection::AlreadyPlaced);
                }
                if place.lines.is_empty() || place.lines.len() > MAX_LINES {
                    return Err(OrderRejection::LineCount(place.lines.len()));
                }
                let mut lines = Vec::with_capacity(place.lines.len());
                let mut total = Cents::ZERO;
                for (i, l) in place.lines.iter().enumerate() {
                    if !(1..=MAX_QUANTITY).contains(&l.quantity) {
                        return Err(OrderRejection::Quantity {
                            line: i,
                            quantity: l.quantity,
                        });
                    }
                    let price = *menu.get(&l.item_id).ok_or_else(|| OrderRejection::NotOnMenu {
                        line: i,
                        item_id: l.item_id.clone(),
                    })?;
                    total = price
                        .checked_mul(i64::from(l.quantity))
                        .and_then(|line_total| total.checked_add(line_total))
                        .ok_or(OrderRejection::TotalOverflow)?;
                    lines.push(OrderLine {
                        item_id: l.item_id.to_string(),
                        quantity: l.quantity,
                        unit_price_cents: price.get(),
                    });
                }
                Ok(vec![DomainEvent::OrderPlaced(OrderPlaced {
                    order_id: id.to_owned(),
                    customer_id: place.customer_id.to_string(),
                    store_id: place.store_id.to_string(),
                    lines,
                    currency: place.currency.clone(),
                    total_cents: total.get(),
                })])
            }
            OrderCommand::Advance { to } => {
                let from = self.current()?;
                let allowed = matches!(
                    (from, *to),
                    (OrderStatus::Paid, OrderStatus::Preparing)
                        | (OrderStatus::Preparing, OrderStatus::Ready)
                        | (OrderStatus::Ready, OrderStatus::Completed)
                );
                if !allowed {
                    return Err(transition(from, *to));
                }
                Ok(vec![Order::change(id, from, *to)])
            }
            OrderCommand::Cancel { reason } => {
                let from = self.current()?;
                if !matches!(
                    from,
                    OrderStatus::Placed | OrderStatus::Paid | OrderStatus::PaymentDeclined
                ) {
                    return Err(transition(from, OrderStatus::Cancelled));
                }
                Ok(vec![DomainEvent::OrderCancelled(OrderCancelled {
                    order_id: id.to_owned(),
                    reason: reason.clone(),
                })])
            }
            OrderCommand::Authorize { payment_id, amount } => {
                let from = self.current()?;
                if from != OrderStatus::Placed {
                    return Err(transition(from, OrderStatus::Paid));
                }
                if *amount != self.total {
                    return Err(OrderRejection::AmountMismatch {
                        expected: self.total,
                        got: *amount,
                    });
                }
                Ok(vec![DomainEvent::PaymentAuthorized(PaymentAuthorized {
                    order_id: id.to_owned(),
                    payment_id: payment_id.clone(),
                    amount_cents: amount.get(),
                })])
            }
            OrderCommand::Decline { reason } => {
                let from = self.current()?;
                if from != OrderStatus::Placed {
                    return Err(transition(from, OrderStatus::PaymentDeclined));
                }
                Ok(vec![DomainEvent::PaymentDeclined(PaymentDeclined {
                    order_id: id.to_owned(),
                    reason: reason.clone(),
                })])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::testing::given_when;

    fn oid() -> OrderId {
        OrderId::parse("o-1").unwrap()
    }
    fn item(s: &str) -> ItemId {
        ItemId::parse(s).unwrap()
    }
    fn menu() -> MenuPrices {
        [(item("latte"), Cents::new(525)), (item("muffin"), Cents::new(300))]
            .into_iter()
            .collect()
    }
    fn place(lines: &[(&str, u32)]) -> (OrderId, OrderCommand) {
        (
            oid(),
            OrderCommand::Place(PlaceOrder {
                order_id: oid(),
                customer_id: CustomerId::parse("c-1").unwrap(),
                store_id: StoreId::parse("s-1").unwrap(),
                lines: lines
                    .iter()
                    .map(|(i, q)| LineRequest {
                        item_id: item(i),
                        quantity: *q,
                    })
                    .collect(),
                currency: "USD".into(),
            }),
        )
    }
    fn placed() -> Vec<DomainEvent> {
        given_when::<Order>(&[], place(&[("latte", 2), ("muffin", 1)]), &menu()).unwrap()
    }
    fn with(mut history: Vec<DomainEvent>, cmd: OrderCommand) -> Vec<DomainEvent> {
        let new = given_when::<Order>(&history, (oid(), cmd), &menu()).unwrap();
        history.extend(new);
        history
    }
    fn paid() -> Vec<DomainEvent> {
        with(
            placed(),
            OrderCommand::Authorize {
                payment_id: "p".into(),
                amount: Cents::new(1350),
            },
        )
    }
    fn advance(to: OrderStatus) -> (OrderId, OrderCommand) {
        (oid(), OrderCommand::Advance { to })
    }

    #[test]
    fn placing_prices_lines_from_the_menu_and_sums_the_total() {
        let events = placed();
        let [DomainEvent::OrderPlaced(p)] = events.as_slice() else {
            panic!("{events:?}")
        };
        assert_eq!(p.total_cents, 2 * 525 + 300);
        assert_eq!(p.lines[0].unit_price_cents, 525);
        assert_eq!(
            p.total_cents,
            p.lines
                .iter()
                .map(|l| i64::from(l.quantity) * l.unit_price_cents)
                .sum::<i64>()
        );
    }

    #[test]
    fn line_count_quantity_and_menu_rules() {
        let m = menu();
        assert_eq!(
            given_when::<Order>(&[], place(&[]), &m),
            Err(OrderRejection::LineCount(0))
        );
        let fifty_one: Vec<(&str, u32)> = vec![("latte", 1); 51];
        assert_eq!(
            given_when::<Order>(&[], place(&fifty_one), &m),
            Err(OrderRejection::LineCount(51))
        );
        assert!(given_when::<Order>(&[], place(&vec![("latte", 1); 50]), &m).is_ok());
        assert_eq!(
            given_when::<Order>(&[], place(&[("latte", 1), ("muffin", 0)]), &m),
            Err(OrderRejection::Quantity { line: 1, quantity: 0 })
        );
        assert_eq!(
            given_when::<Order>(&[], place(&[("latte", 21)]), &m),
            Err(OrderRejection::Quantity { line: 0, quantity: 21 })
        );
        assert!(given_when::<Order>(&[], place(&[("latte", 20)]), &m).is_ok());
        assert_eq!(
            given_when::<Order>(&[], place(&[("espresso", 1)]), &m),
            Err(OrderRejection::NotOnMenu {
                line: 0,
                item_id: item("espresso")
            })
        );
    }

    #[test]
    fn a_huge_price_overflows_into_a_rejection_not_a_panic() {
        let m: MenuPrices = [(item("gold"), Cents::new(i64::MAX / 2))].into_iter().collect();
        assert_eq!(
            given_when::<Order>(&[], place(&[("gold", 3)]), &m),
            Err(OrderRejection::TotalOverflow)
        );
    }

    #[test]
    fn an_order_id_is_placed_once() {
        assert_eq!(
            given_when::<Order>(&placed(), place(&[("latte", 1)]), &menu()),
            Err(OrderRejection::AlreadyPlaced)
        );
    }

    #[test]
    fn payment_moves_placed_to_paid_or_declined_only() {
        assert_eq!(Order::replay(&paid()).status, Some(OrderStatus::Paid));
        let declined = with(placed(), OrderCommand::Decline { reason: "card".into() });
        assert_eq!(Order::replay(&declined).status, Some(OrderStatus::PaymentDeclined));
        let again = (
            oid(),
            OrderCommand::Authorize {
                payment_id: "p2".into(),
                amount: Cents::new(1350),
            },
        );
        assert!(matches!(
            given_when::<Order>(&paid(), again.clone(), &menu()),
            Err(OrderRejection::Transition { .. })
        ));
        assert!(matches!(
            given_when::<Order>(&declined, again, &menu()),
            Err(OrderRejection::Transition { .. })
        ));
    }

    #[test]
    fn an_authorization_must_match_the_total() {
        let wrong = (
            oid(),
            OrderCommand::Authorize {
                payment_id: "p".into(),
                amount: Cents::new(1),
            },
        );
        assert_eq!(
            given_when::<Order>(&placed(), wrong, &menu()),
            Err(OrderRejection::AmountMismatch {
                expected: Cents::new(1350),
                got: Cents::new(1)
            })
        );
    }

    #[test]
    fn status_only_moves_forward() {
        let m = menu();
        // Not before payment.
        assert!(given_when::<Order>(&placed(), advance(OrderStatus::Preparing), &m).is_err());
        let preparing = with(
            paid(),
            OrderCommand::Advance {
                to: OrderStatus::Preparing,
            },
        );
        let ready = with(preparing.clone(), OrderCommand::Advance { to: OrderStatus::Ready });
        let completed = with(
            ready.clone(),
            OrderCommand::Advance {
                to: OrderStatus::Completed,
            },
        );
        assert_eq!(Order::replay(&completed).status, Some(OrderStatus::Completed));
        // No skipping, no going back, nothing after completion.
        assert!(given_when::<Order>(&paid(), advance(OrderStatus::Ready), &m).is_err());
        assert!(given_when::<Order>(&ready, advance(OrderStatus::Preparing), &m).is_err());
        assert!(given_when::<Order>(&completed, advance(OrderStatus::Completed), &m).is_err());
        assert!(given_when::<Order>(&preparing, advance(OrderStatus::Cancelled), &m).is_err());
    }

    #[test]
    fn cancel_only_before_preparing() {
        let m = menu();
        let cancel = || {
            (
                oid(),
                OrderCommand::Cancel {
                    reason: "changed mind".into(),
                },
            )
        };
        assert!(given_when::<Order>(&placed(), cancel(), &m).is_ok());
        assert!(given_when::<Order>(&paid(), cancel(), &m).is_ok());
        let preparing = with(
            paid(),
            OrderCommand::Advance {
                to: OrderStatus::Preparing,
            },
        );
        assert_eq!(
            given_when::<Order>(&preparing, cancel(), &m),
            Err(OrderRejection::Transition {
                from: "preparing",
                to: "cancelled"
            })
        );
        let cancelled = with(placed(), OrderCommand::Cancel { reason: "x".into() });
        assert!(given_when::<Order>(&cancelled, cancel(), &m).is_err());
    }

    #[test]
    fn commands_on_a_missing_order_are_not_found() {
        assert_eq!(
            given_when::<Order>(&[], advance(OrderStatus::Preparing), &menu()),
            Err(OrderRejection::NotFound)
        );
    }
}
