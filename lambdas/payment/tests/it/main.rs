//! The payment function: its messages from SQS fixtures, its handler against the local
//! stack's DynamoDB and Kinesis, the event source mapping against the SQS stand-in, and the
//! whole saga through the Lambda emulator (`infra/local/dev.sh test` starts the stack).
// Tests fail by panicking; unwrap is the assertion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backpressure;
mod calls;
mod handler;
mod helpers;
mod mapping;
mod messages;
mod saga;
