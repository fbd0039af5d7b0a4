//! Errors of the local stack.

use std::path::PathBuf;

/// What can go wrong bringing the local stack up, down or provisioning it.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// Configuration could not be loaded (bad file, bad environment variable).
    #[error("configuration: {0}")]
    Config(String),
    /// A file-system or process call failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// A file-system call on a known path failed.
    #[error("{path}: {source}")]
    Path {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
    /// A program the stack needs is not installed.
    #[error("{program} not found ({hint})")]
    Missing {
        /// The program.
        program: String,
        /// How to get it.
        hint: String,
    },
    /// A port we want is held by a process we did not start.
    #[error("port {port} for {service} is already in use by another process")]
    PortTaken {
        /// The service that wanted it.
        service: &'static str,
        /// The port.
        port: u16,
    },
    /// A service did not become healthy in time.
    #[error("{service} did not become healthy within {seconds} s; see {log}")]
    Unhealthy {
        /// The service.
        service: &'static str,
        /// How long we waited.
        seconds: u64,
        /// Its log file.
        log: PathBuf,
    },
    /// A helper command (initdb, ...) failed.
    #[error("{command} failed: {detail}")]
    Command {
        /// What was run.
        command: String,
        /// Its stderr or exit status.
        detail: String,
    },
    /// Provisioning a resource failed.
    #[error("provisioning {resource}: {detail}")]
    Provision {
        /// The resource.
        resource: String,
        /// What the service answered.
        detail: String,
    },
    /// The smoke round-trip saw something other than what it published.
    #[error("smoke check: {0}")]
    Smoke(String),
}

impl StackError {
    pub(crate) fn provision(resource: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        StackError::Provision {
            resource: resource.into(),
            detail: detail.to_string(),
        }
    }

    pub(crate) fn path(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StackError::Path { path, source }
    }
}
