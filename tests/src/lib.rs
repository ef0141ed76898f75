//! Test harness: real Redis and PostgreSQL (started by `deploy/local/test.sh`),
//! a private Kafka-compatible broker per stack, and the real service binaries
//! as child processes, so tests can kill, stop and restart them.
//!
//! Every [`Stack`] is isolated: its own broker, its own two databases, its own
//! sale ids in the shared Redis. Tests therefore run in parallel safely.
//! A fault test that stops Redis or PostgreSQL asks for private ones
//! ([`servers`], via [`StackOptions`]); every fault scenario ends with the
//! same check, [`invariants::assert_invariants`]; [`dead_letters`] reads
//! what the consumers gave up on; [`fixtures`] makes domain values;
//! [`proxy`] makes a link to Redis or the broker slow, stalled or cut.
pub mod bus;
pub mod dead_letters;
pub mod fixtures;
pub mod invariants;
pub mod process;
pub mod proxy;
pub mod scrape;
pub mod servers;
pub mod stack;
pub mod wait;

pub use stack::{Stack, StackOptions};
pub use wait::{assert_error, blocking, poll_until, wait_until};
