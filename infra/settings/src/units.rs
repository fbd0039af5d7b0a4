//! The deployed units and what each reads from its environment: the contract between
//! the code and its deployment. The binaries check it at start (a unit missing a
//! variable refuses to start, naming it); a test holds Terraform's environment and
//! secrets of each function and service to it.

use std::collections::BTreeSet;

use crate::names::{Names, SettingsError};
use crate::vars;

/// AWS API actions on one resource, the resource named by its key in Terraform's IAM
/// module (`events_table`, `stream`, `stream_consumer`, …).
pub type Grant = (&'static str, &'static [&'static str]);

/// One deployed unit: a Lambda function, or an ECS service running `cafe consume`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    /// What Terraform calls it (the function's or the service's name without prefix).
    pub name: &'static str,
    /// Its IAM role in Terraform (`cafe-<role>`), whose policy a test holds to
    /// [`Unit::calls`] and [`Unit::granted`].
    pub role: &'static str,
    /// The AWS calls its code makes, as IAM actions per resource (TransactWriteItems is
    /// authorised as the PutItem of each member, SendMessageBatch as SendMessage). Kept
    /// here, beside the code that reads [`Unit::names`]; tests that run the code with a
    /// call recorder hold the code to it.
    pub calls: &'static [Grant],
    /// What AWS checks on the unit's role on its behalf: an event source mapping's reads
    /// and its failure destination, the secret the Redshift Data API signs in with.
    pub granted: &'static [Grant],
    /// Keys of `infra/names.json` it must be handed as `CAFE_<KEY>` (the deployment
    /// created them, possibly under other names than the file's defaults).
    pub names: &'static [&'static str],
    /// Plain variables it must be handed.
    pub required: &'static [&'static str],
    /// Variables it must be handed from Secrets Manager (they hold credentials).
    pub secrets: &'static [&'static str],
    /// Variables it reads with a default: a deployment may set them, nothing else.
    pub optional: &'static [&'static str],
}

/// Every worker's calls: shard discovery and reads, enhanced fan-out when the service
/// runs with `--fan-out` (registering and describing its consumer, subscribing), leases,
/// parking, the serving pointers, and its metrics.
macro_rules! worker_calls {
    ($(($key:literal, [$($action:literal),*])),*) => {
        &[
            ("stream", &["kinesis:ListShards", "kinesis:GetShardIterator", "kinesis:GetRecords"]),
            ("stream_fan_out", &["kinesis:DescribeStreamSummary", "kinesis:RegisterStreamConsumer"]),
            ("stream_consumer", &["kinesis:DescribeStreamConsumer", "kinesis:SubscribeToShard"]),
            ("leases_table", &["dynamodb:Scan", "dynamodb:PutItem", "dynamodb:UpdateItem"]),
            ("parked_table", &["dynamodb:PutItem"]),
            ("replays_table", &["dynamodb:GetItem"]),
            ("metrics", &["cloudwatch:PutMetricData"])
            $(, ($key, &[$($action),*]))*
        ]
    };
}

/// The command side's calls, the API's and the payment function's (it appends the
/// payment's outcome through the same service): load (Query), append with the
/// idempotency claim (TransactWriteItems of conditional Puts), read a replayed
/// command's answer (GetItem), clear the outbox markers (BatchWriteItem), publish.
macro_rules! command_calls {
    ($($idempotency:literal),*) => {
        &[
            ("events_table", &["dynamodb:Query", "dynamodb:PutItem", "dynamodb:BatchWriteItem"]),
            ("idempotency_table", &["dynamodb:GetItem", "dynamodb:PutItem" $(, $idempotency)*]),
            ("stream", &["kinesis:ListShards", "kinesis:PutRecords"]),
        ]
    };
}

/// The Redshift Data API's calls: one BatchExecuteStatement per load, polled with
/// DescribeStatement.
const DATA_API: &[Grant] = &[
    ("redshift_workgroup", &["redshift-data:BatchExecuteStatement"]),
    ("redshift_statements", &["redshift-data:DescribeStatement"]),
];

/// Every worker's names: the stream and its leases, the parking lot, the serving
/// pointers (in the replays table) and the metrics namespace.
macro_rules! worker_names {
    ($($more:literal),*) => {
        &["stream", "leases_table", "parked_table", "replays_table", "metrics_namespace" $(, $more)*]
    };
}

/// The command API function.
pub const API_FUNCTION: Unit = Unit {
    name: "cafe-lambda-api",
    role: "api-function",
    calls: command_calls!(),
    granted: &[],
    names: &["events_table", "idempotency_table", "stream"],
    required: &[],
    secrets: &[],
    optional: &[],
};

/// The payment function (SQS-triggered).
pub const PAYMENT_FUNCTION: Unit = Unit {
    name: "cafe-lambda-payment",
    role: "payment-function",
    // The charge's idempotency record: claim and complete (PutItem), read (GetItem),
    // release (DeleteItem).
    calls: command_calls!("dynamodb:DeleteItem"),
    // The SQS event source mapping polls with the function's role.
    granted: &[(
        "payments_queue",
        &["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"],
    )],
    names: &["events_table", "idempotency_table", "stream", "metrics_namespace"],
    required: &[],
    secrets: &[],
    // The gateway simulation's knobs: their defaults serve a deployment; tests set them.
    optional: &[
        vars::IDEMPOTENCY_LEASE_SECS,
        vars::GATEWAY_LIMIT_CENTS,
        vars::GATEWAY_BLOCKED,
        vars::GATEWAY_FLAKY,
        vars::GATEWAY_LATENCY_MS,
        vars::GATEWAY_LEDGER,
    ],
};

/// The projector function hosting the analytics facts (through the Redshift Data API).
pub const PROJECTOR_FUNCTION: Unit = Unit {
    name: "cafe-lambda-projector",
    role: "projector-function",
    calls: &[("parked_table", &["dynamodb:PutItem"]), DATA_API[0], DATA_API[1]],
    // The Kinesis event source mapping reads with the function's role (by fan-out when
    // a consumer is registered for it), sends what it gives up on to the failure queue;
    // the Data API reads the secret as the caller.
    granted: &[
        (
            "stream",
            &[
                "kinesis:DescribeStream",
                "kinesis:DescribeStreamSummary",
                "kinesis:GetRecords",
                "kinesis:GetShardIterator",
                "kinesis:ListShards",
            ],
        ),
        (
            "stream_consumer",
            &["kinesis:SubscribeToShard", "kinesis:DescribeStreamConsumer"],
        ),
        ("projector_failures_queue", &["sqs:SendMessage"]),
        ("redshift_secret", &["secretsmanager:GetSecretValue"]),
    ],
    names: &["parked_table", "metrics_namespace"],
    required: &[
        vars::APPLICATION,
        vars::PROJECTION,
        vars::REDSHIFT_WORKGROUP,
        vars::REDSHIFT_DATABASE,
    ],
    secrets: &[],
    optional: &[vars::REDSHIFT_SECRET_ARN, vars::ANALYTICS_SCHEMA],
};

/// The outbox relay (`cafe relay --aws`, an ECS service): finds events whose publish
/// failed on the events table's sparse `pending` index, publishes them, clears their
/// markers.
pub const RELAY: Unit = Unit {
    name: "relay",
    role: "worker-relay",
    names: &["events_table", "stream"],
    required: &[],
    secrets: &[],
    optional: &[],
    calls: &[
        ("events_pending_index", &["dynamodb:Query"]),
        ("events_table", &["dynamodb:BatchWriteItem"]),
        ("stream", &["kinesis:ListShards", "kinesis:PutRecords"]),
    ],
    granted: &[],
};

/// The ECS services, by the `--sink` of their `cafe consume` command.
pub const WORKERS: &[(&str, Unit)] = &[
    (
        "projector:orders",
        Unit {
            name: "orders",
            role: "worker-orders",
            calls: worker_calls!(),
            granted: &[],
            names: worker_names!(),
            required: &[],
            secrets: &[vars::POSTGRES_URL],
            optional: &[],
        },
    ),
    (
        "projector:active_orders",
        Unit {
            name: "active_orders",
            role: "worker-active_orders",
            calls: worker_calls!(
                // Its table; after a replay's swap the serving copy is a shadow table,
                // which the worker finds (or creates) like the live one.
                (
                    "active_orders_table",
                    [
                        "dynamodb:UpdateItem",
                        "dynamodb:DescribeTable",
                        "dynamodb:DescribeTimeToLive"
                    ]
                ),
                (
                    "active_orders_shadows",
                    [
                        "dynamodb:UpdateItem",
                        "dynamodb:CreateTable",
                        "dynamodb:DescribeTable",
                        "dynamodb:UpdateTimeToLive"
                    ]
                )
            ),
            granted: &[],
            names: worker_names!("active_orders_table"),
            required: &[],
            secrets: &[],
            optional: &[],
        },
    ),
    (
        "projector:documents",
        Unit {
            name: "documents",
            role: "worker-documents",
            calls: worker_calls!(),
            granted: &[],
            names: worker_names!(),
            required: &[],
            secrets: &[vars::MONGO_URL],
            optional: &[],
        },
    ),
    (
        "projector:cache",
        Unit {
            name: "cache",
            role: "worker-cache",
            calls: worker_calls!(),
            granted: &[],
            names: worker_names!(),
            required: &[],
            secrets: &[vars::REDIS_URL],
            optional: &[],
        },
    ),
    (
        "projector:inventory",
        Unit {
            name: "inventory",
            role: "worker-inventory",
            calls: worker_calls!(),
            granted: &[],
            names: worker_names!(),
            required: &[],
            secrets: &[vars::MEMORYDB_URL],
            optional: &[],
        },
    ),
    (
        "projector:analytics",
        Unit {
            name: "analytics",
            role: "worker-analytics",
            calls: worker_calls!(
                ("redshift_workgroup", ["redshift-data:BatchExecuteStatement"]),
                ("redshift_statements", ["redshift-data:DescribeStatement"])
            ),
            granted: &[("redshift_secret", &["secretsmanager:GetSecretValue"])],
            names: worker_names!(),
            required: &[vars::REDSHIFT_WORKGROUP, vars::REDSHIFT_DATABASE],
            secrets: &[],
            optional: &[vars::REDSHIFT_SECRET_ARN],
        },
    ),
    (
        "payment-requests",
        Unit {
            name: "payment-requests",
            role: "worker-payment-requests",
            calls: worker_calls!((
                "payments_queue",
                ["sqs:GetQueueUrl", "sqs:GetQueueAttributes", "sqs:SendMessage"]
            )),
            granted: &[],
            names: worker_names!("payments_queue"),
            required: &[],
            secrets: &[],
            optional: &[],
        },
    ),
];

/// The IAM action an SDK call is authorised as, from the call recorder's
/// `Service.Operation` (`cafe_localstack::aws::CallCounter`): `DynamoDB.PutItem` is
/// `dynamodb:PutItem`. Our transactions hold only conditional Puts, so
/// `TransactWriteItems` is `dynamodb:PutItem`; `SendMessageBatch` is `sqs:SendMessage`.
pub fn iam_action(operation: &str) -> String {
    let (service, name) = operation.split_once('.').unwrap_or(("", operation));
    let service: String = service
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_lowercase();
    let service = match service.as_str() {
        "redshiftdata" => "redshift-data".to_owned(),
        other => other.to_owned(),
    };
    let name = match (service.as_str(), name) {
        ("dynamodb", "TransactWriteItems") => "PutItem",
        ("sqs", "SendMessageBatch") => "SendMessage",
        (_, name) => name,
    };
    format!("{service}:{name}")
}

/// The IAM actions of recorded `operations` ([`iam_action`] of each).
pub fn iam_actions<'a>(operations: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    operations.into_iter().map(|op| iam_action(op)).collect()
}

impl Unit {
    /// Those of `actions` the unit's list does not have: calls its IAM role would refuse.
    pub fn unlisted<'a>(&self, actions: &'a BTreeSet<String>) -> Vec<&'a String> {
        actions.iter().filter(|a| !self.makes(a)).collect()
    }

    /// Whether the unit's list has `action` (an IAM action) among its calls.
    pub fn makes(&self, action: &str) -> bool {
        self.calls.iter().any(|(_, actions)| actions.contains(&action))
    }

    /// Every function, then every worker.
    pub fn all() -> impl Iterator<Item = Unit> {
        [API_FUNCTION, PAYMENT_FUNCTION, PROJECTOR_FUNCTION, RELAY]
            .into_iter()
            .chain(WORKERS.iter().map(|(_, u)| *u))
    }

    /// The worker whose `cafe consume --sink` is `sink`.
    pub fn worker(sink: &str) -> Option<Unit> {
        WORKERS.iter().find(|(s, _)| *s == sink).map(|(_, u)| *u)
    }

    /// Variables a deployment must hand this unit: its names' and the required ones
    /// (secrets excluded).
    pub fn must_have(&self) -> Vec<String> {
        self.names
            .iter()
            .map(|k| Names::var(k))
            .chain(self.required.iter().map(|v| (*v).to_owned()))
            .collect()
    }

    /// Every variable a deployment may hand this unit.
    pub fn may_have(&self) -> Vec<String> {
        let mut all = self.must_have();
        all.extend(self.secrets.iter().chain(self.optional).map(|v| (*v).to_owned()));
        all
    }

    /// Checks `get` provides everything the unit needs, then reads the names: what a
    /// deployed unit does first, so a missing variable stops it at start, by name.
    pub fn names_from(&self, get: impl Fn(&str) -> Option<String>) -> Result<Names, SettingsError> {
        let present = |k: &str| get(k).is_some_and(|v| !v.trim().is_empty());
        if let Some(missing) = self.required.iter().chain(self.secrets).find(|v| !present(v)) {
            return Err(SettingsError::Missing((*missing).to_owned()));
        }
        Names::require(self.names, get)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_variable_is_a_known_one() {
        let keys = Names::keys();
        for unit in Unit::all() {
            for key in unit.names {
                assert!(
                    keys.iter().any(|k| k == key),
                    "{}: {key} is not in names.json",
                    unit.name
                );
            }
            for var in unit.required.iter().chain(unit.secrets).chain(unit.optional) {
                assert!(vars::ALL.contains(var), "{}: {var} is not in vars::ALL", unit.name);
            }
            let all = unit.may_have();
            let distinct: BTreeSet<&String> = all.iter().collect();
            assert_eq!(distinct.len(), all.len(), "{}: a variable listed twice", unit.name);
        }
    }

    #[test]
    fn a_recorded_call_is_named_as_iam_names_it() {
        assert_eq!(iam_action("DynamoDB.TransactWriteItems"), "dynamodb:PutItem");
        assert_eq!(iam_action("SQS.SendMessageBatch"), "sqs:SendMessage");
        assert_eq!(iam_action("Kinesis.PutRecords"), "kinesis:PutRecords");
        assert_eq!(
            iam_action("Redshift Data.DescribeStatement"),
            "redshift-data:DescribeStatement"
        );
        assert!(API_FUNCTION.makes("kinesis:PutRecords"));
        assert!(!API_FUNCTION.makes("dynamodb:Scan"));
    }

    #[test]
    fn a_unit_refuses_to_start_without_what_it_needs() {
        let unit = Unit::worker("projector:orders").unwrap();
        let mut env: Vec<(String, String)> = unit.must_have().into_iter().map(|k| (k, "x".to_owned())).collect();
        let get = |env: &Vec<(String, String)>| {
            let env = env.clone();
            move |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        assert_eq!(
            unit.names_from(get(&env)).unwrap_err(),
            SettingsError::Missing(vars::POSTGRES_URL.to_owned())
        );
        env.push((vars::POSTGRES_URL.to_owned(), "postgresql://h/cafe".to_owned()));
        let names = unit.names_from(get(&env)).unwrap();
        assert_eq!(names.stream, "x");
        env.retain(|(k, _)| k != "CAFE_LEASES_TABLE");
        assert_eq!(
            unit.names_from(get(&env)).unwrap_err(),
            SettingsError::Missing("CAFE_LEASES_TABLE".to_owned())
        );
    }
}
