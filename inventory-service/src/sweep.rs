//! The saga sweeper: no purchase ends half-way.
//!
//! Once its stock is taken a reservation is `reserved` here, but the order
//! exists only when order-service has applied the `StockReserved` that
//! followed. If that never happened (the message was dead-lettered by an
//! error since fixed, a bug, an operator's mistake), the unit stays held by
//! an order nobody can see, pay or cancel: it never expires and is never
//! sold again. So every `sweep.interval` this task takes reservations
//! still `reserved`, never confirmed (no `OrderCreated` seen, see
//! `compensation`) and older than `sweep.after`, and announces
//! `StockReserved` again: the same event, which order-service applies once
//! (it is idempotent on the order id). After `sweep.max_attempts`
//! announcements without a confirmation the unit is given back, in
//! PostgreSQL (`released`, cause `abandoned`) and in Redis, logged at ERROR:
//! an order that can never be created must not hold stock for ever. But only
//! once order-service's consumer group has caught up with `inventory-events`
//! (it has seen the announcements, and not created the order) and this
//! service's compensation group with `order-events` (no `OrderCreated` for it
//! is still on its way): an order-service that is merely down or slow never
//! gets its orders abandoned, it gets them when it comes back.
//!
//! Replicas share the work: each round claims its rows with
//! `FOR UPDATE SKIP LOCKED`.

use futures::future::join_all;
use prometheus::{IntCounterVec, Opts, Registry};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement};
use seckill_common::redis_conn::Conn;

use seckill_common::domain::{OrderId, Quantity, SaleId, UserId};
use seckill_common::events::{Envelope, Event, OrderRef, Reserved};
use seckill_common::settings::Topics;
use seckill_common::shutdown::Shutdown;
use seckill_common::stock;
use seckill_common::transport::{CatchUp, PublishError, Publisher};

use crate::configuration::SweepSettings;

/// Claims a round of unconfirmed reservations and counts the attempt.
const CLAIM: &str = r#"
UPDATE reservations r SET sweeps = r.sweeps + 1
  FROM sales s
 WHERE s.id = r.sale_id AND r.order_id IN (
        SELECT order_id FROM reservations
         WHERE status = 'reserved' AND confirmed_at IS NULL
           AND created_at < now() - make_interval(secs => $1)
         ORDER BY created_at
         LIMIT $2
           FOR UPDATE SKIP LOCKED)
RETURNING r.order_id, r.sale_id, r.user_id, r.quantity, r.sweeps,
          s.payment_window_secs, s.unit_price_cents"#;

/// Gives an abandoned reservation's units back, once.
const ABANDON: &str = r#"
WITH released AS (
    UPDATE reservations
       SET status = 'released', release_cause = 'abandoned', released_at = now()
     WHERE order_id = $1 AND status = 'reserved' AND confirmed_at IS NULL
 RETURNING sale_id, quantity
)
UPDATE sales s SET stock_remaining = s.stock_remaining + r.quantity
  FROM released r WHERE s.id = r.sale_id
RETURNING s.id"#;

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("publish: {0}")]
    Publish(#[from] PublishError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

pub struct Sweeper {
    pub db: DatabaseConnection,
    pub redis: Conn,
    pub producer: Publisher,
    pub topics: Topics,
    pub settings: SweepSettings,
    /// order-service's group on `inventory-events`, and this service's
    /// compensation group on `order-events`: both caught up before abandoning.
    caught_up: [CatchUp; 2],
    sweeps: IntCounterVec,
}

/// One claimed reservation.
struct Stale {
    order: OrderRef,
    sweeps: i32,
    payment_window_secs: u32,
    unit_price_cents: i64,
}

impl Sweeper {
    /// `caught_up`: order-service's group on `inventory-events`, then this
    /// service's compensation group on `order-events`, whose progress proves
    /// an order is abandoned (see the module docs).
    pub fn new(
        db: DatabaseConnection,
        redis: Conn,
        producer: Publisher,
        topics: Topics,
        caught_up: [CatchUp; 2],
        settings: SweepSettings,
        registry: &Registry,
    ) -> Result<Self, SweepError> {
        let sweeps = IntCounterVec::new(
            Opts::new(
                "seckill_saga_sweeps_total",
                "Reservations whose order never appeared: announced again, or abandoned",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(sweeps.clone()))?;
        Ok(Self {
            db,
            redis,
            producer,
            topics,
            settings,
            caught_up,
            sweeps,
        })
    }

    /// Sweeps every `interval_ms` until shutdown.
    pub async fn run(self, shutdown: Shutdown) {
        let period = self.settings.interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tick.tick() => {
                    if let Err(error) = self.sweep_once().await {
                        tracing::warn!(%error, "saga sweep failed; the next round retries");
                    }
                }
            }
        }
    }

    /// One round. Returns how many reservations it handled.
    pub async fn sweep_once(&self) -> Result<usize, SweepError> {
        let after = self.settings.after.as_secs_f64();
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                CLAIM,
                [after.into(), i64::from(self.settings.batch).into()],
            ))
            .await?;
        let stale: Vec<Stale> = rows.iter().filter_map(|r| parse(r).ok()).collect();
        let (announce, abandon): (Vec<&Stale>, Vec<&Stale>) = stale
            .iter()
            .partition(|s| s.sweeps <= self.settings.max_attempts as i32);
        let sends = announce.iter().map(|s| {
            let event = Event::StockReserved(Reserved {
                order: s.order.clone(),
                payment_window_secs: s.payment_window_secs,
                unit_price_cents: s.unit_price_cents,
            });
            let key = s.order.order_id.to_string();
            async move {
                self.producer
                    .send(&self.topics.inventory_events, &key, &Envelope::new(event))
                    .await
            }
        });
        for (s, sent) in announce.iter().zip(join_all(sends).await) {
            sent?;
            tracing::warn!(order_id = %s.order.order_id, attempt = s.sweeps,
                "reservation without an order: StockReserved announced again");
            self.sweeps.with_label_values(&["announced"]).inc();
        }
        if !abandon.is_empty() {
            if self.everything_seen().await {
                for s in &abandon {
                    self.abandon(&s.order).await?;
                }
            } else {
                tracing::warn!(
                    orders = abandon.len(),
                    "reservations without an order, but order-service has not seen everything yet; not abandoning"
                );
            }
        }
        Ok(stale.len())
    }

    /// Both groups have consumed everything produced until now (the
    /// announcements of the previous rounds included).
    async fn everything_seen(&self) -> bool {
        for catch_up in &self.caught_up {
            match catch_up.caught_up().await {
                Ok(true) => {}
                _ => return false,
            }
        }
        true
    }

    /// Gives the units of an order that never appeared back, in PostgreSQL
    /// and then in Redis.
    async fn abandon(&self, order: &OrderRef) -> Result<(), SweepError> {
        let released = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                ABANDON,
                [order.order_id.to_string().into()],
            ))
            .await?;
        if released.is_some() {
            let mut redis = self.redis.clone();
            stock::release(
                &mut redis,
                &order.sale_id,
                &order.user_id,
                &order.order_id,
                order.quantity,
            )
            .await?;
            tracing::error!(order_id = %order.order_id, sale_id = %order.sale_id,
                "no order ever appeared for this reservation: its stock was given back");
            self.sweeps.with_label_values(&["abandoned"]).inc();
        }
        Ok(())
    }
}

fn parse(row: &sea_orm::QueryResult) -> Result<Stale, DbErr> {
    let text = |c: &str| row.try_get::<String>("", c);
    let invalid = |what: &str| DbErr::Custom(format!("reservation with an invalid {what}"));
    let quantity: i32 = row.try_get("", "quantity")?;
    let window: i32 = row.try_get("", "payment_window_secs")?;
    Ok(Stale {
        order: OrderRef {
            order_id: OrderId::parse(&text("order_id")?).map_err(|_| invalid("order id"))?,
            sale_id: SaleId::parse(&text("sale_id")?).map_err(|_| invalid("sale id"))?,
            user_id: UserId::parse(&text("user_id")?).map_err(|_| invalid("user id"))?,
            quantity: Quantity::parse(i64::from(quantity)).map_err(|_| invalid("quantity"))?,
        },
        sweeps: row.try_get("", "sweeps")?,
        payment_window_secs: u32::try_from(window).unwrap_or(1),
        unit_price_cents: row.try_get("", "unit_price_cents")?,
    })
}
