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

/// Longest free-text field (reasons, names, tags), in characters.
pub const MAX_TEXT: usize = 200;
/// Longest menu category, in characters: a dimension for reports, a word or two.
pub const MAX_CATEGORY: usize = 64;
/// Most UTF-8 bytes one character takes: the warehouse's `VARCHAR(n)` counts bytes on
/// Redshift, so a column holds `n / MAX_CHAR_BYTES` characters of any script (a test
/// holds the warehouse's columns to the limits here).
pub const MAX_CHAR_BYTES: usize = 4;

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
    /// Free text: within `max_chars` characters, and no control characters (NUL,
    /// which no warehouse `VARCHAR` can hold, newlines, escape sequences a terminal or
    /// a log would act on).
    fn text(&mut self, path: &str, v: &str, required: bool, max_chars: usize) {
        if required && v.trim().is_empty() {
            self.fail(path, "must not be empty");
        } else if v.chars().count() > max_chars {
            self.fail(path, format!("at most {max_chars} characters"));
        } else if let Some(c) = v.chars().find(|c| c.is_control()) {
            self.fail(
                path,
                format!("must not contain control characters (found U+{:04X})", u32::from(c)),
            );
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
    /// Chosen by the client, so a retry names the same order.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
    order_id: String,
    /// Must be the caller's own (a customer's token).
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
    customer_id: String,
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
    store_id: String,
    #[serde(deserialize_with = "super::body::objects")]
    #[schema(min_items = 1, max_items = 50)]
    lines: Vec<LineBody>,
    /// ISO 4217.
    #[serde(default = "usd")]
    #[schema(pattern = r"^[A-Z]{3}$", default = "USD")]
    currency: String,
}

fn usd() -> String {
    "USD".to_owned()
}

/// One order line.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LineBody {
    /// A published menu item.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
    item_id: String,
    #[schema(minimum = 1, maximum = 20)]
    #[serde(deserialize_with = "super::body::whole")]
    quantity: u32,
}

impl PlaceOrderBody {
    pub(super) fn validate(self) -> Result<PlaceOrder, ApiError> {
        let mut c = Check::default();
        let order_id = c.id("order_id", OrderId::parse_addressable(self.order_id));
        let customer_id = c.id("customer_id", CustomerId::parse_addressable(self.customer_id));
        let store_id = c.id("store_id", StoreId::parse_addressable(self.store_id));
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
            if let Some(item_id) = c.id(&format!("lines[{i}].item_id"), ItemId::parse_addressable(l.item_id)) {
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
    #[schema(max_length = 200, pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$")]
    reason: String,
}

impl CancelBody {
    pub(super) fn validate(self) -> Result<String, ApiError> {
        let mut c = Check::default();
        c.text("reason", &self.reason, false, MAX_TEXT);
        c.done(Some(self.reason))
    }
}

/// `POST /v1/stores/{store}/inventory/{sku}/restock`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestockBody {
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(deserialize_with = "super::body::whole")]
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
    /// Not zero (a zero adjustment is refused as a business rule, 422).
    #[schema(minimum = -1_000_000, maximum = 1_000_000)]
    #[serde(deserialize_with = "super::body::whole")]
    delta: i64,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    reason: String,
}

impl AdjustBody {
    pub(super) fn validate(self) -> Result<StockCommand, ApiError> {
        let mut c = Check::default();
        // Zero is in range but changes nothing: the aggregate refuses it (422).
        c.range("delta", self.delta, -MAX_MOVE, MAX_MOVE);
        c.text("reason", &self.reason, true, MAX_TEXT);
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
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(deserialize_with = "super::body::whole")]
    points: i64,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
    order_id: Option<String>,
}

impl EarnBody {
    pub(super) fn validate(self) -> Result<LoyaltyCommand, ApiError> {
        let mut c = Check::default();
        c.range("points", self.points, 1, MAX_POINTS);
        let order_id = match self.order_id {
            Some(o) => c.id("order_id", OrderId::parse_addressable(o)).map(Some),
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
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(deserialize_with = "super::body::whole")]
    points: i64,
}

impl RedeemBody {
    pub(super) fn validate(self) -> Result<LoyaltyCommand, ApiError> {
        let mut c = Check::default();
        c.range("points", self.points, 1, MAX_POINTS);
        c.done(Some(LoyaltyCommand::Redeem { points: self.points }))
    }
}

/// A menu item's tag, as the document describes it (the field is a `String`).
#[derive(ToSchema)]
#[schema(
    min_length = 1,
    max_length = 200,
    pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
)]
#[allow(dead_code)] // Only its schema is used.
pub struct Tag(String);

/// `POST /v1/menu/items`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MenuItemBody {
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
    item_id: String,
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    name: String,
    /// A report dimension.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    category: String,
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(deserialize_with = "super::body::whole")]
    price_cents: i64,
    #[serde(default)]
    #[schema(max_items = 20, value_type = Vec<Tag>)]
    tags: Vec<String>,
}

impl MenuItemBody {
    pub(super) fn validate(self) -> Result<(ItemId, MenuCommand), ApiError> {
        let mut c = Check::default();
        let item_id = c.id("item_id", ItemId::parse_addressable(self.item_id));
        c.text("name", &self.name, true, MAX_TEXT);
        c.text("category", &self.category, true, MAX_CATEGORY);
        c.range("price_cents", self.price_cents, 1, MAX_PRICE.get());
        if self.tags.len() > 20 {
            c.fail("tags", "at most 20 tags");
        }
        for (i, t) in self.tags.iter().enumerate() {
            c.text(&format!("tags[{i}]"), t, true, MAX_TEXT);
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
