//! The CloudWatch dashboard and alarms, generated from the metric catalogue
//! ([`cafe_consumers::metrics::CATALOG`]) and the resource names (`infra/names.json`),
//! so they name exactly what the code emits. `cafe cloudwatch render --out
//! infra/cloudwatch` writes them for Terraform (`aws_cloudwatch_dashboard` takes the
//! dashboard body; the alarms file lists one `aws_cloudwatch_metric_alarm` each); a
//! test checks the committed files are what this module renders.
//!
//! Values only known once deployed (the HTTP API's id) are left as Terraform
//! `templatefile` placeholders: `${api_id}`.

use std::collections::BTreeMap;

use cafe_consumers::metrics::{self, CATALOG};
use cafe_localstack::Names;
use serde::Serialize;
use serde_json::{Value, json};

/// The Lambda functions, by the names they are deployed under (their binaries').
pub const FUNCTIONS: [&str; 3] = ["cafe-lambda-api", "cafe-lambda-payment", "cafe-lambda-projector"];
/// The payment function (its errors page someone).
pub const PAYMENT_FUNCTION: &str = "cafe-lambda-payment";
/// The placeholder Terraform fills with the HTTP API's id.
pub const API_ID: &str = "${api_id}";

/// The AWS-owned metrics the dashboard and alarms read (namespace, name): not ours to
/// emit, listed so a test can tell them from a typo in ours.
pub const AWS_METRICS: &[(&str, &str)] = &[
    ("AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds"),
    ("AWS/Kinesis", "IncomingRecords"),
    ("AWS/Kinesis", "WriteProvisionedThroughputExceeded"),
    ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
    ("AWS/SQS", "ApproximateAgeOfOldestMessage"),
    ("AWS/Lambda", "Errors"),
    ("AWS/Lambda", "Throttles"),
    ("AWS/Lambda", "Duration"),
    ("AWS/ApiGateway", "5xx"),
    ("AWS/ApiGateway", "4xx"),
    ("AWS/ApiGateway", "Latency"),
];

/// One alarm, in the shape of Terraform's `aws_cloudwatch_metric_alarm` arguments.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alarm {
    /// Its name.
    pub alarm_name: String,
    /// What it means and what to do.
    pub alarm_description: String,
    /// The metric's namespace.
    pub namespace: String,
    /// The metric.
    pub metric_name: String,
    /// Its dimensions (Terraform's `dimensions` map).
    pub dimensions: BTreeMap<String, String>,
    /// Sum, Maximum, …
    pub statistic: String,
    /// Seconds per datapoint.
    pub period: u32,
    /// Datapoints looked at.
    pub evaluation_periods: u32,
    /// Of which this many must breach.
    pub datapoints_to_alarm: u32,
    /// The threshold.
    pub threshold: f64,
    /// `GreaterThanThreshold`, …
    pub comparison_operator: String,
    /// `notBreaching` where no data means nothing happened (no parked records, no
    /// errors); `breaching` where no data means the publisher is gone.
    pub treat_missing_data: String,
}

fn ours(names: &Names, name: &str) -> (String, String) {
    debug_assert!(metrics::definition(name).is_some(), "{name} is not in the catalogue");
    (names.metrics_namespace.clone(), name.to_owned())
}

/// A metric line of a dashboard widget: namespace, name, then dimension pairs.
fn line(namespace: &str, name: &str, dims: &[(&str, &str)], extra: Value) -> Value {
    let mut v = vec![json!(namespace), json!(name)];
    for (k, val) in dims {
        v.push(json!(k));
        v.push(json!(val));
    }
    if !extra.is_null() {
        v.push(extra);
    }
    Value::Array(v)
}

fn widget(x: u32, y: u32, title: &str, region: &str, stat: &str, metrics: Vec<Value>, unit_label: &str) -> Value {
    json!({
        "type": "metric",
        "x": x, "y": y, "width": 12, "height": 6,
        "properties": {
            "title": title,
            "region": region,
            "view": "timeSeries",
            "stacked": false,
            "stat": stat,
            "period": 60,
            "metrics": metrics,
            "yAxis": { "left": { "label": unit_label, "showUnits": false } }
        }
    })
}

/// The dashboard body: stream lag per application, projection lag and end-to-end p99
/// per projector, throughput, parked records, the payment queue and its DLQ, the
/// functions' errors and throttles, the API's 5xx.
pub fn dashboard(names: &Names, applications: &[String]) -> Value {
    let region = names.region.as_str();
    let per_app = |name: &str, extra: Value| -> Vec<Value> {
        let (ns, name) = ours(names, name);
        applications
            .iter()
            .map(|a| {
                line(
                    &ns,
                    &name,
                    &[("Stream", &names.stream), ("Application", a)],
                    extra.clone(),
                )
            })
            .collect()
    };
    let mut iterator_age = vec![line(
        "AWS/Kinesis",
        "GetRecords.IteratorAgeMilliseconds",
        &[("StreamName", &names.stream)],
        json!({ "label": "stream iterator age (all polling applications)" }),
    )];
    iterator_age.extend(per_app(metrics::MILLIS_BEHIND_LATEST, Value::Null));
    let lambda = |metric: &str| -> Vec<Value> {
        FUNCTIONS
            .iter()
            .map(|f| line("AWS/Lambda", metric, &[("FunctionName", f)], Value::Null))
            .collect()
    };
    let widgets = vec![
        widget(
            0,
            0,
            "MillisBehindLatest per application (ms)",
            region,
            "Maximum",
            iterator_age,
            "ms",
        ),
        widget(
            12,
            0,
            "Projection lag per projector (s)",
            region,
            "Maximum",
            per_app(metrics::PROJECTION_LAG_SECONDS, Value::Null),
            "s",
        ),
        widget(
            0,
            6,
            "End-to-end latency p99 per projector (s)",
            region,
            "p99",
            per_app(metrics::END_TO_END_SECONDS, Value::Null),
            "s",
        ),
        widget(
            12,
            6,
            "Events applied per minute",
            region,
            "Sum",
            per_app(metrics::RECORDS, Value::Null),
            "events",
        ),
        widget(
            0,
            12,
            "Parked records per application",
            region,
            "Sum",
            per_app(metrics::PARKED, Value::Null),
            "records",
        ),
        widget(
            12,
            12,
            "Payment queue: DLQ depth, backlog, oldest message age (s)",
            region,
            "Maximum",
            vec![
                line(
                    "AWS/SQS",
                    "ApproximateNumberOfMessagesVisible",
                    &[("QueueName", &names.payments_dlq)],
                    json!({ "label": "DLQ depth" }),
                ),
                line(
                    "AWS/SQS",
                    "ApproximateNumberOfMessagesVisible",
                    &[("QueueName", &names.payments_queue)],
                    json!({ "label": "backlog" }),
                ),
                line(
                    "AWS/SQS",
                    "ApproximateAgeOfOldestMessage",
                    &[("QueueName", &names.payments_queue)],
                    json!({ "label": "oldest age", "yAxis": "right" }),
                ),
            ],
            "messages",
        ),
        widget(0, 18, "Lambda errors", region, "Sum", lambda("Errors"), "errors"),
        widget(
            12,
            18,
            "Lambda throttles",
            region,
            "Sum",
            lambda("Throttles"),
            "throttles",
        ),
        widget(
            0,
            24,
            "API 5xx and 4xx",
            region,
            "Sum",
            vec![
                line("AWS/ApiGateway", "5xx", &[("ApiId", API_ID)], Value::Null),
                line("AWS/ApiGateway", "4xx", &[("ApiId", API_ID)], Value::Null),
            ],
            "responses",
        ),
        widget(
            12,
            24,
            "Stream writes: records in, throttled puts",
            region,
            "Sum",
            vec![
                line(
                    "AWS/Kinesis",
                    "IncomingRecords",
                    &[("StreamName", &names.stream)],
                    Value::Null,
                ),
                line(
                    "AWS/Kinesis",
                    "WriteProvisionedThroughputExceeded",
                    &[("StreamName", &names.stream)],
                    json!({ "yAxis": "right" }),
                ),
            ],
            "records",
        ),
    ];
    json!({ "widgets": widgets })
}

/// The alarms: a stream falling behind, a projector behind, anything parked, anything
/// dead-lettered, the payment function failing.
pub fn alarms(names: &Names, applications: &[String]) -> Vec<Alarm> {
    let alarm =
        |name: String, description: &str, (namespace, metric): (String, String), dims: Vec<(&str, &str)>| Alarm {
            alarm_name: name,
            alarm_description: description.to_owned(),
            namespace,
            metric_name: metric,
            dimensions: dims.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
            statistic: "Maximum".to_owned(),
            period: 60,
            evaluation_periods: 3,
            datapoints_to_alarm: 3,
            threshold: 0.0,
            comparison_operator: "GreaterThanThreshold".to_owned(),
            treat_missing_data: "notBreaching".to_owned(),
        };
    let mut out = vec![Alarm {
        threshold: 60_000.0,
        evaluation_periods: 5,
        datapoints_to_alarm: 5,
        ..alarm(
            format!("{}-iterator-age", names.stream),
            "The oldest record a polling application of the stream has yet to read is over a minute old, for 5 minutes: a consumer is falling behind or stopped (see the lag dashboard for which).",
            (
                "AWS/Kinesis".to_owned(),
                "GetRecords.IteratorAgeMilliseconds".to_owned(),
            ),
            vec![("StreamName", &names.stream)],
        )
    }];
    for app in applications {
        let dims = vec![("Stream", names.stream.as_str()), ("Application", app.as_str())];
        out.push(Alarm {
            threshold: 30.0,
            treat_missing_data: "breaching".to_owned(),
            ..alarm(
                format!("{app}-projection-lag"),
                "The newest event this application applied is over 30 s old, for 3 minutes (or it stopped publishing): its read model is stale. Look at its status on the lag dashboard (STALL, STOP, DEAD) and its logs.",
                ours(names, metrics::PROJECTION_LAG_SECONDS),
                dims.clone(),
            )
        });
        out.push(Alarm {
            statistic: "Sum".to_owned(),
            evaluation_periods: 1,
            datapoints_to_alarm: 1,
            ..alarm(
                format!("{app}-parked"),
                "The application parked a record it can never process (poison). The record is kept with its reason in the parked table; fix and replay it.",
                ours(names, metrics::PARKED),
                dims,
            )
        });
    }
    out.push(Alarm {
        evaluation_periods: 1,
        datapoints_to_alarm: 1,
        ..alarm(
            format!("{}-depth", names.payments_dlq),
            "A payment request failed every delivery and was dead-lettered: a payment is stuck. Inspect the message and redrive it.",
            ("AWS/SQS".to_owned(), "ApproximateNumberOfMessagesVisible".to_owned()),
            vec![("QueueName", &names.payments_dlq)],
        )
    });
    out.push(Alarm {
        statistic: "Sum".to_owned(),
        period: 300,
        evaluation_periods: 1,
        datapoints_to_alarm: 1,
        ..alarm(
            format!("{PAYMENT_FUNCTION}-errors"),
            "The payment function failed whole invocations in the last 5 minutes (per-message failures are retried and do not count).",
            ("AWS/Lambda".to_owned(), "Errors".to_owned()),
            vec![("FunctionName", PAYMENT_FUNCTION)],
        )
    });
    out
}

/// Every (namespace, metric) `dashboard` names.
pub fn dashboard_metrics(body: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for w in body["widgets"].as_array().into_iter().flatten() {
        for m in w["properties"]["metrics"].as_array().into_iter().flatten() {
            if let (Some(ns), Some(name)) = (m[0].as_str(), m[1].as_str()) {
                out.push((ns.to_owned(), name.to_owned()));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether (namespace, metric) is one the code emits or one AWS does.
pub fn is_known(names: &Names, namespace: &str, metric: &str) -> bool {
    if namespace == names.metrics_namespace {
        CATALOG.iter().any(|d| d.name == metric)
    } else {
        AWS_METRICS.contains(&(namespace, metric))
    }
}

/// Pretty JSON with a final newline (what the committed files hold).
fn pretty<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

/// The files `cafe cloudwatch render` writes: (file name, contents).
pub fn render(names: &Names, applications: &[String]) -> Vec<(&'static str, String)> {
    vec![
        ("dashboard.json", pretty(&dashboard(names, applications))),
        ("alarms.json", pretty(&alarms(names, applications))),
    ]
}

/// What [`apply`] put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The dashboard's name.
    pub dashboard: String,
    /// The alarms' names.
    pub alarms: Vec<String>,
}

/// Puts the dashboard (named after the stream) and every alarm, with `api_id` for the
/// placeholder. Terraform does this in a deployment; this is for the local stack (and
/// for trying a change against an account by hand).
pub async fn apply(
    cw: &aws_sdk_cloudwatch::Client,
    names: &Names,
    applications: &[String],
    api_id: &str,
) -> anyhow::Result<Applied> {
    use anyhow::Context;
    use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, Statistic};
    let body = pretty(&dashboard(names, applications)).replace(API_ID, api_id);
    let name = format!("cloudcafe-{}", names.stream);
    cw.put_dashboard()
        .dashboard_name(&name)
        .dashboard_body(body)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{}", aws_sdk_cloudwatch::error::DisplayErrorContext(e)))
        .context("PutDashboard")?;
    let mut put = Vec::new();
    for a in alarms(names, applications) {
        cw.put_metric_alarm()
            .alarm_name(&a.alarm_name)
            .alarm_description(&a.alarm_description)
            .namespace(&a.namespace)
            .metric_name(&a.metric_name)
            .set_dimensions(Some(
                a.dimensions
                    .iter()
                    .map(|(k, v)| Dimension::builder().name(k).value(v).build())
                    .collect(),
            ))
            .statistic(Statistic::from(a.statistic.as_str()))
            .period(i32::try_from(a.period).unwrap_or(60))
            .evaluation_periods(i32::try_from(a.evaluation_periods).unwrap_or(1))
            .datapoints_to_alarm(i32::try_from(a.datapoints_to_alarm).unwrap_or(1))
            .threshold(a.threshold)
            .comparison_operator(ComparisonOperator::from(a.comparison_operator.as_str()))
            .treat_missing_data(&a.treat_missing_data)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{}", aws_sdk_cloudwatch::error::DisplayErrorContext(e)))
            .with_context(|| format!("PutMetricAlarm {}", a.alarm_name))?;
        put.push(a.alarm_name);
    }
    Ok(Applied {
        dashboard: name,
        alarms: put,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn names() -> Names {
        cafe_localstack::StackConfig::default().names
    }

    /// Every metric the dashboard and the alarms name is one the code emits (the
    /// catalogue) or one AWS publishes: the two cannot drift.
    #[test]
    fn every_metric_named_is_emitted_by_the_code_or_by_aws() {
        let n = names();
        let apps = crate::dashboard::applications();
        let body = dashboard(&n, &apps);
        let named = dashboard_metrics(&body);
        assert!(named.len() >= 8, "{named:?}");
        for (ns, m) in &named {
            assert!(is_known(&n, ns, m), "{ns} {m} is neither emitted nor AWS's");
        }
        for a in alarms(&n, &apps) {
            assert!(is_known(&n, &a.namespace, &a.metric_name), "{a:?}");
        }
        // And the check itself tells a typo.
        assert!(!is_known(&n, &n.metrics_namespace, "projection_lag_secs"));
    }

    /// moto's PutDashboard checks only that the body is JSON; this checks what
    /// CloudWatch's dashboard body structure documents: widgets on the 24-column grid,
    /// metric arrays of namespace, name, dimension pairs and an optional options
    /// object, known statistics, whole-minute periods.
    #[test]
    fn the_dashboard_body_follows_the_documented_structure() {
        let body = dashboard(&names(), &crate::dashboard::applications());
        let widgets = body["widgets"].as_array().unwrap();
        for w in widgets {
            assert_eq!(w["type"], "metric");
            let (x, width) = (w["x"].as_u64().unwrap(), w["width"].as_u64().unwrap());
            assert!(x + width <= 24 && (1..=24).contains(&width), "{w}");
            assert!(w["y"].as_u64().is_some() && w["height"].as_u64().is_some_and(|h| h >= 1));
            let p = &w["properties"];
            assert!(p["region"].as_str().is_some_and(|r| !r.is_empty()));
            let stat = p["stat"].as_str().unwrap();
            assert!(
                ["Maximum", "Minimum", "Sum", "Average", "SampleCount"].contains(&stat)
                    || stat.strip_prefix('p').is_some_and(|n| n.parse::<f64>().is_ok()),
                "{stat}"
            );
            assert_eq!(p["period"].as_u64().unwrap() % 60, 0);
            for m in p["metrics"].as_array().unwrap() {
                let m = m.as_array().unwrap();
                let options = m.last().is_some_and(Value::is_object);
                let strings = if options { &m[..m.len() - 1] } else { &m[..] };
                assert!(strings.len() >= 2 && strings.len() % 2 == 0, "{m:?}");
                assert!(strings.iter().all(Value::is_string), "{m:?}");
            }
        }
        assert!(widgets.len() >= 8);
    }

    #[test]
    fn every_application_gets_a_lag_and_a_parked_alarm() {
        let n = names();
        let apps = crate::dashboard::applications();
        let all = alarms(&n, &apps);
        for app in &apps {
            for suffix in ["projection-lag", "parked"] {
                assert!(
                    all.iter().any(|a| a.alarm_name == format!("{app}-{suffix}")),
                    "{app}-{suffix}"
                );
            }
        }
        assert!(all.iter().any(|a| a.alarm_name == format!("{}-depth", n.payments_dlq)));
        assert!(all.iter().any(|a| a.alarm_name == "cafe-lambda-payment-errors"));
    }

    /// The files under infra/cloudwatch are what this module renders (regenerate with
    /// `cafe cloudwatch render --out infra/cloudwatch`).
    #[test]
    fn the_committed_files_are_the_rendered_ones() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/cloudwatch");
        for (file, contents) in render(&names(), &crate::dashboard::applications()) {
            let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            assert!(
                committed == contents,
                "infra/cloudwatch/{file} is stale: run `cafe cloudwatch render --out infra/cloudwatch`"
            );
        }
    }
}
