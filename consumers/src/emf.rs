//! CloudWatch Embedded Metric Format: metrics as one JSON log line, which CloudWatch
//! Logs turns into metrics. What the Lambda functions use instead of PutMetricData, so
//! no API call (and no added latency or failure) sits on the invoke path.
//!
//! [`line`] writes a line; [`validate`] checks a line against the format's rules (the
//! `_aws` object, its `CloudWatchMetrics` directives, every dimension and metric named
//! there present at the root with the right type), and is what the tests hold every
//! emitted line to.
//!
//! The names are the consumer runtime's catalogue's where they mean the same thing
//! (records, parked, end-to-end latency) and [`LAMBDA_METRICS`] for the payment
//! function's own.

use serde_json::{Map, Value, json};

use crate::metrics::Unit;

/// Payment messages settled (charged, declined or already settled).
pub const PAYMENTS_SETTLED: &str = "payments_settled";
/// Payment messages that failed for now (SQS redelivers them).
pub const PAYMENTS_RETRIED: &str = "payments_retried";
/// Payment messages refused for good (they end in the DLQ).
pub const PAYMENTS_REFUSED: &str = "payments_refused";

/// How long an instance of the function took from its process's start to being ready
/// for its first invocation (its init phase, which AWS reports as the REPORT line's
/// Init Duration), sent once, with the instance's first batch: the Lambda emulator
/// here reports no init phase, and a cold-start avalanche is measured in it.
pub const INIT_DURATION: &str = "init_duration";

/// The Lambda-only metrics: (name, unit).
pub const LAMBDA_METRICS: &[(&str, Unit)] = &[
    (PAYMENTS_SETTLED, Unit::Count),
    (PAYMENTS_RETRIED, Unit::Count),
    (PAYMENTS_REFUSED, Unit::Count),
    (INIT_DURATION, Unit::Milliseconds),
];

/// One metric's value(s) in a line.
#[derive(Debug, Clone, PartialEq)]
pub enum Observed {
    /// A single value.
    One(f64),
    /// Several values (a distribution; at most 100 per line).
    Many(Vec<f64>),
}

/// Most values one metric may carry in a line.
pub const MAX_VALUES: usize = 100;
/// Most metrics one directive may name.
pub const MAX_METRICS: usize = 100;

/// An EMF line at `timestamp_ms` in `namespace`, with `dimensions` (one dimension set,
/// every key also a root field) and `metrics` (name, unit, value). Distributions longer
/// than [`MAX_VALUES`] keep their first values: the line stays valid, and the count
/// metrics beside them are exact.
pub fn line(
    namespace: &str,
    dimensions: &[(&str, &str)],
    metrics: &[(&str, Unit, Observed)],
    timestamp_ms: i64,
) -> String {
    let mut root = Map::new();
    for (k, v) in dimensions {
        root.insert((*k).to_owned(), json!(v));
    }
    let mut defs = Vec::new();
    for (name, unit, value) in metrics.iter().take(MAX_METRICS) {
        defs.push(json!({ "Name": name, "Unit": unit.cloudwatch() }));
        let v = match value {
            Observed::One(v) => json!(v),
            Observed::Many(vs) => json!(vs.iter().take(MAX_VALUES).collect::<Vec<_>>()),
        };
        root.insert((*name).to_owned(), v);
    }
    root.insert(
        "_aws".to_owned(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimensions.iter().map(|(k, _)| *k).collect::<Vec<_>>()],
                "Metrics": defs,
            }],
        }),
    );
    Value::Object(root).to_string()
}

/// The values of `metric` in `line` when it is a valid EMF line whose directives name
/// that metric: what CloudWatch would take from it (so a local run can read a
/// function's metrics back from its log). None for any other line.
pub fn values(line: &str, metric: &str) -> Option<Vec<f64>> {
    let root: Value = serde_json::from_str(line).ok()?;
    check(&root).ok()?;
    let declared = root["_aws"]["CloudWatchMetrics"]
        .as_array()?
        .iter()
        .filter_map(|d| d["Metrics"].as_array())
        .flatten()
        .any(|m| m["Name"] == metric);
    if !declared {
        return None;
    }
    match root.get(metric)? {
        Value::Array(vs) => vs.iter().map(Value::as_f64).collect(),
        v => Some(vec![v.as_f64()?]),
    }
}

/// Why a line is not valid EMF.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not valid EMF: {0}")]
pub struct EmfError(pub String);

const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// Checks `line` against the EMF specification's rules.
pub fn validate(line: &str) -> Result<(), EmfError> {
    let root: Value = serde_json::from_str(line).map_err(|e| EmfError(format!("not JSON: {e}")))?;
    check(&root)
}

/// The rules, on a parsed line.
fn check(root: &Value) -> Result<(), EmfError> {
    let bad = |m: String| Err(EmfError(m));
    let Some(root) = root.as_object() else {
        return bad("the root is not an object".into());
    };
    let Some(aws) = root.get("_aws").and_then(Value::as_object) else {
        return bad("no _aws object".into());
    };
    let positive_ms = aws.get("Timestamp").and_then(Value::as_i64).is_some_and(|t| t > 0);
    if !positive_ms {
        return bad("_aws.Timestamp is not a positive integer (ms since the epoch)".into());
    }
    let Some(directives) = aws.get("CloudWatchMetrics").and_then(Value::as_array) else {
        return bad("_aws.CloudWatchMetrics is not an array".into());
    };
    if directives.is_empty() {
        return bad("no metric directive".into());
    }
    for d in directives {
        let ns = d.get("Namespace").and_then(Value::as_str).unwrap_or_default();
        if ns.is_empty() || ns.len() > 255 {
            return bad(format!("namespace {ns:?}"));
        }
        let Some(sets) = d.get("Dimensions").and_then(Value::as_array) else {
            return bad("Dimensions is not an array".into());
        };
        for set in sets {
            let Some(keys) = set.as_array() else {
                return bad("a dimension set is not an array".into());
            };
            if keys.len() > 30 {
                return bad("more than 30 dimensions in a set".into());
            }
            for k in keys {
                let key = k.as_str().unwrap_or_default();
                if !root.get(key).is_some_and(Value::is_string) {
                    return bad(format!("dimension {key:?} is not a string at the root"));
                }
            }
        }
        let Some(metrics) = d.get("Metrics").and_then(Value::as_array) else {
            return bad("Metrics is not an array".into());
        };
        if metrics.len() > MAX_METRICS {
            return bad("more than 100 metrics in a directive".into());
        }
        for m in metrics {
            let name = m.get("Name").and_then(Value::as_str).unwrap_or_default();
            if name.is_empty() || name.len() > 1024 {
                return bad(format!("metric name {name:?}"));
            }
            if let Some(unit) = m.get("Unit")
                && !unit.as_str().is_some_and(|u| UNITS.contains(&u))
            {
                return bad(format!("{name}: unit {unit}"));
            }
            match root.get(name) {
                Some(Value::Number(_)) => {}
                Some(Value::Array(vs))
                    if !vs.is_empty() && vs.len() <= MAX_VALUES && vs.iter().all(Value::is_number) => {}
                other => return bad(format!("{name}: value {other:?} is not a number or 1..=100 numbers")),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn lines_are_valid_and_carry_their_dimensions_and_values() {
        let l = line(
            "CloudCafe",
            &[("FunctionName", "cafe-lambda-payment")],
            &[
                (PAYMENTS_SETTLED, Unit::Count, Observed::One(9.0)),
                (
                    "end_to_end_seconds",
                    Unit::Seconds,
                    Observed::Many((0..150).map(f64::from).collect()),
                ),
            ],
            1_800_000_000_000,
        );
        assert_eq!(validate(&l), Ok(()));
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["FunctionName"], "cafe-lambda-payment");
        assert_eq!(v[PAYMENTS_SETTLED], 9.0);
        assert_eq!(v["end_to_end_seconds"].as_array().unwrap().len(), MAX_VALUES);
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0][0], "FunctionName");
    }

    #[test]
    fn a_metric_is_read_back_only_from_a_line_that_declares_it() {
        let l = line(
            "CloudCafe",
            &[("FunctionName", "f")],
            &[
                (INIT_DURATION, Unit::Milliseconds, Observed::One(12.5)),
                ("latency", Unit::Seconds, Observed::Many(vec![1.0, 2.0])),
            ],
            1,
        );
        assert_eq!(values(&l, INIT_DURATION), Some(vec![12.5]));
        assert_eq!(values(&l, "latency"), Some(vec![1.0, 2.0]));
        assert_eq!(values(&l, PAYMENTS_SETTLED), None, "not in the line");
        // A root field the directives do not name is no metric; a log line is no EMF.
        let undeclared = l.replacen("{", r#"{"other":3,"#, 1);
        assert_eq!(values(&undeclared, "other"), None);
        assert_eq!(values("INFO handled a batch init_duration=3", INIT_DURATION), None);
    }

    #[test]
    fn the_validator_refuses_what_cloudwatch_would_drop() {
        let good = line("N", &[("D", "d")], &[("m", Unit::Count, Observed::One(1.0))], 1);
        assert_eq!(validate(&good), Ok(()));
        let broken = [
            good.replace("\"_aws\"", "\"aws\""),
            good.replace("\"Timestamp\":1", "\"Timestamp\":\"now\""),
            good.replace("\"D\":\"d\"", "\"D\":5"),
            good.replace("\"m\":1.0", "\"m\":\"one\""),
            good.replace("\"Count\"", "\"Apples\""),
            good.replace("\"Namespace\":\"N\"", "\"Namespace\":\"\""),
            "not json".to_owned(),
        ];
        for b in broken {
            assert!(validate(&b).is_err(), "{b}");
        }
    }
}
