//! What the read path did: how often the cache answered, how often it went
//! below, and how that went. A fill count that follows the request count
//! means the cache is not shielding anything.
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::fill::FillError;

#[derive(Clone)]
pub struct CatalogMetrics {
    lookups: IntCounterVec,
    fills: HistogramVec,
}

impl CatalogMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let lookups = IntCounterVec::new(
            Opts::new(
                "seckill_read_cache_lookups_total",
                "Sale reads by how they were answered: hit, filled (went below), missing (no such sale), stale (last good copy), failed",
            ),
            &["result"],
        )?;
        let fills = HistogramVec::new(
            HistogramOpts::new(
                "seckill_read_cache_fill_seconds",
                "Fills of the read cache from the levels below, by what was filled (sale, list) and outcome (ok, redis_error, inventory_error)",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["what", "outcome"],
        )?;
        registry.register(Box::new(lookups.clone()))?;
        registry.register(Box::new(fills.clone()))?;
        Ok(Self { lookups, fills })
    }

    pub fn lookup(&self, result: &str) {
        self.lookups.with_label_values(&[result]).inc();
    }

    /// A fill of `what` (`sale` or `list`) from the levels below.
    pub fn fill<T>(&self, what: &str, result: &Result<T, FillError>, took: Duration) {
        self.fills
            .with_label_values(&[what, outcome(result)])
            .observe(took.as_secs_f64());
    }
}

fn outcome<T>(result: &Result<T, FillError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(FillError::Redis(_)) => "redis_error",
        Err(FillError::Inventory(_)) => "inventory_error",
        Err(FillError::Open(_)) => "circuit_open",
    }
}
