//! `cafe token`: bearer tokens for local callers, signed by the local stack's identity
//! provider (its key and JWKS under the state dir, created on first use), so the
//! README's examples and the load generator can act as a customer, staff or HQ.

use std::time::Duration;

use cafe_localstack::StackConfig;
use cafe_producers::auth::token::LocalIssuer;
use cafe_producers::auth::{Caller, Role};

/// A token for `subject` in the role called `role` (staff: of `store`), valid for
/// `valid_for`.
pub fn mint(
    cfg: &StackConfig,
    role: &str,
    subject: &str,
    store: Option<&str>,
    valid_for: Duration,
) -> anyhow::Result<String> {
    let caller = Caller {
        subject: subject.to_owned(),
        role: Role::from_name(role, store).map_err(anyhow::Error::msg)?,
    };
    Ok(LocalIssuer::open(&cfg.auth_dir())?.mint(&caller, valid_for)?)
}
