//! Every environment variable the code reads besides the names' `CAFE_<KEY>` overrides
//! ([`crate::Names::var`]). Code reads them through these constants; a test fails on a
//! `"CAFE_…"` literal anywhere else in the workspace, so none can be read unlisted.

/// Connection URL of the orders model's PostgreSQL (Aurora in AWS, with `sslmode`).
pub const POSTGRES_URL: &str = "CAFE_POSTGRES_URL";
/// Connection URL of a PostgreSQL-wire warehouse (the local stack's stand-in for
/// Redshift; in AWS the warehouse is reached through the Data API instead).
pub const ANALYTICS_URL: &str = "CAFE_ANALYTICS_URL";
/// The cache model's Redis (ElastiCache in AWS).
pub const REDIS_URL: &str = "CAFE_REDIS_URL";
/// The inventory model's Redis (MemoryDB in AWS, durable); the cache's Redis when unset.
pub const MEMORYDB_URL: &str = "CAFE_MEMORYDB_URL";
/// The documents model's MongoDB-wire server (DocumentDB in AWS).
pub const MONGO_URL: &str = "CAFE_MONGO_URL";

/// Redshift Serverless workgroup of the Data API (one of workgroup and cluster).
pub const REDSHIFT_WORKGROUP: &str = "CAFE_REDSHIFT_WORKGROUP";
/// Provisioned Redshift cluster of the Data API (one of workgroup and cluster).
pub const REDSHIFT_CLUSTER: &str = "CAFE_REDSHIFT_CLUSTER";
/// Database user for a provisioned cluster (temporary credentials).
pub const REDSHIFT_DB_USER: &str = "CAFE_REDSHIFT_DB_USER";
/// The warehouse's database.
pub const REDSHIFT_DATABASE: &str = "CAFE_REDSHIFT_DATABASE";
/// Secrets Manager secret the Data API authenticates with (an ARN, not the secret).
pub const REDSHIFT_SECRET_ARN: &str = "CAFE_REDSHIFT_SECRET_ARN";
/// Schema of the analytics facts in the projector function (default `analytics`).
pub const ANALYTICS_SCHEMA: &str = "CAFE_ANALYTICS_SCHEMA";

/// The projector function's consumer application (its metrics dimension).
pub const APPLICATION: &str = "CAFE_APPLICATION";
/// What the projector function hosts: `envelope-check`, `analytics`, `active-orders`.
pub const PROJECTION: &str = "CAFE_PROJECTION";

/// How long the payment function's idempotency claim holds, in seconds (above the
/// function's timeout).
pub const IDEMPOTENCY_LEASE_SECS: &str = "CAFE_IDEMPOTENCY_LEASE_SECS";
/// The simulated gateway's per-charge limit in cents.
pub const GATEWAY_LIMIT_CENTS: &str = "CAFE_GATEWAY_LIMIT_CENTS";
/// Customers the simulated gateway declines (comma-separated).
pub const GATEWAY_BLOCKED: &str = "CAFE_GATEWAY_BLOCKED";
/// `customer:failures` the simulated gateway fails before succeeding.
pub const GATEWAY_FLAKY: &str = "CAFE_GATEWAY_FLAKY";
/// How long each simulated charge takes, in milliseconds.
pub const GATEWAY_LATENCY_MS: &str = "CAFE_GATEWAY_LATENCY_MS";
/// A file the simulated gateway appends each decision to (the charge-twice audit).
pub const GATEWAY_LEDGER: &str = "CAFE_GATEWAY_LEDGER";

/// Test hook: the command API pauses this long after appending, before publishing
/// (crash-between-append-and-publish experiments). Never set in a deployment.
pub const FAULT_PAUSE_AFTER_APPEND_MS: &str = "CAFE_FAULT_PAUSE_AFTER_APPEND_MS";
/// Test hook: a replay pauses this long before swapping the serving pointer. Never set
/// in a deployment.
pub const FAULT_SWAP_PAUSE_MS: &str = "CAFE_FAULT_SWAP_PAUSE_MS";
/// Test hook: a file `cafe consume` and `cafe relay` write every AWS call they made to
/// when they stop (`Service.Operation` → count, JSON), for the tests that hold a
/// service's calls to its unit's list. Never set in a deployment.
pub const RECORD_AWS_CALLS: &str = "CAFE_RECORD_AWS_CALLS";
/// The `cafe` configuration file (TOML, section `[stack]`).
pub const CONFIG: &str = "CAFE_CONFIG";

/// Every variable above.
pub const ALL: &[&str] = &[
    POSTGRES_URL,
    ANALYTICS_URL,
    REDIS_URL,
    MEMORYDB_URL,
    MONGO_URL,
    REDSHIFT_WORKGROUP,
    REDSHIFT_CLUSTER,
    REDSHIFT_DB_USER,
    REDSHIFT_DATABASE,
    REDSHIFT_SECRET_ARN,
    ANALYTICS_SCHEMA,
    APPLICATION,
    PROJECTION,
    IDEMPOTENCY_LEASE_SECS,
    GATEWAY_LIMIT_CENTS,
    GATEWAY_BLOCKED,
    GATEWAY_FLAKY,
    GATEWAY_LATENCY_MS,
    GATEWAY_LEDGER,
    FAULT_PAUSE_AFTER_APPEND_MS,
    FAULT_SWAP_PAUSE_MS,
    RECORD_AWS_CALLS,
    CONFIG,
];
