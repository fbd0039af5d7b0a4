//! `cafe token`: bearer tokens for local callers, signed by the local stack's identity
//! provider (its key and JWKS under the state dir, created on first use), so the
//! README's examples and the load generator can act as a customer, staff or HQ.

use std::time::Duration;

use cafe_localstack::StackConfig;
use cafe_producers::auth::token::{KeyError, LocalIssuer};
use cafe_producers::auth::{Caller, Role};

/// The roles, as the command line names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RoleName {
    /// A customer (`--sub` is their customer id).
    Customer,
    /// Staff of `--store`.
    Staff,
    /// Headquarters.
    Hq,
    /// An operator (metrics, dashboards).
    Operator,
}

/// A token for `subject` in `role` (staff: of `store`), valid for `valid_for`.
pub fn mint(
    cfg: &StackConfig,
    role: RoleName,
    subject: &str,
    store: Option<&str>,
    valid_for: Duration,
) -> Result<String, KeyError> {
    let role = match role {
        RoleName::Customer => Role::Customer,
        RoleName::Staff => Role::Staff {
            store: store.unwrap_or_default().to_owned(),
        },
        RoleName::Hq => Role::Headquarters,
        RoleName::Operator => Role::Operator,
    };
    let caller = Caller {
        subject: subject.to_owned(),
        role,
    };
    LocalIssuer::open(&cfg.auth_dir())?.mint(&caller, valid_for)
}
