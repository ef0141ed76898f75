//! `seckill_sale_stock_remaining{sale_id}`: the authoritative stock of every
//! active sale, for the dashboard of a running sale.
//!
//! Read from PostgreSQL every few seconds rather than updated per order: one
//! tiny query, whichever replica runs it reports the same numbers, and sales
//! that ended drop out of the gauge instead of lingering at their last value.
use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use prometheus::{IntGaugeVec, Opts, Registry};
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect};

use seckill_common::shutdown::Shutdown;

use crate::persistence::sale;

/// How often the gauge is refreshed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

pub struct StockGauge {
    gauge: IntGaugeVec,
    shown: HashSet<String>,
}

impl StockGauge {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let gauge = IntGaugeVec::new(
            Opts::new(
                "seckill_sale_stock_remaining",
                "Authoritative stock left in each active sale (PostgreSQL)",
            ),
            &["sale_id"],
        )?;
        registry.register(Box::new(gauge.clone()))?;
        Ok(Self {
            gauge,
            shown: HashSet::new(),
        })
    }

    /// Sets one series per active sale and removes the others.
    pub async fn refresh(&mut self, db: &DatabaseConnection) -> Result<(), DbErr> {
        let now = Utc::now();
        let active: Vec<(String, i32)> = sale::Entity::find()
            .select_only()
            .column(sale::Column::Id)
            .column(sale::Column::StockRemaining)
            .filter(sale::Column::StartsAt.lte(now))
            .filter(sale::Column::EndsAt.gt(now))
            .into_tuple()
            .all(db)
            .await?;
        let current: HashSet<String> = active.iter().map(|(id, _)| id.clone()).collect();
        for gone in self.shown.difference(&current) {
            let _ = self.gauge.remove_label_values(&[gone]);
        }
        for (id, stock) in &active {
            self.gauge.with_label_values(&[id]).set(i64::from(*stock));
        }
        self.shown = current;
        Ok(())
    }

    /// Refreshes every [`REFRESH_EVERY`] until shutdown. A failed refresh
    /// keeps the last values; the database outage shows elsewhere.
    pub async fn run(mut self, db: DatabaseConnection, shutdown: Shutdown) {
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tick.tick() => {}
            }
            match tokio::time::timeout(REFRESH_EVERY, self.refresh(&db)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::debug!(%error, "cannot refresh the stock gauge"),
                Err(_) => tracing::debug!("stock gauge refresh timed out"),
            }
        }
    }
}
