//! Reconciliation: Redis (where the gateways sell) against PostgreSQL (the
//! authoritative stock), for every sale that has not ended.
//!
//! Runs every `reconcile.interval`, and on demand (`POST /internal/reconcile`,
//! behind the gateway's `POST /api/v1/admin/reconcile`). What it repairs and
//! why each repair is safe is in [`plan`]. Every run logs one line and counts
//! its repairs in `seckill_reconcile_repairs_total{kind}`; the on-demand call
//! answers with the full [`Report`].
//!
//! Redis that lost a sale (restarted empty, key evicted) is handled apart, and
//! checked for every `reconcile.rewarm_check`: see [`Reconciler::rewarm_missing`].
//! So is a Redis that came back with stale data ([`fence`]): its sales are
//! removed and take the same guarded path back.
//!
//! One run at a time across all replicas: a transaction-scoped PostgreSQL
//! advisory lock, because two concurrent stock increments computed from the
//! same snapshot would both apply.
mod error;
mod fence;
pub mod metrics;
pub mod plan;
mod sale;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redis::RedisError;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement,
    TransactionTrait,
};
use seckill_common::redis_conn::Conn;
use serde::Serialize;

use seckill_common::domain::SaleId;
use seckill_common::shutdown::Shutdown;
use seckill_common::transport::CatchUp;

use crate::configuration::ReconcileSettings;
use crate::warm;

pub use error::ReconcileError;
pub use metrics::ReconcileMetrics;
pub use sale::SaleReport;

/// Arbitrary but fixed: every replica must agree on it.
const RECONCILE_LOCK_KEY: i64 = 0x5EC0_2EC0_0000_0001;
/// How long an on-demand run waits for a periodic one to finish.
const WAIT_FOR_RUN: Duration = Duration::from_secs(10);

/// What one run found and did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub started_at: DateTime<Utc>,
    pub sales_checked: usize,
    /// Repairs made, all sales together (0 when Redis and PostgreSQL agree).
    pub changes: u64,
    pub sales: Vec<SaleReport>,
}

pub struct Reconciler {
    db: DatabaseConnection,
    redis: Conn,
    catch_up: CatchUp,
    settings: ReconcileSettings,
    metrics: ReconcileMetrics,
    /// When each sale was first seen missing from Redis (this replica's view).
    missing_since: Mutex<HashMap<SaleId, Instant>>,
    /// When each unresolved Redis buyer was first seen (see `sale::FirstSeen`).
    first_seen: sale::FirstSeen,
    /// One run at a time in this process; the advisory lock does the rest.
    running: tokio::sync::Mutex<()>,
}

impl Reconciler {
    pub fn new(
        db: DatabaseConnection,
        redis: Conn,
        catch_up: CatchUp,
        settings: ReconcileSettings,
        metrics: ReconcileMetrics,
    ) -> Self {
        Self {
            db,
            redis,
            catch_up,
            settings,
            metrics,
            missing_since: Mutex::new(HashMap::new()),
            first_seen: sale::FirstSeen::default(),
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The periodic task: a full run every `interval_ms`, a look for lost
    /// sales every `rewarm_check_ms`, until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let every = |period: Duration| {
            let mut t = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        };
        let mut full = every(self.settings.interval);
        let mut check = every(self.settings.rewarm_check);
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = full.tick() => {
                    if let Err(error) = self.run_once(false).await {
                        tracing::warn!(%error, "reconciliation failed; next run will retry");
                    }
                }
                _ = check.tick() => {
                    if let Err(error) = self.rewarm_missing().await {
                        tracing::warn!(%error, "cannot check for sales missing from Redis");
                    }
                }
            }
        }
    }

    /// One full run. `wait`: wait for a run in progress (on demand) instead
    /// of skipping (periodic, returns `Ok(None)`).
    pub async fn run_once(&self, wait: bool) -> Result<Option<Report>, ReconcileError> {
        let Some((_local, lock)) = self.exclusive(wait).await? else {
            return Ok(None);
        };
        let started_at = Utc::now();
        let mut sales = Vec::new();
        // Sales that ended lately are reconciled too (a unit held by an order
        // that never arrived is returned, and its order id voided, after the
        // end as well), but only unfinished ones are warmed again.
        let now = Utc::now();
        for (id, ends_at) in self.sales_ending_after(self.settings.after_end).await? {
            let on = ends_at > now;
            let report = if self.is_present(&id).await? {
                self.forget_missing(&id);
                sale::reconcile(&self.db, &self.redis, &id, &self.judge()).await?
            } else if on {
                self.handle_missing(&id).await?
            } else {
                None
            };
            if let Some(report) = report {
                sales.push(report);
            }
        }
        lock.commit().await?;
        let report = Report {
            started_at,
            sales_checked: sales.len(),
            changes: sales.iter().map(SaleReport::changes).sum(),
            sales,
        };
        self.record(&report);
        Ok(Some(report))
    }

    /// Warms again every unfinished sale that Redis lost, once that is safe:
    /// no sooner than `rewarm_delay_ms` after it was first seen missing (every
    /// order the lost Redis accepted has been produced by then), and only when
    /// the reservation consumer has caught up (every such order is applied, so
    /// PostgreSQL's remaining stock and reservations already count it). Until
    /// then the gateways sell nothing of it: Redis lost the warm marker with
    /// the sale, so they answer 503 (retry), not `sale_not_found`.
    pub async fn rewarm_missing(&self) -> Result<(), ReconcileError> {
        let unfinished = self.unfinished_sales().await?;
        let checked = fence::check_all(&self.redis, &unfinished).await?;
        if checked.fenced > 0 {
            self.metrics.fenced();
        }
        let missing = checked.missing;
        for id in unfinished.iter().filter(|id| !missing.contains(id)) {
            self.forget_missing(id);
        }
        if missing.is_empty() {
            // Every unfinished sale is there: say so, so that gateways tell
            // an unknown sale (404) from one being restored (503).
            self.mark_warm(&unfinished).await?;
            return Ok(());
        }
        // On a cluster the marker lives on another shard than the sales a
        // shard lost, and survived them: take it back, so that gateways
        // answer "being restored" (503) for them, not `sale_not_found`.
        let mut con = self.redis.clone();
        redis::AsyncCommands::del::<_, i64>(&mut con, seckill_common::stock::WARM_MARKER).await?;
        let Some((_local, lock)) = self.exclusive(false).await? else {
            return Ok(());
        };
        let mut sales = Vec::new();
        let mut all_back = true;
        for id in missing {
            if let Some(report) = self.handle_missing(&id).await? {
                all_back &= report.rewarmed;
                sales.push(report);
            }
        }
        lock.commit().await?;
        if all_back {
            // Say so now rather than at the next check: until then an
            // unknown sale would still answer 503 instead of 404.
            self.mark_warm(&unfinished).await?;
        }
        let changes = sales.iter().map(SaleReport::changes).sum();
        if changes > 0 {
            self.record(&Report {
                started_at: Utc::now(),
                sales_checked: sales.len(),
                changes,
                sales,
            });
        }
        Ok(())
    }

    /// `None` when the sale is in Redis again (someone else warmed it).
    async fn handle_missing(&self, id: &SaleId) -> Result<Option<SaleReport>, ReconcileError> {
        let since = {
            let mut map = self
                .missing_since
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            *map.entry(id.clone()).or_insert_with(Instant::now)
        };
        let mut report = SaleReport::missing(id);
        if since.elapsed() < self.settings.rewarm_delay {
            return Ok(Some(report));
        }
        match self.catch_up.caught_up().await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(sale_id = %id, "sale missing from Redis; waiting for the reservation consumer to catch up");
                return Ok(Some(report));
            }
            other => {
                tracing::warn!(sale_id = %id, ?other, "cannot tell whether the reservation consumer caught up; not warming yet");
                return Ok(Some(report));
            }
        }
        report.rewarmed = warm::warm(&self.db, &self.redis, id).await?;
        if let Some(row) = crate::sales::find(&self.db, id).await? {
            report.db_stock_remaining = i64::from(row.stock_remaining);
        }
        self.forget_missing(id);
        if report.rewarmed {
            tracing::warn!(sale_id = %id, "sale was missing from Redis; warmed it again from PostgreSQL");
        }
        Ok(Some(report))
    }

    /// What judging a Redis buyer needs (see `sale::Judge`).
    fn judge(&self) -> sale::Judge<'_> {
        sale::Judge {
            grace: self.settings.grace,
            first_seen: &self.first_seen,
            catch_up: &self.catch_up,
        }
    }

    fn forget_missing(&self, id: &SaleId) {
        self.missing_since
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(id);
    }

    /// Sets the warm marker, then looks at every sale again and takes the
    /// marker back if one is gone. Without the second look, a Redis emptied
    /// between the presence checks and the marker (a flush, a restart
    /// without data) would be marked warm while it holds no sale, and the
    /// gateways would answer `sale_not_found` instead of "retry" until the
    /// re-warm. The marker and the sales live in different hash slots, so
    /// one script cannot do both on a cluster; the double look leaves only
    /// the moment between the two.
    async fn mark_warm(&self, unfinished: &[SaleId]) -> Result<(), RedisError> {
        seckill_common::fault::before_mark_warm().await;
        let mut con = self.redis.clone();
        seckill_common::stock::mark_warm(&mut con).await?;
        for id in unfinished {
            if !self.is_present(id).await? {
                redis::AsyncCommands::del::<_, i64>(&mut con, seckill_common::stock::WARM_MARKER)
                    .await?;
                tracing::warn!(sale_id = %id, "a sale vanished while Redis was being marked warm; not warm");
                return Ok(());
            }
        }
        Ok(())
    }

    async fn is_present(&self, id: &SaleId) -> Result<bool, RedisError> {
        let mut con = self.redis.clone();
        redis::AsyncCommands::exists(&mut con, seckill_common::stock::SaleKeys::new(id).sale).await
    }

    async fn unfinished_sales(&self) -> Result<Vec<SaleId>, DbErr> {
        Ok(self
            .sales_ending_after(Duration::ZERO)
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Sales that end in the future or ended less than `ago` ago, with their end.
    async fn sales_ending_after(
        &self,
        ago: Duration,
    ) -> Result<Vec<(SaleId, DateTime<Utc>)>, DbErr> {
        crate::persistence::sales_ending_after(&self.db, ago).await
    }

    /// This process's lock, then the cluster-wide one (held by the returned
    /// transaction until it ends). `None` when busy and not waiting.
    async fn exclusive(
        &self,
        wait: bool,
    ) -> Result<Option<(tokio::sync::MutexGuard<'_, ()>, DatabaseTransaction)>, ReconcileError>
    {
        let local = if wait {
            tokio::time::timeout(WAIT_FOR_RUN, self.running.lock())
                .await
                .map_err(|_| ReconcileError::Busy)?
        } else {
            match self.running.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok(None),
            }
        };
        let txn = self.db.begin().await?;
        let sql = if wait {
            // Bounded by the pool's statement_timeout.
            format!("SELECT pg_advisory_xact_lock({RECONCILE_LOCK_KEY}) IS NOT NULL AS locked")
        } else {
            format!("SELECT pg_try_advisory_xact_lock({RECONCILE_LOCK_KEY}) AS locked")
        };
        let row = txn
            .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
            .await?;
        let locked = match row {
            Some(row) => row.try_get::<bool>("", "locked")?,
            None => false,
        };
        if !locked {
            txn.rollback().await?;
            return Ok(None);
        }
        Ok(Some((local, txn)))
    }

    fn record(&self, report: &Report) {
        use metrics::kind;
        self.metrics.run();
        let count = |f: fn(&SaleReport) -> u64| report.sales.iter().map(f).sum::<u64>();
        self.metrics.repaired(
            kind::ORPHAN_BUYER,
            count(|s| s.orphan_buyers_removed.len() as u64),
        );
        self.metrics.repaired(
            kind::BUYER_RELEASED,
            count(|s| s.buyers_released.len() as u64),
        );
        self.metrics.repaired(
            kind::BUYER_RESTORED,
            count(|s| s.buyers_restored.len() as u64),
        );
        self.metrics.repaired(
            kind::STOCK_RAISED,
            count(|s| u64::from(s.stock_adjustment > 0)),
        );
        self.metrics.repaired(
            kind::STOCK_LOWERED,
            count(|s| u64::from(s.stock_adjustment < 0)),
        );
        self.metrics
            .repaired(kind::REWARMED, count(|s| u64::from(s.rewarmed)));
        if report.changes == 0 {
            tracing::info!(
                sales_checked = report.sales_checked,
                "reconciliation: Redis and PostgreSQL agree"
            );
            return;
        }
        for s in report.sales.iter().filter(|s| s.changes() > 0) {
            tracing::warn!(
                sale_id = %s.sale_id,
                orphan_buyers_removed = ?s.orphan_buyers_removed,
                buyers_released = ?s.buyers_released,
                buyers_restored = ?s.buyers_restored,
                stock_adjustment = s.stock_adjustment,
                redis_stock_before = ?s.redis_stock,
                db_stock_remaining = s.db_stock_remaining,
                pending_buyers = s.pending_buyers,
                rewarmed = s.rewarmed,
                "reconciliation repaired drift"
            );
        }
        tracing::warn!(
            sales_checked = report.sales_checked,
            changes = report.changes,
            "reconciliation: repaired drift between Redis and PostgreSQL"
        );
    }
}
