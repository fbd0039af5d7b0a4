//! The function's settings, from its environment (Lambda configuration in AWS, the
//! local pipeline's `cafe run` here). A setting that cannot work stops the function at
//! init with the variable named, rather than failing every message later.
//!
//! - `CAFE_EVENTS_TABLE`, `CAFE_IDEMPOTENCY_TABLE`, `CAFE_STREAM`: where the order's
//!   events live and are published (required);
//! - `CAFE_IDEMPOTENCY_LEASE_SECS`: how long a claim holds (default 60; keep it above the
//!   function timeout);
//! - the simulated gateway's rules: `CAFE_GATEWAY_LIMIT_CENTS` (default 50000),
//!   `CAFE_GATEWAY_BLOCKED` (customer ids, comma-separated), `CAFE_GATEWAY_FLAKY`
//!   (`customer:failures`, comma-separated), `CAFE_GATEWAY_LATENCY_MS` (how long each
//!   charge takes, default 0), `CAFE_GATEWAY_LEDGER` (a file the gateway appends each
//!   decision to, for the charge-twice audit; none by default).

use std::time::Duration;

use crate::gateway::{Ledger, SimulatedGateway};

/// A setting that is missing or unreadable (named by its variable).
pub use cafe_settings::SettingsError as ConfigError;
use cafe_settings::vars;

/// Everything the function needs to start.
#[derive(Debug)]
pub struct PaymentConfig {
    /// The event store's table.
    pub events_table: String,
    /// The idempotency table (shared with the command side, keys prefixed).
    pub idempotency_table: String,
    /// The events stream.
    pub stream: String,
    /// How long an idempotency claim holds.
    pub lease: Duration,
    /// The gateway.
    pub gateway: SimulatedGateway,
    /// The CloudWatch namespace of the function's EMF metrics (`CAFE_METRICS_NAMESPACE`,
    /// `infra/names.json`'s `metrics_namespace`).
    pub metrics_namespace: String,
}

impl PaymentConfig {
    /// Reads the settings through `var` (`std::env::var` in the function): the names
    /// its unit lists ([`cafe_settings::units::PAYMENT_FUNCTION`]) must be set.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Result<PaymentConfig, ConfigError> {
        let names = cafe_settings::units::PAYMENT_FUNCTION.names_from(&var)?;
        let invalid = |k: &str, reason: String| ConfigError::Invalid {
            var: k.to_owned(),
            reason,
        };
        let number = |k: &'static str, default: i64| -> Result<i64, ConfigError> {
            match var(k) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .map_err(|_| invalid(k, format!("{v:?} is not a whole number"))),
            }
        };
        let lease = number(vars::IDEMPOTENCY_LEASE_SECS, 60)?;
        if lease <= 0 {
            return Err(invalid(vars::IDEMPOTENCY_LEASE_SECS, "must be positive".into()));
        }
        let mut gateway = SimulatedGateway::new(number(vars::GATEWAY_LIMIT_CENTS, 50_000)?);
        let latency = number(vars::GATEWAY_LATENCY_MS, 0)?;
        gateway.latency = Duration::from_millis(
            u64::try_from(latency).map_err(|_| invalid(vars::GATEWAY_LATENCY_MS, "must not be negative".into()))?,
        );
        if let Some(path) = var(vars::GATEWAY_LEDGER).filter(|v| !v.trim().is_empty()) {
            let ledger = Ledger::open(std::path::Path::new(&path))
                .map_err(|e| invalid(vars::GATEWAY_LEDGER, format!("{path}: {e}")))?;
            gateway = gateway.with_ledger(ledger);
        }
        for customer in list(var(vars::GATEWAY_BLOCKED)) {
            gateway = gateway.block(customer);
        }
        for entry in list(var(vars::GATEWAY_FLAKY)) {
            let not_flaky = || invalid(vars::GATEWAY_FLAKY, format!("{entry:?} is not customer:failures"));
            let (customer, failures) = entry.rsplit_once(':').ok_or_else(not_flaky)?;
            gateway = gateway.flaky(customer, failures.parse().map_err(|_| not_flaky())?);
        }
        Ok(PaymentConfig {
            events_table: names.events_table,
            idempotency_table: names.idempotency_table,
            stream: names.stream,
            lease: Duration::from_secs(lease.unsigned_abs()),
            gateway,
            metrics_namespace: names.metrics_namespace,
        })
    }
}

fn list(value: Option<String>) -> Vec<String> {
    value
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    const BASE: [(&str, &str); 4] = [
        ("CAFE_EVENTS_TABLE", "events"),
        ("CAFE_IDEMPOTENCY_TABLE", "idempotency"),
        ("CAFE_METRICS_NAMESPACE", "CloudCafe"),
        ("CAFE_STREAM", "cafe-events"),
    ];

    #[tokio::test]
    async fn defaults_and_gateway_rules() {
        let mut pairs = BASE.to_vec();
        pairs.extend([
            ("CAFE_GATEWAY_LIMIT_CENTS", "1000"),
            ("CAFE_GATEWAY_BLOCKED", "c-9, c-8"),
            ("CAFE_GATEWAY_FLAKY", "c-7:2"),
        ]);
        let cfg = PaymentConfig::from_env(env(&pairs)).unwrap();
        assert_eq!(cfg.lease, Duration::from_secs(60));
        assert_eq!(cfg.gateway.limit_cents, 1000);
        assert_eq!(cfg.stream, "cafe-events");
        // The rules took effect: both blocked customers are declined, the flaky one
        // fails twice, and anyone else is authorised.
        use crate::gateway::{Charge, Gateway};
        let gateway = &cfg.gateway;
        let charge = async |customer: &str, key: &str, delivery: u32| {
            let request = cafe_events::payment::PaymentRequest {
                order_id: "o-1".into(),
                customer_id: customer.into(),
                amount_cents: 500,
                currency: "USD".into(),
                attempt: 1,
                idempotency_key: key.into(),
            };
            gateway.charge(&request, delivery).await
        };
        for blocked in ["c-9", "c-8"] {
            assert!(matches!(charge(blocked, blocked, 1).await, Ok(Charge::Declined { .. })));
        }
        assert!(charge("c-7", "k7", 1).await.is_err());
        assert!(charge("c-7", "k7", 2).await.is_err());
        assert!(matches!(charge("c-7", "k7", 3).await, Ok(Charge::Authorized { .. })));
        assert!(matches!(charge("c-1", "k1", 1).await, Ok(Charge::Authorized { .. })));
    }

    #[test]
    fn what_cannot_work_is_named() {
        assert_eq!(
            PaymentConfig::from_env(env(&BASE[..3])).unwrap_err(),
            ConfigError::Missing("CAFE_STREAM".to_owned())
        );
        for (var, value) in [
            ("CAFE_GATEWAY_FLAKY", "c-7"),
            ("CAFE_GATEWAY_FLAKY", "c-7:x"),
            ("CAFE_GATEWAY_LIMIT_CENTS", "lots"),
            ("CAFE_IDEMPOTENCY_LEASE_SECS", "0"),
            ("CAFE_GATEWAY_LATENCY_MS", "-1"),
            ("CAFE_GATEWAY_LATENCY_MS", "soon"),
        ] {
            let mut pairs = BASE.to_vec();
            pairs.push((var, value));
            match PaymentConfig::from_env(env(&pairs)) {
                Err(ConfigError::Invalid { var: named, .. }) => assert_eq!(named, var),
                other => panic!("{var}={value}: {other:?}"),
            }
        }
    }
}
