//! The stand-ins: what they replace, how each is started, and how we know it is ours.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::config::{LOOPBACK, PG_SUPERUSER, StackConfig};
use crate::error::StackError;

/// One process of the local stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// ferrokinesis, embedded in `cafe stack serve kinesis`.
    Kinesis,
    /// dynoxide, embedded in `cafe stack serve dynamodb`.
    DynamoDb,
    /// fauxqs (Node.js): SQS. moto's SQS does work proportional to the queue depth on
    /// every send and receive, so a backlog slowed its own draining and starved every other
    /// moto client; fauxqs' cost stays flat (README, "The local stack").
    Sqs,
    /// moto server: CloudWatch.
    Moto,
    /// PostgreSQL 15: Aurora (`cafe` database) and Redshift (`analytics` database).
    Postgres,
    /// Redis: ElastiCache.
    Redis,
    /// Redis in cluster mode, the first of two shards: MemoryDB, which is always a
    /// cluster, so the inventory's client is the cluster client here as there.
    MemoryDb,
    /// The MemoryDB stand-in's second shard (the upper half of the hash slots).
    MemoryDb2,
    /// nx-27017, a MongoDB-wire server: DocumentDB.
    Mongo,
    /// cargo-lambda's runtime emulator (`cargo lambda watch --only-lambda-apis`): the
    /// Lambda service's Invoke and Runtime APIs. Function processes are started by the
    /// pipeline and take their invocations from it.
    Lambda,
}

impl Service {
    /// Every service, in start order.
    pub const ALL: [Service; 10] = [
        Service::Kinesis,
        Service::DynamoDb,
        Service::Sqs,
        Service::Moto,
        Service::Postgres,
        Service::Redis,
        Service::MemoryDb,
        Service::MemoryDb2,
        Service::Mongo,
        Service::Lambda,
    ];

    /// Short name used for pid and log files and the status table.
    pub fn name(self) -> &'static str {
        match self {
            Service::Kinesis => "kinesis",
            Service::DynamoDb => "dynamodb",
            Service::Sqs => "sqs",
            Service::Moto => "moto",
            Service::Postgres => "postgres",
            Service::Redis => "redis",
            Service::MemoryDb => "memorydb",
            Service::MemoryDb2 => "memorydb-2",
            Service::Mongo => "mongo",
            Service::Lambda => "lambda",
        }
    }

    /// The AWS service(s) it stands in for.
    pub fn replaces(self) -> &'static str {
        match self {
            Service::Kinesis => "Kinesis",
            Service::DynamoDb => "DynamoDB",
            Service::Sqs => "SQS",
            Service::Moto => "CloudWatch",
            Service::Postgres => "Aurora PostgreSQL, Redshift",
            Service::Redis => "ElastiCache",
            Service::MemoryDb => "MemoryDB (shard 1 of 2)",
            Service::MemoryDb2 => "MemoryDB (shard 2 of 2)",
            Service::Mongo => "DocumentDB",
            Service::Lambda => "Lambda",
        }
    }

    /// What runs locally.
    pub fn stand_in(self) -> &'static str {
        match self {
            Service::Kinesis => "ferrokinesis 0.7.0 (embedded)",
            Service::DynamoDb => "dynoxide-rs 3.2.0 (embedded)",
            Service::Sqs => "fauxqs 1.9.2",
            Service::Moto => "moto server 5.2.5",
            Service::Postgres => "PostgreSQL 15",
            Service::Redis => "redis-server",
            Service::MemoryDb | Service::MemoryDb2 => "redis-server, cluster mode",
            Service::Mongo => "nx-27017 0.8.1",
            Service::Lambda => "cargo-lambda 1.9.2 watch",
        }
    }

    /// Its loopback port.
    pub fn port(self, cfg: &StackConfig) -> u16 {
        match self {
            Service::Kinesis => cfg.ports.kinesis,
            Service::DynamoDb => cfg.ports.dynamodb,
            Service::Sqs => cfg.ports.sqs,
            Service::Moto => cfg.ports.moto,
            Service::Postgres => cfg.ports.postgres,
            Service::Redis => cfg.ports.redis,
            Service::MemoryDb => cfg.ports.memorydb,
            Service::MemoryDb2 => cfg.ports.memorydb_2,
            Service::Mongo => cfg.ports.mongo,
            Service::Lambda => cfg.ports.lambda,
        }
    }

    /// Its data directory.
    pub fn data_dir(self, cfg: &StackConfig) -> PathBuf {
        match self {
            Service::Postgres => postgres_data_dir(cfg),
            _ => cfg.data_dir().join(self.name()),
        }
    }

    /// Its log file.
    pub fn log_file(self, cfg: &StackConfig) -> PathBuf {
        cfg.log_dir().join(format!("{}.log", self.name()))
    }

    /// Its pid file.
    pub fn pid_file(self, cfg: &StackConfig) -> PathBuf {
        cfg.run_dir().join(format!("{}.pid", self.name()))
    }

    /// The signal that stops it cleanly and quickly. PostgreSQL's SIGTERM waits for
    /// clients to disconnect ("smart" shutdown); SIGINT is its "fast" shutdown.
    pub fn stop_signal(self) -> nix::sys::signal::Signal {
        match self {
            Service::Postgres => nix::sys::signal::Signal::SIGINT,
            _ => nix::sys::signal::Signal::SIGTERM,
        }
    }

    /// The command that runs it in the foreground. `emulator_exe` is the `cafe` binary,
    /// which embeds the Rust emulators.
    pub fn command(self, cfg: &StackConfig, emulator_exe: &std::path::Path) -> Result<Command, StackError> {
        let port = self.port(cfg).to_string();
        let data = self.data_dir(cfg);
        let mut cmd = match self {
            Service::Kinesis | Service::DynamoDb => {
                let mut c = Command::new(emulator_exe);
                c.args(["stack", "serve", self.name()]);
                c
            }
            Service::Sqs => {
                let modules = &cfg.sqs_modules;
                if !modules.join("fauxqs").is_dir() {
                    return Err(StackError::Missing {
                        program: modules.join("fauxqs").display().to_string(),
                        hint: "run infra/local/dev.sh up, which installs it with npm".to_owned(),
                    });
                }
                // The launcher is part of this binary, so `cafe` works from any directory.
                std::fs::create_dir_all(&data).map_err(StackError::path(&data))?;
                let launcher = data.join("fauxqs.mjs");
                std::fs::write(&launcher, FAUXQS_LAUNCHER).map_err(StackError::path(&launcher))?;
                let mut c = Command::new(&cfg.node);
                c.arg(&launcher).arg(modules).arg(&port);
                c
            }
            Service::Moto => {
                let mut c = Command::new(venv_program(cfg, "moto_server")?);
                c.args(["-H", LOOPBACK, "-p", &port]);
                c
            }
            Service::Mongo => {
                let mut c = Command::new(venv_program(cfg, "nx-27017")?);
                c.args(["--host", LOOPBACK, "-p", &port, "--data-dir"]).arg(&data);
                // Its default pid and log files are fixed paths in /tmp, which would make a
                // second stack (the lifecycle test's) refuse to start.
                c.arg("--pid-file").arg(data.join("nx-27017.pid"));
                c.arg("--log-file").arg(cfg.log_dir().join("mongo.nx.log"));
                c
            }
            Service::Lambda => {
                let mut c = Command::new(venv_program(cfg, "cargo-lambda")?);
                // Function names are the workspace's binaries (it reads them with `cargo
                // metadata`, offline). It builds nothing: the pipeline starts the functions.
                c.args([
                    "lambda",
                    "watch",
                    "--only-lambda-apis",
                    "--offline",
                    "-A",
                    LOOPBACK,
                    "-P",
                    &port,
                ])
                .arg("--manifest-path")
                .arg(&cfg.workspace_manifest);
                // No `--concurrency`: the function processes we start all ask the one
                // queue of invocations for the next, so they already run side by side.
                // Above 1, cargo-lambda 1.9.2's instance monitor starts instances of its
                // own with `cargo run` whenever none of *its* instances is idle (ours are
                // not in its pool), despite `--only-lambda-apis`.
                c
            }
            Service::Redis => redis_server(&port, &data)?,
            Service::MemoryDb | Service::MemoryDb2 => {
                let mut c = redis_server(&port, &data)?;
                // The slots and the other node are remembered in `nodes.conf` (in the data
                // dir), so the cluster survives `down`/`up`; provisioning forms it once.
                // Without full coverage required, the other shard keeps serving its half
                // while one is down (a chaos experiment restarts one).
                c.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
                    .args(["--cluster-node-timeout", "2000"])
                    .args(["--cluster-require-full-coverage", "no"]);
                c
            }
            Service::Postgres => {
                let mut c = Command::new(cfg.pg_bin_dir.join("postgres"));
                c.arg("-D").arg(&data).args(["-p", &port]);
                for setting in [
                    format!("listen_addresses={LOOPBACK}"),
                    "unix_socket_directories=".to_owned(),
                    // Durable on clean shutdown and crash-safe, but a commit does not wait for
                    // its WAL flush: a local stand-in, not the system of record.
                    "synchronous_commit=off".to_owned(),
                    "max_connections=300".to_owned(),
                ] {
                    c.arg("-c").arg(setting);
                }
                as_postgres_user(&mut c)?;
                c
            }
        };
        cmd.stdin(Stdio::null());
        Ok(cmd)
    }
}

/// Starts fauxqs on 127.0.0.1 (its own CLI binds 0.0.0.0).
const FAUXQS_LAUNCHER: &str = include_str!("../sqs/fauxqs.mjs");

/// A Redis server on loopback, appending every write to its log (MemoryDB and
/// ElastiCache both keep data across a restart here).
fn redis_server(port: &str, data: &std::path::Path) -> Result<Command, StackError> {
    let mut c = Command::new(system_program("redis-server", "apt-get install redis-server")?);
    c.args([
        "--bind",
        LOOPBACK,
        "--port",
        port,
        "--daemonize",
        "no",
        "--appendonly",
        "yes",
    ])
    .args(["--save", "", "--protected-mode", "yes", "--dir"])
    .arg(data);
    Ok(c)
}

fn venv_program(cfg: &StackConfig, name: &str) -> Result<PathBuf, StackError> {
    let p = cfg.venv.join("bin").join(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(StackError::Missing {
            program: p.display().to_string(),
            hint: "run infra/local/dev.sh up, which makes the venv".to_owned(),
        })
    }
}

fn system_program(name: &str, hint: &str) -> Result<PathBuf, StackError> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain(["/usr/sbin".into(), "/usr/bin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| StackError::Missing {
            program: name.to_owned(),
            hint: hint.to_owned(),
        })
}

/// PostgreSQL refuses to run as root. When we are root, its processes run as the
/// `postgres` system user that Debian's package creates.
pub(crate) fn postgres_owner() -> Option<nix::unistd::User> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    nix::unistd::User::from_name("postgres").ok().flatten()
}

pub(crate) fn as_postgres_user(cmd: &mut Command) -> Result<(), StackError> {
    use std::os::unix::process::CommandExt;
    if nix::unistd::geteuid().is_root() {
        let user = postgres_owner().ok_or_else(|| StackError::Missing {
            program: "user postgres".to_owned(),
            hint: "apt-get install postgresql-15 creates it".to_owned(),
        })?;
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    Ok(())
}

/// The cluster lives under the state dir unless the `postgres` user (when we run as
/// root) cannot reach it, e.g. a clone under `/root`: then a stable directory in
/// `/var/tmp` named after the state dir, so data still survives `down`/`up`.
fn postgres_data_dir(cfg: &StackConfig) -> PathBuf {
    let default = cfg.data_dir().join("postgres");
    let Some(user) = postgres_owner() else { return default };
    if reachable_by(&cfg.state_dir, user.uid.as_raw(), user.gid.as_raw()) {
        return default;
    }
    let tag = cfg
        .state_dir
        .display()
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    PathBuf::from(format!("/var/tmp/cloudcafe-{tag:016x}/postgres"))
}

/// Whether every existing ancestor of `path` lets `uid`/`gid` search it.
fn reachable_by(path: &std::path::Path, uid: u32, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    path.ancestors().filter_map(|a| std::fs::metadata(a).ok()).all(|m| {
        let mode = m.mode();
        if m.uid() == uid {
            mode & 0o100 != 0
        } else if m.gid() == gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    })
}

/// Arguments of `initdb` for a fresh cluster: our superuser, trust on loopback only
/// (the server listens nowhere else), UTF-8, C collation for stable sort order.
pub(crate) fn initdb_command(cfg: &StackConfig, data: &std::path::Path) -> Result<Command, StackError> {
    let mut c = Command::new(cfg.pg_bin_dir.join("initdb"));
    c.arg("-D")
        .arg(data)
        .args([
            "-U",
            PG_SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ])
        .stdin(Stdio::null());
    as_postgres_user(&mut c)?;
    Ok(c)
}
