//! The MenuItem aggregate.
//!
//! Rules: a published item has a name, a category and a positive price; publishing
//! again updates it (seasonal price changes); a retired item can be published again;
//! retiring an item that is not on the menu is refused. Orders may only name items that
//! are currently published.

use cafe_events::proto::menu::v1::{MenuItemPublished, MenuItemRetired};
use cafe_events::{Cents, DomainEvent, ItemId};

use super::Aggregate;

/// Highest price we accept for one item ($10,000), a guard against unit mistakes.
pub const MAX_PRICE: Cents = Cents::new(1_000_000);

/// A menu item's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MenuItem {
    /// Its price while published; `None` when never published or retired.
    pub price: Option<Cents>,
}

/// What can be asked of a menu item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MenuCommand {
    /// Put it on the menu (or update it).
    Publish {
        /// Display name.
        name: String,
        /// Category, e.g. `espresso`.
        category: String,
        /// Price, 1 cent to [`MAX_PRICE`].
        price: Cents,
        /// Free-form tags.
        tags: Vec<String>,
    },
    /// Take it off the menu.
    Retire {
        /// Why.
        reason: String,
    },
}

/// Why a menu command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MenuRejection {
    /// Empty name or category.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// Not a positive price within bounds.
    #[error("price must be 0.01 to {MAX_PRICE}, got {0}")]
    Price(Cents),
    /// Retiring an item that is not on the menu.
    #[error("item is not on the menu")]
    NotPublished,
}

impl super::Rule for MenuRejection {
    fn code(&self) -> &'static str {
        match self {
            MenuRejection::Empty(_) => "empty_field",
            MenuRejection::Price(_) => "price",
            MenuRejection::NotPublished => "not_published",
        }
    }
    fn is_not_found(&self) -> bool {
        matches!(self, MenuRejection::NotPublished)
    }
}

impl Aggregate for MenuItem {
    type Command = (ItemId, MenuCommand);
    type Context = ();
    type Rejection = MenuRejection;

    fn apply(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::MenuItemPublished(e) => self.price = Some(Cents::new(e.price_cents)),
            DomainEvent::MenuItemRetired(_) => self.price = None,
            _ => {}
        }
    }

    fn decide(&self, (item, command): &Self::Command, _: &()) -> Result<Vec<DomainEvent>, MenuRejection> {
        match command {
            MenuCommand::Publish {
                name,
                category,
                price,
                tags,
            } => {
                if name.trim().is_empty() {
                    return Err(MenuRejection::Empty("name"));
                }
                if category.trim().is_empty() {
                    return Err(MenuRejection::Empty("category"));
                }
                if *price < Cents::new(1) || *price > MAX_PRICE {
                    return Err(MenuRejection::Price(*price));
                }
                Ok(vec![DomainEvent::MenuItemPublished(MenuItemPublished {
                    item_id: item.to_string(),
                    name: name.clone(),
                    category: category.clone(),
                    price_cents: price.get(),
                    tags: tags.clone(),
                })])
            }
            MenuCommand::Retire { reason } => {
                if self.price.is_none() {
                    return Err(MenuRejection::NotPublished);
                }
                Ok(vec![DomainEvent::MenuItemRetired(MenuItemRetired {
                    item_id: item.to_string(),
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

    fn c(cmd: MenuCommand) -> (ItemId, MenuCommand) {
        (ItemId::parse("latte").unwrap(), cmd)
    }
    fn publish(price: i64) -> MenuCommand {
        MenuCommand::Publish {
            name: "Latte".into(),
            category: "espresso".into(),
            price: Cents::new(price),
            tags: vec![],
        }
    }

    #[test]
    fn publish_update_retire_republish() {
        let mut h = given_when::<MenuItem>(&[], c(publish(500)), &()).unwrap();
        h.extend(given_when::<MenuItem>(&h, c(publish(525)), &()).unwrap());
        assert_eq!(MenuItem::replay(&h).price, Some(Cents::new(525)));
        h.extend(
            given_when::<MenuItem>(
                &h,
                c(MenuCommand::Retire {
                    reason: "seasonal".into(),
                }),
                &(),
            )
            .unwrap(),
        );
        assert_eq!(MenuItem::replay(&h).price, None);
        assert_eq!(
            given_when::<MenuItem>(&h, c(MenuCommand::Retire { reason: String::new() }), &()),
            Err(MenuRejection::NotPublished)
        );
        assert!(given_when::<MenuItem>(&h, c(publish(550)), &()).is_ok());
    }

    #[test]
    fn bad_publications_are_refused() {
        assert_eq!(
            given_when::<MenuItem>(&[], c(publish(0)), &()),
            Err(MenuRejection::Price(Cents::new(0)))
        );
        assert_eq!(
            given_when::<MenuItem>(&[], c(publish(-1)), &()),
            Err(MenuRejection::Price(Cents::new(-1)))
        );
        assert!(given_when::<MenuItem>(&[], c(publish(MAX_PRICE.get() + 1)), &()).is_err());
        let blank = MenuCommand::Publish {
            name: " ".into(),
            category: "x".into(),
            price: Cents::new(1),
            tags: vec![],
        };
        assert_eq!(
            given_when::<MenuItem>(&[], c(blank), &()),
            Err(MenuRejection::Empty("name"))
        );
    }
}
