//! Configuration of the local stack: ports and paths, and the resource names.
//!
//! Layered the same way for every binary: built-in defaults (names from
//! `infra/names.json` through [`cafe_settings::Names`], the ports below) → an optional
//! TOML file named by `CAFE_CONFIG` (section `[stack]`) → `CAFE__STACK__<KEY>`
//! environment variables (`CAFE__STACK__PORTS__KINESIS=4567`,
//! `CAFE__STACK__STATE_DIR=/tmp/x`) → a name's own `CAFE_<KEY>` variable, the one a
//! deployment hands every unit (`CAFE_STREAM`).

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

pub use cafe_settings::Names;
use cafe_settings::vars;

use crate::error::StackError;

/// Loopback ports of the stand-ins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ports {
    /// Kinesis (ferrokinesis).
    pub kinesis: u16,
    /// DynamoDB (dynoxide).
    pub dynamodb: u16,
    /// SQS (fauxqs).
    pub sqs: u16,
    /// CloudWatch (moto).
    pub moto: u16,
    /// PostgreSQL (Aurora and Redshift roles).
    pub postgres: u16,
    /// Redis (the ElastiCache role).
    pub redis: u16,
    /// The MemoryDB role's first shard: a Redis node in cluster mode. Its cluster bus
    /// listens 10000 above (Redis's rule), so this must be at most 55535.
    pub memorydb: u16,
    /// The MemoryDB role's second shard (the other half of the hash slots); its bus
    /// port is 10000 above too.
    pub memorydb_2: u16,
    /// MongoDB wire (DocumentDB role).
    pub mongo: u16,
    /// Lambda Invoke and Runtime APIs (cargo-lambda's emulator).
    pub lambda: u16,
}

impl Default for Ports {
    fn default() -> Self {
        // Away from the usual defaults so a developer's own servers never collide.
        Ports {
            kinesis: 14567,
            dynamodb: 18000,
            sqs: 19324,
            moto: 15000,
            postgres: 15432,
            redis: 16379,
            memorydb: 16380,
            memorydb_2: 16381,
            mongo: 27117,
            lambda: 19001,
        }
    }
}

/// Everything the local stack needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StackConfig {
    /// Where data, logs and pid files live (gitignored; default `<workspace>/.state`).
    pub state_dir: PathBuf,
    /// Python virtualenv holding moto and nx-27017 (kept outside the clone so it survives).
    pub venv: PathBuf,
    /// `node_modules` holding fauxqs, the SQS stand-in (`npm ci` of `infra/local/sqs`,
    /// outside the clone like the venv).
    pub sqs_modules: PathBuf,
    /// The Node.js (20 or newer) that runs fauxqs: a path, or a name looked up in `PATH`.
    pub node: PathBuf,
    /// Directory of the PostgreSQL server binaries (`initdb`, `postgres`).
    pub pg_bin_dir: PathBuf,
    /// Shards of the events stream.
    pub stream_shards: u32,
    /// Persist the Kinesis stand-in's streams across `down`/`up`. Off by default:
    /// ferrokinesis writes a full snapshot per mutation in this mode (see
    /// `emulators::serve_kinesis`), fine for a few records, far too slow under load.
    pub kinesis_durable: bool,
    /// fsync the DynamoDB stand-in's SQLite file on every commit. Off by default: its
    /// data then survives a crash or kill of the stack (SQLite's WAL is in the page
    /// cache) but not a crash of the machine, which is what a local stack needs. On, it
    /// pays one fsync per item of a BatchWriteItem (each item is its own SQLite
    /// transaction there), which makes bulk writes cost what single puts cost.
    pub dynamodb_fsync: bool,
    /// The workspace's `Cargo.toml`: the Lambda emulator names functions after its
    /// binaries (default: the workspace root's, found like `state_dir`).
    pub workspace_manifest: PathBuf,
    /// Instances of the payment function the main job starts (AWS's concurrency): as
    /// many processes, each taking the next invocation the emulator holds, with one
    /// event-source-mapping poller more. Default 2: with one, the main job's payment
    /// backlog sat at the edge of its 5 s health limit on 2 cores (4.0-10.4 s over five
    /// runs), with two it is through in under 2 s. `cafe scenario cold-start-avalanche`
    /// starts many at once.
    pub lambda_concurrency: u32,
    /// Loopback ports.
    pub ports: Ports,
    /// Resource names.
    pub names: Names,
}

impl Default for StackConfig {
    fn default() -> Self {
        let cache = std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".cache/cloudcafe"))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        StackConfig {
            // Relative: resolved against the workspace root at load time (see `load`).
            state_dir: PathBuf::from(".state"),
            venv: cache.join("venv"),
            sqs_modules: cache.join("sqs/node_modules"),
            node: PathBuf::from("node"),
            pg_bin_dir: PathBuf::from("/usr/lib/postgresql/15/bin"),
            stream_shards: 4,
            kinesis_durable: false,
            dynamodb_fsync: false,
            workspace_manifest: PathBuf::from("Cargo.toml"),
            lambda_concurrency: 2,
            ports: Ports::default(),
            names: Names::default(),
        }
    }
}

/// The loopback address every stand-in binds to; nothing listens beyond it.
pub const LOOPBACK: &str = "127.0.0.1";

/// The highest port a Redis cluster node may take: its bus is 10000 above.
pub const MAX_CLUSTER_PORT: u16 = u16::MAX - 10_000;

impl StackConfig {
    /// Loads defaults → `CAFE_CONFIG` file → `CAFE__STACK__*` environment.
    pub fn load() -> Result<Self, StackError> {
        let mut figment = Figment::from(Serialized::defaults(StackConfig::default()));
        if let Some(path) = std::env::var_os(cafe_settings::vars::CONFIG) {
            figment = figment.merge(Figment::from(Toml::file_exact(path)).focus("stack"));
        }
        let mut cfg: StackConfig = figment
            .merge(Env::prefixed("CAFE__STACK__").split("__"))
            .extract()
            .map_err(|e| StackError::Config(e.to_string()))?;
        cfg.names = cfg
            .names
            .overlaid(|k| std::env::var(k).ok())
            .map_err(|e| StackError::Config(e.to_string()))?;
        // A relative state dir hangs off the workspace root found from the working
        // directory, so `cargo test` in a crate directory and `dev.sh` at the root find the
        // same stack. Found at run time on purpose: a path baked in at compile time goes
        // stale when clones at other paths share one target directory.
        if cfg.state_dir.is_relative() || cfg.workspace_manifest.is_relative() {
            let cwd = std::env::current_dir().map_err(StackError::Io)?;
            let root = workspace_root(&cwd).unwrap_or(cwd);
            cfg.state_dir = root.join(&cfg.state_dir);
            cfg.workspace_manifest = root.join(&cfg.workspace_manifest);
        }
        for (what, port) in [("memorydb", cfg.ports.memorydb), ("memorydb_2", cfg.ports.memorydb_2)] {
            if port > MAX_CLUSTER_PORT {
                return Err(StackError::Config(format!(
                    "ports.{what} is {port}: a Redis cluster node's bus listens 10000 above its port, so it must be at most {MAX_CLUSTER_PORT}"
                )));
            }
        }
        cfg.state_dir = normalize(&cfg.state_dir);
        cfg.venv = absolute(&cfg.venv)?;
        cfg.sqs_modules = absolute(&cfg.sqs_modules)?;
        Ok(cfg)
    }

    /// `http://127.0.0.1:<port>` of an HTTP stand-in.
    pub fn http_endpoint(&self, port: u16) -> String {
        format!("http://{LOOPBACK}:{port}")
    }

    /// The Kinesis endpoint.
    pub fn kinesis_endpoint(&self) -> String {
        self.http_endpoint(self.ports.kinesis)
    }

    /// The DynamoDB endpoint.
    pub fn dynamodb_endpoint(&self) -> String {
        self.http_endpoint(self.ports.dynamodb)
    }

    /// The SQS endpoint (fauxqs).
    pub fn sqs_endpoint(&self) -> String {
        self.http_endpoint(self.ports.sqs)
    }

    /// The CloudWatch endpoint (moto).
    pub fn moto_endpoint(&self) -> String {
        self.http_endpoint(self.ports.moto)
    }

    /// A libpq-style connection string for one database.
    pub fn postgres_url(&self, database: &str) -> String {
        format!(
            "host={LOOPBACK} port={} user={PG_SUPERUSER} dbname={database}",
            self.ports.postgres
        )
    }

    /// The Redis URL (the cache's, ElastiCache in AWS).
    pub fn redis_url(&self) -> String {
        self.redis_node_url(self.ports.redis)
    }

    /// The MemoryDB stand-in's URL: its first shard, from which a cluster client finds
    /// the other, as from MemoryDB's cluster endpoint.
    pub fn memorydb_url(&self) -> String {
        self.redis_node_url(self.ports.memorydb)
    }

    /// The URL of the Redis server (or cluster node) on `port`.
    pub fn redis_node_url(&self, port: u16) -> String {
        format!("redis://{LOOPBACK}:{port}/")
    }

    /// The MongoDB-wire URL.
    pub fn mongo_url(&self) -> String {
        format!("mongodb://{LOOPBACK}:{}/?directConnection=true", self.ports.mongo)
    }

    /// The environment a process needs to reach this stack through the AWS SDK's own
    /// default chain: no code path differs between local and AWS, only these variables.
    pub fn aws_env(&self) -> Vec<(String, String)> {
        [
            ("AWS_REGION", self.names.region.clone()),
            ("AWS_ACCESS_KEY_ID", "local".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "local".to_owned()),
            ("AWS_ENDPOINT_URL_KINESIS", self.kinesis_endpoint()),
            ("AWS_ENDPOINT_URL_DYNAMODB", self.dynamodb_endpoint()),
            ("AWS_ENDPOINT_URL_SQS", self.sqs_endpoint()),
            ("AWS_ENDPOINT_URL_CLOUDWATCH", self.moto_endpoint()),
            (vars::POSTGRES_URL, self.postgres_url(&self.names.orders_database)),
            (vars::ANALYTICS_URL, self.postgres_url(&self.names.analytics_database)),
            (vars::REDIS_URL, self.redis_url()),
            (vars::MEMORYDB_URL, self.memorydb_url()),
            (vars::MONGO_URL, self.mongo_url()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Data of every service (removed by `up --fresh`).
    pub fn data_dir(&self) -> PathBuf {
        self.state_dir.join("data")
    }

    /// The simulated payment gateway's ledger: the gateway's own books, kept with the
    /// stack's data (so `up --fresh` clears it with the event store it must agree with).
    pub fn gateway_ledger(&self) -> PathBuf {
        self.data_dir().join("payment-gateway").join("ledger.jsonl")
    }

    /// The local identity provider's signing key and JWKS (kept by `up --fresh`, so
    /// tokens minted before stay valid).
    pub fn auth_dir(&self) -> PathBuf {
        self.state_dir.join("auth")
    }

    /// Log files, one per service.
    pub fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
    }

    /// Pid files, one per service.
    pub fn run_dir(&self) -> PathBuf {
        self.state_dir.join("run")
    }
}

/// Superuser of the local PostgreSQL cluster (trust auth on loopback only).
pub const PG_SUPERUSER: &str = "cafe";

fn absolute(p: &Path) -> Result<PathBuf, StackError> {
    if p.is_absolute() {
        return Ok(p.to_owned());
    }
    Ok(std::env::current_dir().map_err(StackError::Io)?.join(p))
}

/// The nearest ancestor of `dir` (itself included) holding `infra/names.json`.
fn workspace_root(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|a| a.join("infra/names.json").is_file())
        .map(Path::to_owned)
}

/// Removes `.` and `..` components without touching the file system (the directory may
/// not exist yet), so paths compare equal in pid-file checks and messages.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn environment_overrides_defaults() {
        figment::Jail::expect_with(|jail| {
            // The test suite's own stack is configured by these very variables.
            jail.clear_env();
            jail.set_env("CAFE__STACK__PORTS__KINESIS", "4999");
            jail.set_env("CAFE__STACK__NAMES__STREAM", "other");
            let cfg = StackConfig::load().map_err(|e| e.to_string())?;
            assert_eq!(cfg.ports.kinesis, 4999);
            assert_eq!(cfg.names.stream, "other");
            assert_eq!(cfg.ports.redis, Ports::default().redis);
            // A name's own variable (what a deployment sets) wins over the stack's.
            jail.set_env("CAFE_STREAM", "deployed");
            assert_eq!(StackConfig::load().map_err(|e| e.to_string())?.names.stream, "deployed");
            Ok(())
        });
    }

    #[test]
    fn a_relative_state_dir_hangs_off_the_workspace_root_found_at_run_time() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            let root = jail.directory().to_owned();
            for dir in ["infra", "producers/src"] {
                std::fs::create_dir_all(root.join(dir)).map_err(|e| e.to_string())?;
            }
            jail.create_file("infra/names.json", "{}")?;
            jail.change_dir("producers/src")?;
            let cfg = StackConfig::load().map_err(|e| e.to_string())?;
            assert_eq!(cfg.state_dir, normalize(&root.join(".state")));
            Ok(())
        });
    }

    #[test]
    fn outside_a_workspace_the_state_dir_is_under_the_working_directory() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            let cfg = StackConfig::load().map_err(|e| e.to_string())?;
            assert_eq!(cfg.state_dir, normalize(&jail.directory().join(".state")));
            Ok(())
        });
    }

    #[test]
    fn a_memorydb_port_without_room_for_its_cluster_bus_is_refused() {
        figment::Jail::expect_with(|jail| {
            jail.clear_env();
            jail.set_env("CAFE__STACK__PORTS__MEMORYDB_2", "55535");
            assert_eq!(StackConfig::load().map_err(|e| e.to_string())?.ports.memorydb_2, 55535);
            jail.set_env("CAFE__STACK__PORTS__MEMORYDB_2", "55536");
            let err = StackConfig::load().expect_err("no room for the bus").to_string();
            assert!(err.contains("ports.memorydb_2 is 55536"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_are_refused() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CAFE__STACK__PORTZ__KINESIS", "1");
            assert!(StackConfig::load().is_err());
            Ok(())
        });
    }
}
