//! What reconciliation reports to Prometheus: runs, and repairs by kind.
use prometheus::{IntCounter, IntCounterVec, Opts, Registry};

/// Repair kinds, the `kind` label of `seckill_reconcile_repairs_total`.
pub mod kind {
    /// A Redis buyer with no reservation after the grace period was removed.
    pub const ORPHAN_BUYER: &str = "orphan_buyer";
    /// A reservation PostgreSQL holds was missing from the Redis buyers.
    pub const BUYER_RESTORED: &str = "buyer_restored";
    /// A unit PostgreSQL had returned (or rejected) was released in Redis
    /// before the consumer's own release arrived.
    pub const BUYER_RELEASED: &str = "buyer_released";
    pub const STOCK_RAISED: &str = "stock_raised";
    pub const STOCK_LOWERED: &str = "stock_lowered";
    /// A sale missing from Redis was warmed again from PostgreSQL.
    pub const REWARMED: &str = "rewarmed";
    /// Redis came back as another process (restart, failover): its sales
    /// were fenced until warmed again (see `reconcile::fence`).
    pub const FENCED: &str = "redis_fenced";
}

#[derive(Clone)]
pub struct ReconcileMetrics {
    runs: IntCounter,
    repairs: IntCounterVec,
}

impl ReconcileMetrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            runs: IntCounter::new(
                "seckill_reconcile_runs_total",
                "Completed comparisons of Redis with PostgreSQL",
            )?,
            repairs: IntCounterVec::new(
                Opts::new(
                    "seckill_reconcile_repairs_total",
                    "Drift between Redis and PostgreSQL that reconciliation repaired, by kind",
                ),
                &["kind"],
            )?,
        })
    }

    /// Adds these counters to the service's registry (the one `/metrics` serves).
    pub fn register(&self, registry: &Registry) -> Result<(), prometheus::Error> {
        registry.register(Box::new(self.runs.clone()))?;
        registry.register(Box::new(self.repairs.clone()))
    }

    pub fn run(&self) {
        self.runs.inc();
    }

    /// Redis was found restarted and its sales fenced.
    pub fn fenced(&self) {
        self.repaired(kind::FENCED, 1);
    }

    pub fn repaired(&self, kind: &str, count: u64) {
        if count > 0 {
            self.repairs.with_label_values(&[kind]).inc_by(count);
        }
    }
}
