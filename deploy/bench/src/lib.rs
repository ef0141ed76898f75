//! The flash-sale load benchmark (`bench`): a lean HTTP/1.1 load loop,
//! latency histograms, end-to-end persistence timing, Redis command counts,
//! PNG plots, and the side-by-side verdict that `deploy/bench/run.sh` prints.
//!
//! It only ever sends to loopback addresses, and every loop is bounded in
//! request count and in time.
pub mod compare;
pub mod error;
pub mod load;
pub mod persist;
pub mod plot;
pub mod redis_stats;
pub mod report;
pub mod sale;
pub mod stats;
pub mod target;

pub use error::{BenchError, Result};
