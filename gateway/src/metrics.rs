//! The gateway's Prometheus metrics.
use std::time::Duration;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

pub struct Metrics {
    pub registry: Registry,
    outcomes: IntCounterVec,
    /// `outcomes{outcome="sold_out"}`, resolved once: the hottest series in a sale.
    sold_out: IntCounter,
    produce_latency: Histogram,
    produce_errors: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let outcomes = IntCounterVec::new(
            Opts::new(
                "seckill_purchase_outcomes_total",
                "Purchase decisions by outcome (accepted, sold_out, duplicate, not_active, ...)",
            ),
            &["outcome"],
        )?;
        let produce_latency = Histogram::with_opts(
            HistogramOpts::new(
                "seckill_kafka_produce_seconds",
                "Time until the broker acknowledged an OrderRequested",
            )
            .buckets(vec![
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
        )?;
        let produce_errors = IntCounter::new(
            "seckill_kafka_produce_errors_total",
            "OrderRequested produces that failed or timed out",
        )?;
        registry.register(Box::new(outcomes.clone()))?;
        registry.register(Box::new(produce_latency.clone()))?;
        registry.register(Box::new(produce_errors.clone()))?;
        Ok(Self {
            registry,
            sold_out: outcomes.get_metric_with_label_values(&["sold_out"])?,
            outcomes,
            produce_latency,
            produce_errors,
        })
    }

    pub fn outcome(&self, label: &str) {
        self.outcomes.with_label_values(&[label]).inc();
    }

    pub fn sold_out(&self) {
        self.sold_out.inc();
    }

    pub fn produce(&self, took: Duration, ok: bool) {
        self.produce_latency.observe(took.as_secs_f64());
        if !ok {
            self.produce_errors.inc();
        }
    }
}
