//! The Prometheus pieces every service shares: the registry (with the
//! standard `process_*` metrics), the `/metrics` endpoint, and the families
//! in [`http`], [`consumer`] and [`db`].
//!
//! Each process keeps one [`Registry`] and serves it at [`METRICS_PATH`],
//! on its HTTP port or on a port of its own; the `prometheus` crate does
//! the text exposition. Label values are bounded sets (route patterns, not
//! paths; known methods and SQL verbs only), so a hostile client cannot
//! blow up the number of series.
//!
//! Why `prometheus` rather than `prometheus-client`: the families here are
//! counters, gauges and histograms that both crates expose identically, and
//! this one ships the `process_*` collector Prometheus users expect. What
//! `prometheus-client` adds is exemplars (a trace id on a histogram bucket);
//! the trace id is in every log line and every span instead (README).
mod consumer;
mod consumer_stats;
mod db;
mod exposition;
mod http;

pub use prometheus::Registry;

pub use self::consumer::ConsumerMetrics;
pub use self::consumer_stats::{consumer_stats, ConsumerStats, StatsRegistry};
pub use self::db::DbMetrics;
pub use self::exposition::{endpoint, endpoint_if, registry, serve_apart};
pub use self::http::{HttpMetrics, RouteMetrics};
