//! Resource names: `infra/names.json`, overridable per name from the environment.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A setting that is missing or unreadable; the process refuses to start with it,
/// naming the variable, rather than failing every request later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    /// A variable the unit needs is not set (or empty).
    #[error("environment variable {0} is not set")]
    Missing(String),
    /// A variable's value is not what it must be.
    #[error("{var}: {reason}")]
    Invalid {
        /// The variable.
        var: String,
        /// What it must be.
        reason: String,
    },
}

/// Names of the stream, tables, queues and databases: `infra/names.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Names {
    /// Free text kept in the JSON file; ignored.
    #[serde(default, rename = "_comment", skip_serializing)]
    pub comment: Option<String>,
    /// AWS region the names live in.
    pub region: String,
    /// Kinesis stream of all domain events.
    pub stream: String,
    /// DynamoDB event store.
    pub events_table: String,
    /// DynamoDB consumer leases and checkpoints.
    pub leases_table: String,
    /// DynamoDB records the consumers parked as poison, with the reason.
    pub parked_table: String,
    /// DynamoDB read model of orders in flight.
    pub active_orders_table: String,
    /// DynamoDB command idempotency records.
    pub idempotency_table: String,
    /// DynamoDB replays: each replay's parameters, watermark and per-segment
    /// checkpoints (never the live consumers' lease table), and the serving pointers.
    pub replays_table: String,
    /// SQS queue of payment requests.
    pub payments_queue: String,
    /// Dead-letter queue behind `payments_queue`.
    pub payments_dlq: String,
    /// Receives before a payment message moves to the DLQ.
    pub payments_max_receive_count: u32,
    /// PostgreSQL database of Aurora (orders, loyalty).
    pub orders_database: String,
    /// The warehouse's database (Redshift; PostgreSQL locally).
    pub analytics_database: String,
    /// The DocumentDB database.
    pub documents_database: String,
    /// CloudWatch namespace of our metrics.
    pub metrics_namespace: String,
}

/// The file itself.
const NAMES_JSON: &str = include_str!("../../names.json");

impl Default for Names {
    fn default() -> Self {
        // The file is part of this crate's source; a parse failure is a build defect
        // caught by the `names_json_parses` test, never a runtime input.
        #[allow(clippy::expect_used)]
        serde_json::from_str(NAMES_JSON).expect("infra/names.json is valid")
    }
}

impl Names {
    /// Every key of the file (the fields above, `_comment` aside), in file order.
    pub fn keys() -> Vec<String> {
        match serde_json::from_str::<serde_json::Map<String, Value>>(NAMES_JSON) {
            Ok(map) => map.keys().filter(|k| !k.starts_with('_')).cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The environment variable that overrides `key`: `CAFE_` and the key in capitals.
    pub fn var(key: &str) -> String {
        format!("CAFE_{}", key.to_ascii_uppercase())
    }

    /// The file's names, each replaced by its `CAFE_<KEY>` variable where `get` has one,
    /// and every key in `required` must come from `get`: a
    /// deployed unit takes the names of what Terraform created, never the defaults.
    pub fn require(required: &[&str], get: impl Fn(&str) -> Option<String>) -> Result<Names, SettingsError> {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        if let Some(missing) = required.iter().map(|k| Names::var(k)).find(|v| get(v).is_none()) {
            return Err(SettingsError::Missing(missing));
        }
        Names::default().overlaid(get)
    }

    /// The `CAFE_<KEY>=value` pairs of `keys`: what a deployment hands a unit (the
    /// local pipeline hands its Lambda processes the same).
    pub fn env(&self, keys: &[&str]) -> Vec<(String, String)> {
        let Ok(Value::Object(map)) = serde_json::to_value(self) else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|k| {
                let value = match map.get(*k)? {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                Some((Names::var(k), value))
            })
            .collect()
    }

    /// These names, each replaced by its `CAFE_<KEY>` variable where `get` has one.
    pub fn overlaid(&self, get: impl Fn(&str) -> Option<String>) -> Result<Names, SettingsError> {
        let invalid = |var: String, reason: String| SettingsError::Invalid { var, reason };
        let Value::Object(mut map) =
            serde_json::to_value(self).map_err(|e| invalid("infra/names.json".into(), e.to_string()))?
        else {
            return Err(invalid("infra/names.json".into(), "not an object".into()));
        };
        for (key, value) in map.iter_mut() {
            let var = Names::var(key);
            let Some(text) = get(&var).filter(|v| !v.trim().is_empty()) else {
                continue;
            };
            *value = match value {
                Value::Number(_) => {
                    let n: u32 = text
                        .trim()
                        .parse()
                        .map_err(|_| invalid(var.clone(), format!("{text:?} is not a whole number")))?;
                    Value::from(n)
                }
                _ => Value::String(text),
            };
        }
        let names: Names =
            serde_json::from_value(Value::Object(map)).map_err(|e| invalid("names".into(), e.to_string()))?;
        Ok(Names {
            comment: self.comment.clone(),
            ..names
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn names_json_parses() {
        let n = Names::default();
        assert_eq!(n.stream, "events");
        assert_eq!(n.payments_dlq, "payments-dlq");
        assert!(Names::keys().contains(&"events_table".to_owned()));
        assert!(!Names::keys().iter().any(|k| k.starts_with('_')));
    }

    #[test]
    fn each_name_is_overridden_by_its_own_variable() {
        let n = Names::default()
            .overlaid(env(&[
                ("CAFE_EVENTS_TABLE", "prod-events"),
                ("CAFE_PAYMENTS_MAX_RECEIVE_COUNT", "7"),
                ("CAFE_STREAM", " "),
            ]))
            .unwrap();
        assert_eq!(n.events_table, "prod-events");
        assert_eq!(n.payments_max_receive_count, 7);
        // Blank is unset, not an empty name.
        assert_eq!(n.stream, "events");
        assert_eq!(n.leases_table, Names::default().leases_table);
    }

    #[test]
    fn a_required_name_must_come_from_the_environment() {
        let err = Names::require(&["events_table", "stream"], env(&[("CAFE_EVENTS_TABLE", "e")])).unwrap_err();
        assert_eq!(err, SettingsError::Missing("CAFE_STREAM".into()));
        let n = Names::require(&["stream"], env(&[("CAFE_STREAM", "s")])).unwrap();
        assert_eq!(n.stream, "s");
    }

    #[test]
    fn a_units_names_go_back_and_forth_through_its_environment() {
        let deployed = Names {
            stream: "prod-events".into(),
            payments_max_receive_count: 9,
            ..Names::default()
        };
        let env = deployed.env(&["stream", "payments_max_receive_count"]);
        assert_eq!(env[0], ("CAFE_STREAM".to_owned(), "prod-events".to_owned()));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
        assert_eq!(
            Names::require(&["stream", "payments_max_receive_count"], get).unwrap(),
            deployed
        );
    }

    #[test]
    fn a_number_that_is_not_one_is_refused_by_name() {
        let err = Names::default()
            .overlaid(env(&[("CAFE_PAYMENTS_MAX_RECEIVE_COUNT", "five")]))
            .unwrap_err();
        assert!(matches!(err, SettingsError::Invalid { ref var, .. } if var == "CAFE_PAYMENTS_MAX_RECEIVE_COUNT"));
    }
}
