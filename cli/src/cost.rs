//! `cafe cost`: the monthly AWS bill of the deployment in `infra/terraform`, per service,
//! from a workload and list prices, every assumption a named field so a figure can be
//! traced and redone with other numbers.
//!
//! A model, not a quote: prices are us-east-1 on-demand list prices (see [`Prices`] for
//! where each came from and which could not be checked here), the workload's shape is
//! ours. Usage-priced services follow the average rate; capacity (shards, node sizes)
//! is sized for the peak.

use std::fmt::Write as _;

/// Hours and days in the average month.
const HOURS: f64 = 730.0;
const DAYS: f64 = HOURS / 24.0;

/// What the deployment carries.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Orders placed a day (the seed: 5 million).
    pub orders_per_day: f64,
    /// The morning rush as a multiple of the average rate (the seed: 10).
    pub peak_factor: f64,
    /// Commands through the API per order: the order and its three status changes.
    pub commands_per_order: f64,
    /// Events per order on the stream: placed, three status changes, the payment's
    /// outcome, loyalty points, stock reservations of two lines.
    pub events_per_order: f64,
    /// Bytes of an event on the stream (envelope and payload; Kinesis on-demand bills
    /// each record as at least 1 KB).
    pub event_bytes: f64,
    /// Bytes an event takes in the event store, with its keys and attributes.
    pub stored_event_bytes: f64,
    /// Consumer applications reading the whole stream: six projectors and the payment
    /// requests.
    pub applications: f64,
    /// ECS tasks per application (two: one can die while the other holds every lease).
    pub tasks_per_application: f64,
    /// Writes to Aurora per order (orders model and loyalty).
    pub postgres_writes_per_order: f64,
    /// Writes one Aurora capacity unit absorbs per second (our measurement of the
    /// orders projector's batches on this machine's PostgreSQL, rounded down).
    pub postgres_writes_per_acu_second: f64,
    /// Hours a day the Redshift Serverless workgroup is busy: the analytics projector
    /// loads continuously, so all of them.
    pub warehouse_busy_hours: f64,
    /// Share of API calls X-Ray records (its default rule: 1 a second, then 5 %).
    pub trace_share: f64,
}

impl Workload {
    /// The seed's scale: 5 million orders a day, a 10× morning peak.
    pub fn seed() -> Workload {
        Workload {
            orders_per_day: 5_000_000.0,
            peak_factor: 10.0,
            commands_per_order: 4.0,
            events_per_order: 8.0,
            event_bytes: 400.0,
            stored_event_bytes: 600.0,
            applications: 7.0,
            tasks_per_application: 2.0,
            postgres_writes_per_order: 6.0,
            postgres_writes_per_acu_second: 250.0,
            warehouse_busy_hours: 24.0,
            trace_share: 0.05,
        }
    }
}

/// us-east-1 on-demand list prices, USD. Checked against AWS pages and the AWS Price
/// List (through infracost's fixtures, 2024–2026) except where marked *unverified*:
/// those are the last public figures we know, not re-checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Prices {
    /// Kinesis provisioned: per shard-hour.
    pub kinesis_shard_hour: f64,
    /// Kinesis provisioned: per million 25 KB PUT payload units.
    pub kinesis_put_units_million: f64,
    /// Kinesis on-demand: per stream-hour.
    pub kinesis_on_demand_stream_hour: f64,
    /// Kinesis on-demand: per GB written (records rounded up to 1 KB).
    pub kinesis_on_demand_gb_in: f64,
    /// Kinesis on-demand: per GB read.
    pub kinesis_on_demand_gb_out: f64,
    /// DynamoDB on-demand: per million write request units (after the Nov 2024 cut).
    pub dynamodb_wru_million: f64,
    /// DynamoDB on-demand: per million read request units.
    pub dynamodb_rru_million: f64,
    /// DynamoDB storage per GB-month.
    pub dynamodb_gb_month: f64,
    /// DynamoDB continuous backups (PITR) per GB-month.
    pub dynamodb_pitr_gb_month: f64,
    /// Lambda: per million requests.
    pub lambda_requests_million: f64,
    /// Lambda arm64: per GB-second.
    pub lambda_arm_gb_second: f64,
    /// API Gateway HTTP API: per million requests, the first 300 million.
    pub http_api_million_first: f64,
    /// API Gateway HTTP API: per million requests beyond 300 million.
    pub http_api_million_after: f64,
    /// SQS standard: per million requests.
    pub sqs_million: f64,
    /// Fargate Linux/ARM: per vCPU-hour.
    pub fargate_arm_vcpu_hour: f64,
    /// Fargate Linux/ARM: per GB-hour.
    pub fargate_arm_gb_hour: f64,
    /// Aurora Serverless v2, I/O-Optimized (no per-I/O charge): per ACU-hour.
    pub aurora_io_optimized_acu_hour: f64,
    /// Aurora I/O-Optimized storage per GB-month.
    pub aurora_io_optimized_gb_month: f64,
    /// DocumentDB db.r5.large per hour (an upper bound for db.r6g.large).
    pub docdb_large_hour: f64,
    /// DocumentDB per million I/Os.
    pub docdb_io_million: f64,
    /// ElastiCache cache.m7g.large per hour (*unverified*).
    pub elasticache_m7g_large_hour: f64,
    /// MemoryDB db.r6g.large per hour (*unverified*).
    pub memorydb_r6g_large_hour: f64,
    /// MemoryDB per GB written (*unverified*).
    pub memorydb_gb_written: f64,
    /// Redshift Serverless per RPU-hour.
    pub redshift_rpu_hour: f64,
    /// Interface VPC endpoint per AZ-hour.
    pub endpoint_az_hour: f64,
    /// Interface VPC endpoint per GB processed.
    pub endpoint_gb: f64,
    /// CloudWatch custom metric per month.
    pub cw_metric_month: f64,
    /// CloudWatch standard alarm per month.
    pub cw_alarm_month: f64,
    /// CloudWatch dashboard per month.
    pub cw_dashboard_month: f64,
    /// CloudWatch PutMetricData per thousand requests.
    pub cw_put_thousand: f64,
    /// CloudWatch Logs ingestion per GB.
    pub logs_gb: f64,
    /// KMS customer managed key per month.
    pub kms_key_month: f64,
    /// Secrets Manager per secret-month.
    pub secret_month: f64,
    /// X-Ray per million traces recorded.
    pub xray_million: f64,
}

impl Default for Prices {
    fn default() -> Prices {
        Prices {
            kinesis_shard_hour: 0.015,
            kinesis_put_units_million: 0.014,
            kinesis_on_demand_stream_hour: 0.04,
            kinesis_on_demand_gb_in: 0.08,
            kinesis_on_demand_gb_out: 0.04,
            dynamodb_wru_million: 0.625,
            dynamodb_rru_million: 0.125,
            dynamodb_gb_month: 0.25,
            dynamodb_pitr_gb_month: 0.20,
            lambda_requests_million: 0.20,
            lambda_arm_gb_second: 0.000_013_333_4,
            http_api_million_first: 1.00,
            http_api_million_after: 0.90,
            sqs_million: 0.40,
            fargate_arm_vcpu_hour: 0.032_38,
            fargate_arm_gb_hour: 0.003_56,
            aurora_io_optimized_acu_hour: 0.156,
            aurora_io_optimized_gb_month: 0.225,
            docdb_large_hour: 0.277,
            docdb_io_million: 0.20,
            elasticache_m7g_large_hour: 0.158,
            memorydb_r6g_large_hour: 0.309,
            memorydb_gb_written: 0.20,
            redshift_rpu_hour: 0.375,
            endpoint_az_hour: 0.01,
            endpoint_gb: 0.01,
            cw_metric_month: 0.30,
            cw_alarm_month: 0.10,
            cw_dashboard_month: 3.00,
            cw_put_thousand: 0.01,
            logs_gb: 0.50,
            kms_key_month: 1.00,
            secret_month: 0.40,
            xray_million: 5.00,
        }
    }
}

/// What `infra/terraform` deploys, counted from it (and its production example).
#[derive(Debug, Clone, PartialEq)]
pub struct Deployment {
    /// Availability zones of the subnets (each interface endpoint is paid per AZ).
    pub azs: f64,
    /// Interface VPC endpoints (gateway endpoints are free).
    pub interface_endpoints: f64,
    /// DocumentDB instances.
    pub docdb_instances: f64,
    /// ElastiCache nodes (primary and replica).
    pub elasticache_nodes: f64,
    /// MemoryDB nodes (primary and replica).
    pub memorydb_nodes: f64,
    /// Redshift Serverless base capacity.
    pub redshift_base_rpu: f64,
    /// A worker task's vCPUs and GB.
    pub task_vcpu: f64,
    /// A worker task's memory, GB.
    pub task_gb: f64,
    /// Customer managed KMS keys.
    pub kms_keys: f64,
    /// Secrets Manager secrets.
    pub secrets: f64,
    /// CloudWatch alarms (`infra/cloudwatch/alarms.json`).
    pub alarms: f64,
    /// Payment messages per invocation (the event source mapping's batch size).
    pub payment_batch: f64,
}

impl Deployment {
    /// `infra/terraform/examples/production.tfvars`.
    pub fn production() -> Deployment {
        Deployment {
            azs: 3.0,
            interface_endpoints: 10.0,
            docdb_instances: 2.0,
            elasticache_nodes: 2.0,
            memorydb_nodes: 2.0,
            redshift_base_rpu: 8.0,
            task_vcpu: 0.5,
            task_gb: 1.0,
            kms_keys: 6.0,
            secrets: 9.0,
            alarms: 17.0,
            payment_batch: 10.0,
        }
    }
}

/// One service's monthly cost and how it was reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// The service.
    pub service: &'static str,
    /// USD a month.
    pub monthly: f64,
    /// The arithmetic, in words and numbers.
    pub basis: String,
}

/// The estimate, per service.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// One line per service.
    pub lines: Vec<Line>,
    /// Kinesis shards the peak needs (provisioned mode).
    pub shards: f64,
    /// Aurora capacity units at the peak (the `aurora_max_acu` to set).
    pub peak_acu: f64,
}

impl Estimate {
    /// The whole bill.
    pub fn total(&self) -> f64 {
        self.lines.iter().map(|l| l.monthly).sum()
    }

    /// A Markdown table, the total last.
    pub fn table(&self) -> String {
        let mut out = String::from("| Service | USD / month | Basis |\n|---|---:|---|\n");
        for l in &self.lines {
            let _ = writeln!(out, "| {} | {:.0} | {} |", l.service, l.monthly, l.basis);
        }
        let _ = writeln!(out, "| **Total** | **{:.0}** | |", self.total());
        out
    }
}

fn millions(n: f64) -> String {
    format!("{:.0} M", n / 1e6)
}

/// The monthly bill of `deployment` carrying `work` at `prices`.
pub fn estimate(work: &Workload, prices: &Prices, deployment: &Deployment) -> Estimate {
    let p = prices;
    let orders = work.orders_per_day * DAYS;
    let commands = orders * work.commands_per_order;
    let events = orders * work.events_per_order;
    let mut lines = Vec::new();
    let mut line = |service: &'static str, monthly: f64, basis: String| {
        lines.push(Line {
            service,
            monthly,
            basis,
        })
    };

    // Kinesis: shards for the peak's bytes in and every application's reads (2 MB/s a
    // shard, shared), with a quarter of headroom; on-demand for comparison.
    let peak_mb_in = work.orders_per_day * work.events_per_order / 86_400.0 * work.peak_factor * work.event_bytes / 1e6;
    let shards = (peak_mb_in * 1.25)
        .max(peak_mb_in * work.applications / 2.0 * 1.25)
        .ceil()
        .max(2.0);
    let provisioned = shards * HOURS * p.kinesis_shard_hour + events / 1e6 * p.kinesis_put_units_million;
    let gb_billed_in = events * work.event_bytes.max(1024.0) / 1e9;
    let on_demand = HOURS * p.kinesis_on_demand_stream_hour
        + gb_billed_in * p.kinesis_on_demand_gb_in
        + events * work.event_bytes / 1e9 * work.applications * p.kinesis_on_demand_gb_out;
    line(
        "Kinesis Data Streams",
        provisioned.min(on_demand),
        format!(
            "provisioned, {shards:.0} shards for a {peak_mb_in:.1} MB/s peak read by {:.0} applications, {} PUT units; on-demand would be {on_demand:.0}",
            work.applications,
            millions(events)
        ),
    );

    // DynamoDB: a command is a transaction of its event and its idempotency claim (two
    // writes each, transactions cost double) and the outbox marker's clearing; a payment
    // claims, completes and appends like a command; the active orders model updates once
    // per command and payment; leases checkpoint every second and renew every two.
    let writes_per_order = work.commands_per_order * 5.0 + 7.0 + (work.commands_per_order + 1.0);
    let lease_writes = shards * work.applications * 1.5 * 86_400.0 * DAYS;
    let wru = orders * writes_per_order + lease_writes;
    let rru = orders * (work.commands_per_order + 1.0);
    let stored_gb = events * work.stored_event_bytes / 1e9;
    let dynamodb = wru / 1e6 * p.dynamodb_wru_million
        + rru / 1e6 * p.dynamodb_rru_million
        + stored_gb * (p.dynamodb_gb_month + p.dynamodb_pitr_gb_month);
    line(
        "DynamoDB (on-demand)",
        dynamodb,
        format!(
            "{} write units ({writes_per_order:.0} an order, {} for leases), {} read units, {stored_gb:.0} GB of events a month with PITR (storage grows by that each month)",
            millions(wru),
            millions(lease_writes),
            millions(rru)
        ),
    );

    // The API function: ~40 ms at 512 MB a command (a transaction, a put, the markers).
    let api_gb_s = commands * 0.040 * 0.5;
    let payment_invocations = orders / deployment.payment_batch;
    let payment_gb_s = payment_invocations * 0.250 * 0.25;
    let lambda = (commands + payment_invocations) / 1e6 * p.lambda_requests_million
        + (api_gb_s + payment_gb_s) * p.lambda_arm_gb_second;
    line(
        "Lambda (API, payment; arm64)",
        lambda,
        format!(
            "{} API invocations at 40 ms × 512 MB, {} payment batches of {:.0} at 250 ms × 256 MB",
            millions(commands),
            millions(payment_invocations),
            deployment.payment_batch
        ),
    );

    let first = commands.min(300e6);
    let http_api = first / 1e6 * p.http_api_million_first + (commands - first) / 1e6 * p.http_api_million_after;
    line(
        "API Gateway (HTTP API)",
        http_api,
        format!("{} requests (first 300 M at the first tier)", millions(commands)),
    );

    // SQS: one SendMessageBatch, ReceiveMessage and DeleteMessageBatch per batch; the
    // mapping's five pollers long-poll when idle.
    let sqs_requests = orders / deployment.payment_batch * 3.0 + 5.0 * 3.0 * 60.0 * HOURS;
    line(
        "SQS",
        sqs_requests / 1e6 * p.sqs_million,
        format!("{} requests", millions(sqs_requests)),
    );

    // And the outbox relay's one task.
    let tasks = work.applications * work.tasks_per_application + 1.0;
    let fargate =
        tasks * HOURS * (deployment.task_vcpu * p.fargate_arm_vcpu_hour + deployment.task_gb * p.fargate_arm_gb_hour);
    line(
        "ECS Fargate (workers; ARM)",
        fargate,
        format!(
            "{tasks:.0} tasks ({:.0} applications × {:.0}, and the relay) of {} vCPU / {} GB",
            work.applications, work.tasks_per_application, deployment.task_vcpu, deployment.task_gb
        ),
    );

    // Aurora: capacity follows the write rate (a third above the average for scaling's
    // lag), never below half a unit; I/O-Optimized, as writes dominate.
    let avg_acu =
        (work.orders_per_day * work.postgres_writes_per_order / 86_400.0 / work.postgres_writes_per_acu_second)
            .max(0.5);
    let peak_acu = (avg_acu * work.peak_factor).ceil();
    // One row of ~500 bytes an order (its lines inline; status and loyalty update rows).
    let aurora_gb = orders * 500.0 / 1e9;
    let aurora = HOURS * avg_acu * 1.3 * p.aurora_io_optimized_acu_hour + aurora_gb * p.aurora_io_optimized_gb_month;
    line(
        "Aurora PostgreSQL Serverless v2",
        aurora,
        format!(
            "{:.1} ACU on average (×1.3), {peak_acu:.0} at the peak, I/O-Optimized, {aurora_gb:.0} GB",
            avg_acu
        ),
    );

    let docdb_ios = orders * 5.0;
    let docdb = deployment.docdb_instances * HOURS * p.docdb_large_hour + docdb_ios / 1e6 * p.docdb_io_million;
    line(
        "DocumentDB",
        docdb,
        format!(
            "{:.0} × db.r6g.large (priced as db.r5.large), {} I/Os",
            deployment.docdb_instances,
            millions(docdb_ios)
        ),
    );

    line(
        "ElastiCache (Redis)",
        deployment.elasticache_nodes * HOURS * p.elasticache_m7g_large_hour,
        format!(
            "{:.0} × cache.m7g.large (price unverified)",
            deployment.elasticache_nodes
        ),
    );

    let memorydb_gb = orders * 2.0 * 200.0 / 1e9;
    line(
        "MemoryDB",
        deployment.memorydb_nodes * HOURS * p.memorydb_r6g_large_hour + memorydb_gb * p.memorydb_gb_written,
        format!(
            "{:.0} × db.r6g.large, {memorydb_gb:.0} GB written (prices unverified)",
            deployment.memorydb_nodes
        ),
    );

    line(
        "Redshift Serverless",
        deployment.redshift_base_rpu * work.warehouse_busy_hours * DAYS * p.redshift_rpu_hour,
        format!(
            "{:.0} RPU busy {:.0} h a day (continuous loading)",
            deployment.redshift_base_rpu, work.warehouse_busy_hours
        ),
    );

    // Endpoints carry the stream's bytes in and out, and the queue's, logs' and metrics'.
    let endpoint_gb = events * work.event_bytes / 1e9 * (1.0 + work.applications);
    line(
        "VPC interface endpoints",
        deployment.interface_endpoints * deployment.azs * HOURS * p.endpoint_az_hour + endpoint_gb * p.endpoint_gb,
        format!(
            "{:.0} endpoints × {:.0} AZs, {endpoint_gb:.0} GB through them",
            deployment.interface_endpoints, deployment.azs
        ),
    );

    // Metrics: ~15 per application, ~20 from the functions' EMF; one send a minute per
    // task; logs: ~600 B per API invocation, ~1 KB per payment batch, 20 GB of flow logs.
    let metrics = work.applications * 15.0 + 20.0;
    let puts = tasks * 60.0 * HOURS;
    let log_gb = commands * 600.0 / 1e9 + payment_invocations * 1000.0 / 1e9 + 20.0;
    let cloudwatch = metrics * p.cw_metric_month
        + deployment.alarms * p.cw_alarm_month
        + p.cw_dashboard_month
        + puts / 1e3 * p.cw_put_thousand
        + log_gb * p.logs_gb;
    line(
        "CloudWatch (metrics, alarms, dashboard, logs)",
        cloudwatch,
        format!(
            "{metrics:.0} metrics, {:.0} alarms, {} PutMetricData, {log_gb:.0} GB of logs",
            deployment.alarms,
            millions(puts)
        ),
    );

    let traces = (commands + payment_invocations) * work.trace_share;
    line(
        "X-Ray",
        traces / 1e6 * p.xray_million,
        format!(
            "{} traces ({:.0} % sampled)",
            millions(traces),
            work.trace_share * 100.0
        ),
    );

    line(
        "KMS and Secrets Manager",
        deployment.kms_keys * p.kms_key_month + deployment.secrets * p.secret_month,
        format!(
            "{:.0} keys, {:.0} secrets (requests a few dollars more)",
            deployment.kms_keys, deployment.secrets
        ),
    );

    Estimate {
        lines,
        shards,
        peak_acu,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(orders_per_day: f64) -> Estimate {
        let work = Workload {
            orders_per_day,
            ..Workload::seed()
        };
        estimate(&work, &Prices::default(), &Deployment::production())
    }

    fn line(e: &Estimate, service: &str) -> f64 {
        e.lines
            .iter()
            .find(|l| l.service.starts_with(service))
            .map_or(f64::NAN, |l| l.monthly)
    }

    #[test]
    fn usage_scales_with_orders_and_capacity_does_not() {
        let (one, two) = (at(5e6), at(10e6));
        for usage in ["API Gateway", "Lambda", "DynamoDB"] {
            let ratio = line(&two, usage) / line(&one, usage);
            assert!((1.8..=2.0).contains(&ratio), "{usage}: ×{ratio}");
        }
        for capacity in ["ElastiCache", "MemoryDB", "Redshift", "VPC"] {
            let ratio = line(&two, capacity) / line(&one, capacity);
            assert!((1.0..1.3).contains(&ratio), "{capacity}: ×{ratio}");
        }
        assert!(two.total() > one.total());
    }

    #[test]
    fn the_http_api_tiers_at_three_hundred_million() {
        // 2.5 M orders a day × 4 commands × 30.4 days = 304 M requests.
        let e = at(2.5e6);
        let requests = 2.5e6 * 4.0 * DAYS;
        let expected = 300.0 * 1.0 + (requests / 1e6 - 300.0) * 0.9;
        assert!((line(&e, "API Gateway") - expected).abs() < 1e-6);
    }

    #[test]
    fn the_peak_sizes_the_shards() {
        let calm = estimate(
            &Workload {
                peak_factor: 1.0,
                ..Workload::seed()
            },
            &Prices::default(),
            &Deployment::production(),
        );
        let seed = at(5e6);
        assert!(seed.shards > calm.shards, "{} vs {}", seed.shards, calm.shards);
        assert!(seed.peak_acu > calm.peak_acu);
        // Every line is a real amount.
        assert!(seed.lines.iter().all(|l| l.monthly.is_finite() && l.monthly > 0.0));
    }
}
