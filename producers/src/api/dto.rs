//! Request bodies and their validation at the edge.
//!
//! The line between 400 and 422: a request that is wrong in itself (bad syntax, types,
//! ids, numbers outside their field's range) is a 400 naming every bad field; a
//! well-formed request the current state forbids (not on the menu, not enough stock,
//! an illegal transition) is a 422 from the aggregate. The aggregates check the ranges
//! too: the edge reports them better, the domain never trusts the edge.

use cafe_events::proto::orders::v1::OrderStatus;
use cafe_events::{Cents, CustomerId, IdError, ItemId, OrderId, StoreId};
use serde::Deserialize;
use utoipa::ToSchema;

use super::error::{ApiError, FieldError};
use crate::domain::loyalty::{LoyaltyCommand, MAX_POINTS};
use crate::domain::menu::{MAX_PRICE, MenuCommand};
use crate::domain::order::{LineRequest, MAX_LINES, MAX_QUANTITY, PlaceOrder};
use crate::domain::stock::{MAX_MOVE, StockCommand};

/// Longest free-text field (reasons, names).
const MAX_TEXT: usize = 200;

#[derive(Default)]
struct Check(Vec<FieldError>);

impl Check {
    fn fail(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }
    fn id<T>(&mut self, path: &str, parsed: Result<T, IdError>) -> Option<T> {
        parsed.map_err(|e| self.fail(path, e.to_string())).ok()
    }
    fn range(&mut self, path: &str, v: i64, lo: i64, hi: i64) {
        if !(lo..=hi).contains(&v) {
            self.fail(path, format!("must be {lo} to {hi}"));
        }
    }
    fn text(&mut self, path: &str, v: &str, required: bool) {
        if required && v.trim().is_empty() {
            self.fail(path, "must not be empty");
        } else if v.chars().count() > MAX_TEXT {
            self.fail(path, format!("at most {MAX_TEXT} characters"));
        }
    }
    fn done<T>(self, value: Option<T>) -> Result<T, ApiError> {
        match value {
            Some(v) if self.0.is_empty() => Ok(v),
            _ => Err(ApiError::fields(self.0)),
        }
    }
}

/// `POST /v1/orders`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlaceOrderBody {
    order_id: String,
    customer_id: String,
    store_id: String,
    lines: Vec<LineBody>,
    #[serde(default = "usd")]
    currency: String,
}

fn usd() -> String {
    "USD".to_owned()
}

/// One order line.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineBody {
    item_id: String,
    quantity: u32,
}

impl PlaceOrderBody {
    pub(super) fn validate(self) -> Result<PlaceOrder, ApiError> {
        let mut c = Check::default();
        let order_id = c.id("order_id", OrderId::parse(self.order_id));
        let customer_id = c.id("customer_id", CustomerId::parse(self.customer_id));
        let store_id = c.id("store_id", StoreId::parse(self.store_id));
        if self.lines.is_empty() || self.lines.len() > MAX_LINES {
            c.fail("lines", format!("must have 1 to {MAX_LINES} lines"));
        }
        let mut lines = Vec::with_capacity(self.lines.len());
        for (i, l) in self.lines.into_iter().enumerate() {
            c.range(
                &format!("lines[{i}].quantity"),
                i64::from(l.quantity),
                1,
                i64::from(MAX_QUANTITY),
            );
            if let Some(item_id) = c.id(&format!("lines[{i}].item_id"), ItemId::parse(l.item_id)) {
                lines.push(LineRequest {
                    item_id,
                    quantity: l.quantity,
                });
            }
        }
        if !(self.currency.len() == 3 && self.currency.bytes().all(|b| b.is_ascii_uppercase())) {
            c.fail("currency", "must be a three-letter ISO 4217 code");
        }
        let place = match (order_id, customer_id, store_id) {
            (Some(order_id), Some(customer_id), Some(store_id)) => Some(PlaceOrder {
                order_id,
                customer_id,
                store_id,
                lines,
                currency: self.currency,
            }),
            _ => None,
        };
        c.done(place)
    }
}

/// Statuses a client may move an order to (payment and cancel have their own paths).
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NextStatus {
    /// Barista started.
    Preparing,
    /// Waiting at the counter.
    Ready,
    /// Picked up.
    Completed,
}

impl From<NextStatus> for OrderStatus {
    fn from(s: NextStatus) -> Self {
        match s {
            NextStatus::Preparing => OrderStatus::Preparing,
            NextStatus::Ready => OrderStatus::Ready,
            NextStatus::Completed => OrderStatus::Completed,
        }
    }
}

/// `POST /v1/orders/{id}/status`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdvanceBody {
    pub(super) status: NextStatus,
}

/// `POST /v1/orders/{id}/cancel`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    #[serde(default)]
    reason: String,
}

impl CancelBody {
    pub(super) fn validate(self) -> Result<String, ApiError> {
        let mut c = Check::default();
        c.text("reason", &self.reason, false);
        c.done(Some(self.reason))
    }
}

/// `POST /v1/stores/{store}/inventory/{sku}/restock`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestockBody {
    quantity: i64,
}

impl RestockBody {
    pub(super) fn validate(self) -> Result<StockCommand, ApiError> {
        let mut c = Check::default();
        c.range("quantity", self.quantity, 1, MAX_MOVE);
        c.done(Some(StockCommand::Restock {
            quantity: self.quantity,
        }))
    }
}

/// `POST /v1/stores/{store}/inventory/{sku}/adjust`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustBody {
    delta: i64,
    reason: String,
}

impl AdjustBody {
    pub(super) fn validate(self) -> Result<StockCommand, ApiError> {
        let mut c = Check::default();
        c.range("delta", self.delta, -MAX_MOVE, MAX_MOVE);
        if self.delta == 0 {
            c.fail("delta", "must not be zero");
        }
        c.text("reason", &self.reason, true);
        c.done(Some(StockCommand::Adjust {
            delta: self.delta,
            reason: self.reason,
        }))
    }
}

/// `POST /v1/loyalty/{customer}/earn`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EarnBody {
    points: i64,
    #[serde(default)]
    order_id: Option<String>,
}

impl EarnBody {
    pub(super) fn validate(self) -> Result<LoyaltyCommand, ApiError> {
        let mut c = Check::default();
        c.range("points", self.points, 1, MAX_POINTS);
        let order_id = match self.order_id {
            Some(o) => c.id("order_id", OrderId::parse(o)).map(Some),
            None => Some(None),
        };
        c.done(order_id.map(|order_id| LoyaltyCommand::Earn {
            points: self.points,
            order_id,
        }))
    }
}

/// `POST /v1/loyalty/{customer}/redeem`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemBody {
    points: i64,
}

impl RedeemBody {
    pub(super) fn validate(self) -> Result<LoyaltyCommand, ApiError> {
        let mut c = Check::default();
        c.range("points", self.points, 1, MAX_POINTS);
        c.done(Some(LoyaltyCommand::Redeem { points: self.points }))
    }
}

/// `POST /v1/menu/items`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MenuItemBody {
    item_id: String,
    name: String,
    category: String,
    price_cents: i64,
    #[serde(default)]
    tags: Vec<String>,
}

impl MenuItemBody {
    pub(super) fn validate(self) -> Result<(ItemId, MenuCommand), ApiError> {
        let mut c = Check::default();
        let item_id = c.id("item_id", ItemId::parse(self.item_id));
        c.text("name", &self.name, true);
        c.text("category", &self.category, true);
        c.range("price_cents", self.price_cents, 1, MAX_PRICE.get());
        if self.tags.len() > 20 {
            c.fail("tags", "at most 20 tags");
        }
        for (i, t) in self.tags.iter().enumerate() {
            c.text(&format!("tags[{i}]"), t, true);
        }
        let cmd = MenuCommand::Publish {
            name: self.name,
            category: self.category,
            price: Cents::new(self.price_cents),
            tags: self.tags,
        };
        c.done(item_id.map(|id| (id, cmd)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_field_is_reported_with_its_path() {
        let body: PlaceOrderBody = serde_json::from_value(serde_json::json!({
            "order_id": "", "customer_id": "c 1", "store_id": "s-1",
            "lines": [{"item_id": "latte", "quantity": 0}, {"item_id": "x#y", "quantity": 21}],
            "currency": "usd"
        }))
        .unwrap();
        let err = body.validate().unwrap_err();
        let paths: Vec<&str> = err.fields.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "order_id",
                "customer_id",
                "lines[0].quantity",
                "lines[1].quantity",
                "lines[1].item_id",
                "currency"
            ]
        );
    }
}
