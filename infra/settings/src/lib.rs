//! The one home of CloudCafe's deployment settings, read alike by the local stack, the
//! binaries, the Lambda functions and (through its tests) Terraform.
//!
//! Two things live here and nowhere else:
//! - [`Names`]: what the stream, tables, queues and databases are called
//!   (`infra/names.json`, which Terraform reads with `jsondecode(file(...))`). Each name
//!   can be overridden by `CAFE_<KEY>` (`CAFE_EVENTS_TABLE` for `events_table`), which is
//!   how Terraform hands a deployed unit the names it created.
//! - [`vars`]: every other environment variable the code reads, and [`Unit`]: which of
//!   them and of the names each deployed unit needs. The binaries read through these
//!   lists, so a unit cannot need a variable its deployment is not checked to provide.
//!
//! Small on purpose (serde only): every crate, the Lambda functions included, depends on
//! it without pulling in the local stack.

pub mod names;
pub mod units;
pub mod vars;

pub use names::{Names, SettingsError};
pub use units::Unit;
