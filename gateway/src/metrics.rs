//! The gateway's Prometheus metrics.
use std::time::Duration;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

pub struct Metrics {
    outcomes: IntCounterVec,
    /// `outcomes{outcome="sold_out"}`, resolved once: the hottest series in a sale.
    sold_out: IntCounter,
    produce_latency: Histogram,
    produce_errors: IntCounter,
    /// The purchase script's round trip, by whether its answer came.
    script_latency: [Histogram; 2],
}

impl Metrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
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
        let script_latency = HistogramVec::new(
            HistogramOpts::new(
                "seckill_redis_script_seconds",
                "Round trip of the purchase script (EVALSHA), by outcome: answered, or lost (timed out or failed)",
            )
            .buckets(vec![
                0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
            ]),
            &["outcome"],
        )?;
        registry.register(Box::new(produce_errors.clone()))?;
        registry.register(Box::new(script_latency.clone()))?;
        Ok(Self {
            sold_out: outcomes.get_metric_with_label_values(&["sold_out"])?,
            outcomes,
            produce_latency,
            produce_errors,
            script_latency: [
                script_latency.get_metric_with_label_values(&["answered"])?,
                script_latency.get_metric_with_label_values(&["lost"])?,
            ],
        })
    }

    pub fn outcome(&self, label: &str) {
        self.outcomes.with_label_values(&[label]).inc();
    }

    pub fn sold_out(&self) {
        self.sold_out.inc();
    }

    pub fn script(&self, took: Duration, answered: bool) {
        self.script_latency[usize::from(!answered)].observe(took.as_secs_f64());
    }

    pub fn produce(&self, took: Duration, ok: bool) {
        self.produce_latency.observe(took.as_secs_f64());
        if !ok {
            self.produce_errors.inc();
        }
    }
}
