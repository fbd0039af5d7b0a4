//! Starting, checking and stopping the stack's processes.
//!
//! Each service runs in its own process group, detached from the shell that ran `up`,
//! with a pid file that records its pid *and* its kernel start time: `down` only ever
//! signals a process whose start time still matches, so a recycled pid is never hit.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::config::{LOOPBACK, StackConfig};
use crate::error::StackError;
use crate::health;
use crate::service::{Service, initdb_command, postgres_owner};

/// How long `up` waits for every service to answer its health probe.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(90);
/// How long `down` waits after the stop signal before it kills.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A process we started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracked {
    /// Its pid (and process group id).
    pub pid: i32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat`, field 22).
    pub start_time: u64,
}

/// What `up` did for one service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpOutcome {
    /// It was already running; nothing was done.
    AlreadyRunning,
    /// It was started.
    Started,
}

/// One row of the status table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    /// The service.
    pub service: Service,
    /// Its port.
    pub port: u16,
    /// Its pid, when a process of ours is alive.
    pub pid: Option<i32>,
    /// Whether it answered its protocol-level health probe.
    pub healthy: bool,
}

/// The local stack of one configuration.
#[derive(Debug, Clone)]
pub struct Stack {
    cfg: StackConfig,
    emulator_exe: PathBuf,
}

impl Stack {
    /// A stack; `emulator_exe` is the `cafe` binary that embeds the Rust emulators.
    pub fn new(cfg: StackConfig, emulator_exe: PathBuf) -> Self {
        Stack { cfg, emulator_exe }
    }

    /// The `cafe` binary it runs the embedded emulators with (also what experiments
    /// start worker processes from).
    pub fn exe(&self) -> &std::path::Path {
        &self.emulator_exe
    }

    /// Its configuration.
    pub fn config(&self) -> &StackConfig {
        &self.cfg
    }

    /// Starts whatever is not running and waits until every service is healthy.
    /// Idempotent: a second call finds everything running and starts nothing.
    /// `fresh` stops the stack and deletes its data first.
    pub async fn up(&self, fresh: bool) -> Result<Vec<(Service, UpOutcome)>, StackError> {
        if fresh {
            self.down().await?;
            for s in Service::ALL {
                remove_dir_if_exists(&s.data_dir(&self.cfg))?;
            }
            if let Some(gateway) = self.cfg.gateway_ledger().parent() {
                remove_dir_if_exists(gateway)?;
            }
        }
        self.up_only(&Service::ALL).await
    }

    /// Starts those of `services` that are not running and waits until they are
    /// healthy. Chaos tests run a private stack of one or two services this way (their
    /// own state dir and ports) and restart them without disturbing anyone else.
    pub async fn up_only(&self, services: &[Service]) -> Result<Vec<(Service, UpOutcome)>, StackError> {
        for dir in [self.cfg.data_dir(), self.cfg.log_dir(), self.cfg.run_dir()] {
            fs::create_dir_all(&dir).map_err(StackError::path(&dir))?;
        }
        let mut outcomes = Vec::new();
        for &service in services {
            if self.tracked(service).is_some() {
                outcomes.push((service, UpOutcome::AlreadyRunning));
                continue;
            }
            let port = service.port(&self.cfg);
            if std::net::TcpListener::bind((LOOPBACK, port)).is_err() {
                return Err(StackError::PortTaken {
                    service: service.name(),
                    port,
                });
            }
            self.prepare(service)?;
            self.spawn(service)?;
            outcomes.push((service, UpOutcome::Started));
        }
        let waits = services.iter().map(|&s| self.wait_healthy(s));
        for result in futures::future::join_all(waits).await {
            result?;
        }
        Ok(outcomes)
    }

    /// Stops one service of this stack (if it runs), waiting for it to exit. Returns
    /// the pid it had.
    pub async fn stop_one(&self, service: Service) -> Result<Option<i32>, StackError> {
        let pid_file = service.pid_file(&self.cfg);
        let tracked = self.tracked(service);
        if let Some(t) = tracked {
            stop(t, service.stop_signal()).await;
        }
        remove_file_if_exists(&pid_file)?;
        Ok(tracked.map(|t| t.pid))
    }

    /// Stops every process this stack started (and only those), waiting for each to exit.
    pub async fn down(&self) -> Result<Vec<(Service, Option<i32>)>, StackError> {
        let mut stopped = Vec::new();
        for service in Service::ALL.into_iter().rev() {
            stopped.push((service, self.stop_one(service).await?));
        }
        Ok(stopped)
    }

    /// Pid and health of every service.
    pub async fn status(&self) -> Vec<ServiceStatus> {
        let probes = Service::ALL.map(|s| async move {
            let pid = self.tracked(s).map(|t| t.pid);
            let healthy = pid.is_some() && health::probe(&self.cfg, s).await.is_ok();
            ServiceStatus {
                service: s,
                port: s.port(&self.cfg),
                pid,
                healthy,
            }
        });
        futures::future::join_all(probes).await
    }

    /// The live process of ours behind a service, if any.
    pub fn tracked(&self, service: Service) -> Option<Tracked> {
        let text = fs::read_to_string(service.pid_file(&self.cfg)).ok()?;
        let mut parts = text.split_whitespace();
        let pid = parts.next()?.parse().ok()?;
        let start_time = parts.next()?.parse().ok()?;
        let t = Tracked { pid, start_time };
        (start_time_of(pid) == Some(start_time)).then_some(t)
    }

    fn prepare(&self, service: Service) -> Result<(), StackError> {
        let data = service.data_dir(&self.cfg);
        fs::create_dir_all(&data).map_err(StackError::path(&data))?;
        if service == Service::Postgres && !data.join("PG_VERSION").exists() {
            if let Some(user) = postgres_owner() {
                // The cluster directory must belong to the user the server runs as.
                std::os::unix::fs::chown(&data, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                    .map_err(StackError::path(&data))?;
            }
            let out = initdb_command(&self.cfg, &data)?.output()?;
            if !out.status.success() {
                return Err(StackError::Command {
                    command: "initdb".to_owned(),
                    detail: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            }
        }
        Ok(())
    }

    fn spawn(&self, service: Service) -> Result<(), StackError> {
        use std::os::unix::process::CommandExt;
        let log_path = service.log_file(&self.cfg);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(StackError::path(&log_path))?;
        let mut cmd = service.command(&self.cfg, &self.emulator_exe)?;
        cmd.stdout(log.try_clone()?)
            .stderr(log)
            // Own process group: Ctrl-C in the terminal that ran `up` does not reach it,
            // and `down` can sweep any children it left.
            .process_group(0)
            .env("CAFE__STACK__STATE_DIR", &self.cfg.state_dir);
        let child = cmd.spawn().map_err(|e| StackError::Command {
            command: format!("{:?}", cmd.get_program()),
            detail: e.to_string(),
        })?;
        let pid = i32::try_from(child.id()).map_err(|e| StackError::Command {
            command: service.name().to_owned(),
            detail: e.to_string(),
        })?;
        let start_time = start_time_of(pid).ok_or_else(|| StackError::Command {
            command: service.name().to_owned(),
            detail: format!("exited at once; see {}", service.log_file(&self.cfg).display()),
        })?;
        let pid_file = service.pid_file(&self.cfg);
        fs::write(&pid_file, format!("{pid} {start_time}\n")).map_err(StackError::path(&pid_file))?;
        Ok(())
    }

    async fn wait_healthy(&self, service: Service) -> Result<(), StackError> {
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        loop {
            if health::probe(&self.cfg, service).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline || self.tracked(service).is_none() {
                return Err(StackError::Unhealthy {
                    service: service.name(),
                    seconds: HEALTH_TIMEOUT.as_secs(),
                    log: service.log_file(&self.cfg),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Start time of a live, non-zombie process, from `/proc/<pid>/stat`.
pub fn start_time_of(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); start time is field 22.
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Pids of live processes in a process group.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let rest = stat[stat.rfind(')')? + 2..].to_owned();
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    Some(!matches!(f.first(), Some(&"Z") | Some(&"X")) && f.get(2)?.parse::<i32>().ok()? == pgid)
                })
                .unwrap_or(false)
        })
        .collect()
}

async fn stop(t: Tracked, signal: Signal) {
    let pid = Pid::from_raw(t.pid);
    let _ = kill(pid, signal);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while start_time_of(t.pid) == Some(t.start_time) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Anything left in its group (the leader hung, or a child outlived it) is killed.
    if start_time_of(t.pid) == Some(t.start_time) || !group_members(t.pid).is_empty() {
        let _ = killpg(pid, Signal::SIGKILL);
    }
}

fn remove_dir_if_exists(p: &Path) -> Result<(), StackError> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StackError::path(p)(e)),
        _ => Ok(()),
    }
}

fn remove_file_if_exists(p: &Path) -> Result<(), StackError> {
    match fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StackError::path(p)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_start_time() {
        let me = std::process::id() as i32;
        assert!(start_time_of(me).is_some());
        assert_eq!(start_time_of(i32::MAX), None);
    }
}
