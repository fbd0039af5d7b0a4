//! Who may do what: the authorization policy of the command and query API, as a pure
//! function of the caller and the action, so every rule is a table row in a unit test.
//!
//! The caller comes from a verified token's claims (behind API Gateway its JWT
//! authorizer verified it and the function reads the claims; locally the server
//! verifies it itself); the action is the route with whatever it owns already
//! resolved: a command on an existing order names the order's customer and store,
//! which the handler knows once it has loaded the order, so one rule covers both the
//! order's creation and everything after.
//!
//! Three kinds of caller, as a coffee chain has them:
//! - a **customer** places orders, earns and redeems points, and reads, for themselves;
//! - **staff** of a store advance and cancel that store's orders, restock and adjust its
//!   inventory, and read its orders and inventory;
//! - **headquarters** publishes and retires menu items and acts on any store; it also
//!   runs the hourly loyalty recalculation (earning points for anyone);
//!
//! and the **operator**, who reads the metrics and the lag dashboard and sends no command.
//! Anyone with a valid token reads the menu.
//!
//! [`token`] turns a bearer token into a [`Caller`].

#[cfg(feature = "jwt")]
pub mod token;

/// What a verified token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's subject: a customer id for a customer, a person's id otherwise.
    pub subject: String,
    /// What they are.
    pub role: Role,
}

impl Caller {
    /// Who they are as one string, role and store included, so that the same subject
    /// in two roles (or at two stores) is two callers: the key of their rate limit and
    /// the scope of their idempotency keys.
    pub fn key(&self) -> String {
        match &self.role {
            Role::Staff { store } => format!("staff@{store}:{}", self.subject),
            role => format!("{}:{}", role.name(), self.subject),
        }
    }
}

/// The kinds of caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A customer, acting for `Caller::subject`.
    Customer,
    /// Staff of one store.
    Staff {
        /// Their store.
        store: String,
    },
    /// Headquarters.
    Headquarters,
    /// An operator (metrics, dashboards).
    Operator,
}

/// What a request does, with what it touches resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// `POST /v1/orders` for `customer` at `store`.
    PlaceOrder {
        /// The order's customer (from the body).
        customer: &'a str,
        /// The order's store (from the body).
        store: &'a str,
    },
    /// `POST /v1/orders/{id}/status` or `/cancel` on an order of `store`.
    ChangeOrder {
        /// The order's customer.
        customer: &'a str,
        /// The order's store.
        store: &'a str,
        /// A cancellation (rather than a status change).
        cancel: bool,
    },
    /// `POST /v1/stores/{store}/inventory/{sku}/restock` or `/adjust`.
    ChangeInventory {
        /// The store.
        store: &'a str,
    },
    /// `POST /v1/loyalty/{customer}/earn`.
    Earn {
        /// Whose points.
        customer: &'a str,
    },
    /// `POST /v1/loyalty/{customer}/redeem`.
    Redeem {
        /// Whose points.
        customer: &'a str,
    },
    /// `POST /v1/menu/items` (publish, change or retire).
    ChangeMenu,
    /// `GET /v1/orders/{id}` of an order of `customer` at `store`.
    ReadOrder {
        /// The order's customer.
        customer: &'a str,
        /// The order's store.
        store: &'a str,
    },
    /// `GET /v1/customers/{customer}/orders` or `GET /v1/loyalty/{customer}`.
    ReadCustomer {
        /// Whose.
        customer: &'a str,
    },
    /// `GET /v1/stores/{store}/inventory`.
    ReadInventory {
        /// The store.
        store: &'a str,
    },
    /// `GET /v1/menu/items`.
    ReadMenu,
    /// `/metrics`, `/dashboard`, `/v1/lag`.
    Observe,
}

/// Why a caller is refused (answered 403, the reason in the JSON body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The role never does this.
    #[error("the {role} role may not {action}")]
    Role {
        /// The caller's role.
        role: &'static str,
        /// What was asked.
        action: &'static str,
    },
    /// The role does this, but not for what the request touches.
    #[error("the {role} role may {action} only for {scope}")]
    NotTheirs {
        /// The caller's role.
        role: &'static str,
        /// What was asked.
        action: &'static str,
        /// What they may do it for.
        scope: &'static str,
    },
}

/// The roles' names, as tokens carry them in the `role` claim.
pub const ROLE_NAMES: [&str; 4] = ["customer", "staff", "hq", "operator"];

/// Why a request is not authenticated (answered 401 with `WWW-Authenticate`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    /// No bearer token at all.
    #[error("no bearer token")]
    Missing,
    /// A token that does not verify: signature, algorithm, key, issuer, audience, time.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A verified token whose claims name no caller we know.
    #[error("token claims: {0}")]
    Claims(String),
}

/// The caller a token's claims name: `sub`, `role` (`customer`, `staff`, `hq`,
/// `operator`) and, for staff, `store`. API Gateway hands its authorizer's claims over
/// as strings, a decoded token as JSON; both read through `claim`.
pub fn caller_from_claims<'a>(claim: impl Fn(&str) -> Option<&'a str>) -> Result<Caller, Unauthenticated> {
    let missing = |name: &str| Unauthenticated::Claims(format!("no {name}"));
    let subject = claim("sub").filter(|s| !s.is_empty()).ok_or_else(|| missing("sub"))?;
    let name = claim("role").ok_or_else(|| missing("role"))?;
    let role = Role::from_name(name, claim("store")).map_err(Unauthenticated::Claims)?;
    Ok(Caller {
        subject: subject.to_owned(),
        role,
    })
}

impl Role {
    /// The role called `name` ([`ROLE_NAMES`]); staff need their `store`. Err says
    /// what is missing or unknown.
    pub fn from_name(name: &str, store: Option<&str>) -> Result<Role, String> {
        Ok(match name {
            "customer" => Role::Customer,
            "staff" => Role::Staff {
                store: store
                    .filter(|s| !s.is_empty())
                    .ok_or("no store for a staff caller")?
                    .to_owned(),
            },
            "hq" => Role::Headquarters,
            "operator" => Role::Operator,
            other => return Err(format!("unknown role {other:?}")),
        })
    }

    /// The role's name, as tokens carry it in the `role` claim.
    pub fn name(&self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Staff { .. } => "staff",
            Role::Headquarters => "hq",
            Role::Operator => "operator",
        }
    }
}

impl Action<'_> {
    /// What it does, for a refusal's message.
    pub fn name(&self) -> &'static str {
        match self {
            Action::PlaceOrder { .. } => "place orders",
            Action::ChangeOrder { cancel: true, .. } => "cancel orders",
            Action::ChangeOrder { cancel: false, .. } => "change an order's status",
            Action::ChangeInventory { .. } => "change inventory",
            Action::Earn { .. } => "earn points",
            Action::Redeem { .. } => "redeem points",
            Action::ChangeMenu => "change the menu",
            Action::ReadOrder { .. } => "read orders",
            Action::ReadCustomer { .. } => "read a customer's orders or points",
            Action::ReadInventory { .. } => "read inventory",
            Action::ReadMenu => "read the menu",
            Action::Observe => "read metrics or dashboards",
        }
    }
}

/// Who a tool or a test sends a request as (the load generator, the test clients):
/// the customer for their orders (`customer` from the body) and points, a store's
/// staff for its inventory, an operator for the observers' routes, headquarters for
/// the rest (the menu, order status changes, reads across stores). Not used by the
/// server: what a caller may do is [`authorize`]'s alone.
pub fn sender(post: bool, path: &str, customer: Option<&str>) -> Caller {
    let person = |subject: &str, role: Role| Caller {
        subject: subject.to_owned(),
        role,
    };
    let segments: Vec<&str> = path.split('?').next().unwrap_or_default().split('/').collect();
    match (post, segments.as_slice()) {
        (true, ["", "v1", "orders"]) => person(customer.unwrap_or_default(), Role::Customer),
        (_, ["", "v1", "loyalty", customer, ..]) | (false, ["", "v1", "customers", customer, "orders"]) => {
            person(customer, Role::Customer)
        }
        (_, ["", "v1", "stores", store, "inventory", ..]) => person(
            &format!("staff-{store}"),
            Role::Staff {
                store: (*store).to_owned(),
            },
        ),
        (false, ["", "metrics"] | ["", "v1", "lag"] | ["", "dashboard", ..]) => person("sre-1", Role::Operator),
        _ => person("hq-1", Role::Headquarters),
    }
}

/// Whether `caller` may do `action`.
pub fn authorize(caller: &Caller, action: &Action<'_>) -> Result<(), Refused> {
    use Action as A;
    let role = caller.role.name();
    let never = || {
        Err(Refused::Role {
            role,
            action: action.name(),
        })
    };
    let only = |allowed: bool, scope: &'static str| {
        if allowed {
            Ok(())
        } else {
            Err(Refused::NotTheirs {
                role,
                action: action.name(),
                scope,
            })
        }
    };
    let me = caller.subject.as_str();
    match (&caller.role, action) {
        (_, A::ReadMenu) => Ok(()),
        (Role::Operator, A::Observe) => Ok(()),
        (Role::Operator, _) | (_, A::Observe) => never(),

        (Role::Customer, A::PlaceOrder { customer, .. })
        | (Role::Customer, A::Earn { customer })
        | (Role::Customer, A::Redeem { customer })
        | (Role::Customer, A::ReadOrder { customer, .. })
        | (Role::Customer, A::ReadCustomer { customer }) => only(*customer == me, "themselves"),
        (Role::Customer, _) => never(),

        (Role::Staff { store: mine }, A::ChangeOrder { store, .. })
        | (Role::Staff { store: mine }, A::ChangeInventory { store })
        | (Role::Staff { store: mine }, A::ReadOrder { store, .. })
        | (Role::Staff { store: mine }, A::ReadInventory { store }) => only(store == mine, "their own store"),
        (Role::Staff { .. }, _) => never(),

        (
            Role::Headquarters,
            A::ChangeMenu
            | A::ChangeOrder { .. }
            | A::ChangeInventory { .. }
            | A::Earn { .. }
            | A::ReadOrder { .. }
            | A::ReadCustomer { .. }
            | A::ReadInventory { .. },
        ) => Ok(()),
        (Role::Headquarters, A::PlaceOrder { .. } | A::Redeem { .. }) => never(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, subject: &str) -> Caller {
        Caller {
            subject: subject.into(),
            role,
        }
    }

    /// Every action, touching customer `c` and store `s`.
    fn actions<'a>(c: &'a str, s: &'a str) -> Vec<Action<'a>> {
        vec![
            Action::PlaceOrder { customer: c, store: s },
            Action::ChangeOrder {
                customer: c,
                store: s,
                cancel: false,
            },
            Action::ChangeOrder {
                customer: c,
                store: s,
                cancel: true,
            },
            Action::ChangeInventory { store: s },
            Action::Earn { customer: c },
            Action::Redeem { customer: c },
            Action::ChangeMenu,
            Action::ReadOrder { customer: c, store: s },
            Action::ReadCustomer { customer: c },
            Action::ReadInventory { store: s },
            Action::ReadMenu,
            Action::Observe,
        ]
    }

    /// The expected decisions, in `actions`' order: (own customer and store, another's).
    const CUSTOMER: [(bool, bool); 12] = [
        (true, false),  // place
        (false, false), // status
        (false, false), // cancel
        (false, false), // inventory
        (true, false),  // earn
        (true, false),  // redeem
        (false, false), // menu
        (true, false),  // read order
        (true, false),  // read customer
        (false, false), // read inventory
        (true, true),   // read menu
        (false, false), // observe
    ];
    const STAFF: [(bool, bool); 12] = [
        (false, false),
        (true, false),
        (true, false),
        (true, false),
        (false, false),
        (false, false),
        (false, false),
        (true, false),
        (false, false),
        (true, false),
        (true, true),
        (false, false),
    ];
    const HQ: [(bool, bool); 12] = [
        (false, false),
        (true, true),
        (true, true),
        (true, true),
        (true, true),
        (false, false),
        (true, true),
        (true, true),
        (true, true),
        (true, true),
        (true, true),
        (false, false),
    ];
    const OPERATOR: [(bool, bool); 12] = [
        (false, false),
        (false, false),
        (false, false),
        (false, false),
        (false, false),
        (false, false),
        (false, false),
        (false, false),
        (false, false),
        (false, false),
        (true, true),
        (true, true),
    ];

    #[test]
    fn every_role_and_action_for_their_own_and_for_another() {
        let table = [
            (caller(Role::Customer, "cust-1"), CUSTOMER),
            (
                caller(
                    Role::Staff {
                        store: "store-00001".into(),
                    },
                    "barista-9",
                ),
                STAFF,
            ),
            (caller(Role::Headquarters, "hq-1"), HQ),
            (caller(Role::Operator, "sre-1"), OPERATOR),
        ];
        for (who, expected) in table {
            let own = actions("cust-1", "store-00001");
            let other = actions("cust-2", "store-00002");
            for ((own, other), (may_own, may_other)) in own.iter().zip(&other).zip(expected) {
                assert_eq!(authorize(&who, own).is_ok(), may_own, "{who:?} {own:?}");
                assert_eq!(authorize(&who, other).is_ok(), may_other, "{who:?} {other:?}");
            }
        }
    }

    #[test]
    fn the_tools_send_each_request_as_a_caller_allowed_to() {
        let allowed = |post: bool, path: &str, action: Action<'_>| {
            let who = sender(post, path, Some("cust-1"));
            assert!(authorize(&who, &action).is_ok(), "{path} as {who:?}");
        };
        let order = Action::ReadOrder {
            customer: "cust-1",
            store: "store-00001",
        };
        allowed(
            true,
            "/v1/orders",
            Action::PlaceOrder {
                customer: "cust-1",
                store: "store-00001",
            },
        );
        allowed(true, "/v1/loyalty/cust-1/redeem", Action::Redeem { customer: "cust-1" });
        allowed(true, "/v1/loyalty/cust-1/earn", Action::Earn { customer: "cust-1" });
        let restock = "/v1/stores/store-00001/inventory/sku-1/restock";
        allowed(true, restock, Action::ChangeInventory { store: "store-00001" });
        allowed(true, "/v1/menu/items", Action::ChangeMenu);
        let status = Action::ChangeOrder {
            customer: "cust-1",
            store: "store-00001",
            cancel: false,
        };
        allowed(true, "/v1/orders/o-1/status", status);
        allowed(false, "/v1/orders/o-1?min_version=2", order);
        allowed(
            false,
            "/v1/customers/cust-1/orders",
            Action::ReadCustomer { customer: "cust-1" },
        );
        allowed(
            false,
            "/v1/stores/store-00001/inventory",
            Action::ReadInventory { store: "store-00001" },
        );
        allowed(false, "/v1/lag", Action::Observe);
        allowed(false, "/metrics", Action::Observe);
    }

    #[test]
    fn every_role_name_names_its_role() {
        for name in ROLE_NAMES {
            assert_eq!(Role::from_name(name, Some("store-00001")).unwrap().name(), name);
        }
        assert!(Role::from_name("staff", None).is_err());
        assert!(Role::from_name("admin", None).is_err());
    }

    #[test]
    fn a_refusal_says_whether_the_role_or_the_scope_is_wrong() {
        let staff = caller(
            Role::Staff {
                store: "store-00001".into(),
            },
            "barista-9",
        );
        assert_eq!(
            authorize(&staff, &Action::ChangeInventory { store: "store-00002" })
                .unwrap_err()
                .to_string(),
            "the staff role may change inventory only for their own store"
        );
        assert_eq!(
            authorize(&staff, &Action::ChangeMenu).unwrap_err().to_string(),
            "the staff role may not change the menu"
        );
        // A customer's id that merely starts like theirs is someone else's.
        let customer = caller(Role::Customer, "cust-1");
        assert!(authorize(&customer, &Action::Redeem { customer: "cust-10" }).is_err());
    }
}
