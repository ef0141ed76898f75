//! The expiry worker: every replica runs one.
//!
//! It polls PostgreSQL, not Redis keyspace notifications (which are lost on
//! a disconnect): the deadline is a column (`orders.expires_at`), so nothing
//! is missed across restarts, and an order expired late is still expired.
//! Replicas claim due orders with `FOR UPDATE SKIP LOCKED` and move them with
//! a compare-and-set, so none is expired twice (see `Lifecycle::expire_due`).
//! The same loop retries refunds that failed the first time, and asks the
//! provider again about payments whose answer never came.
use std::sync::Arc;
use std::time::Duration;

use seckill_common::shutdown::Shutdown;

use crate::lifecycle::Lifecycle;

pub struct ExpiryWorker {
    pub lifecycle: Arc<Lifecycle>,
    pub interval: Duration,
    pub batch: u32,
    /// See `PaymentSettings::resolve_after_ms`.
    pub resolve_payments_after: Duration,
}

impl ExpiryWorker {
    pub async fn run(self, shutdown: Shutdown) {
        while !shutdown.is_triggered() {
            self.tick().await;
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    async fn tick(&self) {
        loop {
            match self.lifecycle.expire_due(self.batch).await {
                Ok(0) => break,
                Ok(n) => {
                    tracing::info!(expired = n, "expired unpaid orders");
                    if n < self.batch as usize {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot expire orders now; retrying next round");
                    return;
                }
            }
        }
        if let Err(error) = self.lifecycle.retry_refunds().await {
            tracing::warn!(%error, "cannot retry refunds now");
        }
        match self
            .lifecycle
            .resolve_unanswered(self.resolve_payments_after)
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(resolved = n, "unanswered payments resolved"),
            Err(error) => tracing::warn!(%error, "cannot resolve unanswered payments now"),
        }
    }
}
