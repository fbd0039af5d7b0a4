//! Integration tests of the event catalog: wire stability and codec properties.

// Tests fail by panicking; unwrap is the assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod golden;
mod properties;
mod samples;
