//! CloudCafe's local stack: every AWS service the pipeline uses, stood in for by a real
//! server on 127.0.0.1, started, provisioned, checked and stopped by one library.
//!
//! The `cafe stack` subcommands and the test suite both drive it, so what a developer
//! runs is what the tests run against. Nothing here is used in AWS.
//!
//! # Layout
//! - [`config`]: [`StackConfig`] (ports, paths) and [`Names`] (from `infra/names.json`).
//! - [`service`]: the stand-ins and how each is launched.
//! - [`supervisor`]: [`Stack`]: `up` (idempotent), `down` (only our pids), `status`.
//! - [`health`]: protocol-level health probes with the project's real clients.
//! - [`emulators`]: the embedded Kinesis and DynamoDB emulators.
//! - [`lambda`]: functions under the Lambda emulator, and the SQS event source mapping.
//! - [`provision`]: idempotent creation of streams, tables, queues, databases.
//! - [`aws`]: SDK clients pointed at the stand-ins.
//! - [`smoke`]: the end-to-end round trip and the sample load of `cafe run`.
//! - [`error`]: the one error type, [`StackError`].

pub mod aws;
pub mod config;
pub mod emulators;
pub mod error;
pub mod faults;
pub mod health;
pub mod lambda;
pub mod provision;
pub mod service;
pub mod smoke;
pub mod supervisor;
pub mod testing;

pub use config::{Names, Ports, StackConfig};
pub use error::StackError;
pub use service::Service;
pub use supervisor::{ServiceStatus, Stack, UpOutcome};
