//! A projector as a Lambda Kinesis consumer.
//!
//! In Lambda mode the event source mapping does what the worker does on ECS: it holds
//! the shard, reads it, and checkpoints. What stays ours is the processing contract:
//! [`handle`] turns a Kinesis event into the same [`Record`]s the worker hands out
//! (KPL aggregates deaggregated), runs the same [`Processor`], parks poison records in
//! the same parking lot, and answers with a partial batch response
//! (`ReportBatchItemFailures`): the sequence number of the first record that must be
//! retried. Lambda then checkpoints everything before it and retries from it, which is
//! exactly the worker's "the checkpoint only moves past finished records".
//!
//! A failure inside a KPL aggregate reports the aggregate's sequence number, so the
//! aggregate's earlier user records are offered again: harmless, every projection is
//! idempotent.

use aws_lambda_events::event::kinesis::KinesisEvent;
use aws_lambda_events::event::streams::KinesisEventResponse;
use bytes::Bytes;
use cafe_consumers::parking::{Parked, ParkingLot};
use cafe_consumers::processor::walk;
use cafe_consumers::retrieval::deaggregated;
use cafe_consumers::{BatchContext, Outcome, Processor, Record};
use cafe_events::EventEnvelope;
use cafe_projections::analytics::{DataApiConfigError, DataApiOptions};
use cafe_settings::{Names, vars};
use tracing::{Instrument, info_span, warn};

/// The shard a Lambda Kinesis record came from: its `eventID` is `<shardId>:<sequence>`.
fn shard_of(event_id: Option<&str>) -> &str {
    event_id
        .and_then(|id| id.split_once(':'))
        .map_or("unknown", |(shard, _)| shard)
}

/// One shard's user records, in order, in the worker's shape.
fn records_by_shard(event: &KinesisEvent) -> Vec<(String, Vec<Record>)> {
    let mut shards: Vec<(String, Vec<Record>)> = Vec::new();
    for r in &event.records {
        let shard = shard_of(r.event_id.as_deref());
        let i = match shards.iter().position(|(s, _)| s == shard) {
            Some(i) => i,
            None => {
                shards.push((shard.to_owned(), Vec::new()));
                shards.len() - 1
            }
        };
        let data = Bytes::from(r.kinesis.data.0.clone());
        shards[i]
            .1
            .extend(deaggregated(&r.kinesis.sequence_number, &r.kinesis.partition_key, data));
    }
    shards
}

/// What one shard's part of an invocation did, for the function's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardFigures {
    /// The shard.
    pub shard: String,
    /// User records finished (applied or parked).
    pub records: u64,
    /// Of those, parked.
    pub parked: u64,
    /// Whether the shard's part is retried from a record (a batch item failure).
    pub retried: bool,
    /// Per applied event: now minus its `occurred_at`, in seconds (the worker's
    /// end-to-end latency).
    pub end_to_end_seconds: Vec<f64>,
}

/// An invocation's response and what it did.
#[derive(Debug, Default)]
pub struct Handled {
    /// What Lambda gets back.
    pub response: KinesisEventResponse,
    /// The stream, from the records' event source ARN (`unknown` if none says).
    pub stream: String,
    /// Per shard in the event.
    pub shards: Vec<ShardFigures>,
}

impl Handled {
    /// The invocation's metrics as one EMF line (CloudWatch Logs turns it into metrics;
    /// no API call on the invoke path), with the names and dimensions (`Stream`,
    /// `Application`) the ECS workers' CloudWatch publisher uses, so one dashboard
    /// graph and one alarm cover a projector wherever it runs. Projection lag is the
    /// newest applied event's age, the worst shard's.
    pub fn emf(&self, namespace: &str, application: &str, timestamp_ms: i64) -> String {
        use cafe_consumers::emf::{self, Observed};
        use cafe_consumers::metrics::{self as m, Unit};
        let sum = |f: fn(&ShardFigures) -> u64| self.shards.iter().map(f).sum::<u64>() as f64;
        let e2e: Vec<f64> = self
            .shards
            .iter()
            .flat_map(|s| s.end_to_end_seconds.iter().copied())
            .collect();
        let mut metrics = vec![
            (m::RECORDS, Unit::Count, Observed::One(sum(|s| s.records))),
            (m::PARKED, Unit::Count, Observed::One(sum(|s| s.parked))),
            (m::RETRIES, Unit::Count, Observed::One(sum(|s| u64::from(s.retried)))),
        ];
        let lag = self
            .shards
            .iter()
            .filter_map(|s| s.end_to_end_seconds.last().copied())
            .fold(None, |worst: Option<f64>, v| Some(worst.map_or(v, |w| w.max(v))));
        if let Some(lag) = lag {
            metrics.push((m::PROJECTION_LAG_SECONDS, Unit::Seconds, Observed::One(lag)));
        }
        if !e2e.is_empty() {
            metrics.push((m::END_TO_END_SECONDS, Unit::Seconds, Observed::Many(e2e)));
        }
        emf::line(
            namespace,
            &[("Stream", self.stream.as_str()), ("Application", application)],
            &metrics,
            timestamp_ms,
        )
    }
}

/// The stream's name in a Kinesis ARN (`arn:aws:kinesis:…:stream/<name>`).
fn stream_of(arn: Option<&str>) -> Option<&str> {
    arn?.split_once(":stream/").map(|(_, name)| name)
}

/// Processes a Kinesis event; the response lists the record to retry from, if any.
pub async fn handle<P: Processor, K: ParkingLot>(
    processor: &P,
    parking: &K,
    application: &str,
    event: &KinesisEvent,
) -> KinesisEventResponse {
    handle_measured(processor, parking, application, event).await.response
}

/// [`handle`], saying what it did.
pub async fn handle_measured<P: Processor, K: ParkingLot>(
    processor: &P,
    parking: &K,
    application: &str,
    event: &KinesisEvent,
) -> Handled {
    let mut handled = Handled {
        stream: event
            .records
            .iter()
            .find_map(|r| stream_of(r.event_source_arn.as_deref()))
            .unwrap_or("unknown")
            .to_owned(),
        ..Handled::default()
    };
    for (shard, records) in records_by_shard(event) {
        let span = info_span!("lambda_batch", application, shard = %shard, records = records.len());
        let (retry_from, figures) = one_shard(processor, parking, application, &shard, &records)
            .instrument(span)
            .await;
        if let Some(sequence) = retry_from {
            handled.response.add_failure(sequence);
        }
        handled.shards.push(figures);
    }
    handled
}

/// Seconds since the epoch.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// One shard's records; the sequence number to retry from, if any, and the figures.
async fn one_shard<P: Processor, K: ParkingLot>(
    processor: &P,
    parking: &K,
    application: &str,
    shard: &str,
    records: &[Record],
) -> (Option<String>, ShardFigures) {
    let ctx = BatchContext {
        application,
        shard_id: shard,
        millis_behind_latest: 0,
    };
    let outcomes = processor.process(ctx, records).await;
    let w = walk(&outcomes, records.len());
    let mut first_unfinished = w.retry.as_ref().map(|_| w.finished);
    let mut parked_at = Vec::new();
    for (i, reason) in w.park {
        let Some(record) = records.get(i) else { break };
        let parked = Parked {
            shard_id: shard.to_owned(),
            record: record.clone(),
            reason,
        };
        if let Err(e) = parking.park(application, &parked).await {
            warn!(sequence = %record.sequence, error = %e, "parking failed; the record will be retried");
            first_unfinished = Some(first_unfinished.map_or(i, |f| f.min(i)));
            break;
        }
        parked_at.push(i);
        warn!(sequence = %record.sequence, sub = record.sub, reason = %parked.reason, "record parked");
    }
    let finished = first_unfinished.unwrap_or(w.finished).min(records.len());
    let now = unix_now();
    let figures = ShardFigures {
        shard: shard.to_owned(),
        records: finished as u64,
        parked: parked_at.iter().filter(|&&i| i < finished).count() as u64,
        retried: first_unfinished.is_some(),
        end_to_end_seconds: records[..finished]
            .iter()
            .enumerate()
            .filter(|(i, _)| !parked_at.contains(i))
            .filter_map(|(_, r)| cafe_events::envelope::occurred_at_of(&r.data))
            .map(|at| now - at.timestamp_micros() as f64 / 1e6)
            .collect(),
    };
    let retry_from = first_unfinished.and_then(|i| records.get(i)).map(|record| {
        warn!(sequence = %record.sequence, reason = ?w.retry, "reporting a batch item failure");
        record.sequence.clone()
    });
    (retry_from, figures)
}

/// A processor that only checks every record decodes as an event envelope and parks
/// those that do not: a canary function for a new stream, keeping undecodable bytes out
/// of every downstream consumer's way.
#[derive(Debug, Default)]
pub struct EnvelopeCheck;

impl Processor for EnvelopeCheck {
    async fn process(&self, _ctx: BatchContext<'_>, records: &[Record]) -> Vec<Outcome> {
        records
            .iter()
            .map(|r| match EventEnvelope::decode(&r.data) {
                Ok(_) => Outcome::Done,
                Err(e) => Outcome::Park(format!("not an event envelope: {e}")),
            })
            .collect()
    }
}

/// What the function hosts, from `CAFE_PROJECTION`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hosted {
    /// [`EnvelopeCheck`] (the default).
    EnvelopeCheck,
    /// The analytics facts through the Redshift Data API: HTTPS only, so the function
    /// needs no VPC attachment or connection pool.
    Analytics {
        /// Where the Data API runs the statements.
        options: DataApiOptions,
        /// Schema of the facts.
        schema: String,
    },
    /// The DynamoDB active-orders table.
    ActiveOrders {
        /// Table name.
        table: String,
    },
}

/// A function configuration that cannot work; the function refuses to start with it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A variable the chosen projection needs.
    #[error("environment variable {0} is not set")]
    Missing(String),
    /// `CAFE_PROJECTION` names nothing we host.
    #[error("CAFE_PROJECTION={0:?} is not one of envelope-check, analytics, active-orders")]
    UnknownProjection(String),
    /// Both or neither of the two Redshift targets.
    #[error("set exactly one of CAFE_REDSHIFT_WORKGROUP (Serverless) and CAFE_REDSHIFT_CLUSTER")]
    Target,
}

impl Hosted {
    /// Reads the configuration through `get` (the process environment in the function):
    /// - `CAFE_PROJECTION`: `envelope-check` (default), `analytics` or `active-orders`;
    /// - analytics: the Data API settings ([`DataApiOptions::from_env`]; one target is
    ///   required here), `CAFE_ANALYTICS_SCHEMA` (default `analytics`);
    /// - active-orders: `CAFE_ACTIVE_ORDERS_TABLE`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Hosted, ConfigError> {
        let need = |k: &str| {
            get(k)
                .filter(|v| !v.is_empty())
                .ok_or(ConfigError::Missing(k.to_owned()))
        };
        match get(vars::PROJECTION).as_deref().unwrap_or("envelope-check") {
            "envelope-check" => Ok(Hosted::EnvelopeCheck),
            "active-orders" => Ok(Hosted::ActiveOrders {
                table: need(&Names::var("active_orders_table"))?,
            }),
            "analytics" => {
                let options = match DataApiOptions::from_env(&get) {
                    Ok(Some(options)) => options,
                    Ok(None) | Err(DataApiConfigError::Target) => return Err(ConfigError::Target),
                    Err(DataApiConfigError::Missing(k)) => return Err(ConfigError::Missing(k.to_owned())),
                };
                Ok(Hosted::Analytics {
                    options,
                    schema: get(vars::ANALYTICS_SCHEMA)
                        .filter(|v| !v.is_empty())
                        .unwrap_or_else(|| "analytics".to_owned()),
                })
            }
            other => Err(ConfigError::UnknownProjection(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use cafe_projections::analytics::DataApiTarget;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn the_default_is_the_envelope_check() {
        assert_eq!(Hosted::from_env(env(&[])), Ok(Hosted::EnvelopeCheck));
    }

    #[test]
    fn analytics_reads_a_serverless_or_a_cluster_target() {
        let Ok(Hosted::Analytics { options, schema }) = Hosted::from_env(env(&[
            ("CAFE_PROJECTION", "analytics"),
            ("CAFE_REDSHIFT_WORKGROUP", "cafe"),
            ("CAFE_REDSHIFT_DATABASE", "dev"),
            (
                "CAFE_REDSHIFT_SECRET_ARN",
                "arn:aws:secretsmanager:eu-west-1:1:secret:x",
            ),
        ])) else {
            panic!("not analytics");
        };
        assert!(matches!(options.target, DataApiTarget::Workgroup(ref w) if w == "cafe"));
        assert_eq!(options.database, "dev");
        assert_eq!(
            options.secret_arn.as_deref(),
            Some("arn:aws:secretsmanager:eu-west-1:1:secret:x")
        );
        assert_eq!(schema, "analytics");

        let Ok(Hosted::Analytics { options, .. }) = Hosted::from_env(env(&[
            ("CAFE_PROJECTION", "analytics"),
            ("CAFE_REDSHIFT_CLUSTER", "cafe-dw"),
            ("CAFE_REDSHIFT_DB_USER", "projector"),
            ("CAFE_REDSHIFT_DATABASE", "dev"),
        ])) else {
            panic!("not analytics");
        };
        assert!(matches!(
            options.target,
            DataApiTarget::Cluster { ref identifier, db_user: Some(ref u) } if identifier == "cafe-dw" && u == "projector"
        ));
        assert_eq!(options.secret_arn, None);
    }

    #[test]
    fn a_configuration_that_cannot_work_is_refused_by_name() {
        let analytics = [("CAFE_PROJECTION", "analytics"), ("CAFE_REDSHIFT_DATABASE", "dev")];
        assert_eq!(Hosted::from_env(env(&analytics)), Err(ConfigError::Target));
        let both = [
            analytics[0],
            analytics[1],
            ("CAFE_REDSHIFT_WORKGROUP", "a"),
            ("CAFE_REDSHIFT_CLUSTER", "b"),
        ];
        assert_eq!(Hosted::from_env(env(&both)), Err(ConfigError::Target));
        assert_eq!(
            Hosted::from_env(env(&[
                ("CAFE_PROJECTION", "analytics"),
                ("CAFE_REDSHIFT_WORKGROUP", "a")
            ])),
            Err(ConfigError::Missing("CAFE_REDSHIFT_DATABASE".to_owned()))
        );
        assert_eq!(
            Hosted::from_env(env(&[("CAFE_PROJECTION", "active-orders")])),
            Err(ConfigError::Missing("CAFE_ACTIVE_ORDERS_TABLE".to_owned()))
        );
        assert_eq!(
            Hosted::from_env(env(&[("CAFE_PROJECTION", "orders")])),
            Err(ConfigError::UnknownProjection("orders".to_owned()))
        );
    }
}
