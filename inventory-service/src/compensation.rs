//! The compensation half of the saga: stock nobody will pay for goes back.
//!
//! On `OrderCancelled` and `OrderExpired` (and on `OrderFailed`, as a safety
//! net for an order that failed while its stock was held), the reservation
//! moves `reserved -> released` and the sale's `stock_remaining` grows by its
//! quantity, in one transaction and only if the row was still `reserved`: a
//! redelivered or duplicated event finds it `released` and changes nothing.
//!
//! `OrderCreated` and `OrderPaid` only mark the reservation confirmed: the
//! saga reached order-service, and the sweeper (`crate::sweep`) need not
//! announce it again.
//!
//! Then Redis: [`stock::release`] returns the unit to the gateways and clears
//! the buyer's purchase record, but only if the buyers hash still names this
//! order, so that too happens once. It runs for every reservation that *is*
//! released, not just those released by this message: a crash between the
//! commit and Redis is repaired by the redelivery. The gateways' sold-out
//! flags expire by themselves (`SECKILL_SOLD_OUT_CACHE_MS`), so the unit is
//! on sale again within that bound.
use futures::future::join_all;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, Statement,
    TransactionTrait,
};
use seckill_common::redis_conn::Conn;
use tracing::Instrument;

use seckill_common::consumer::{BatchHandler, HandleError, Incoming};
use seckill_common::domain::{OrderId, Quantity, SaleId, UserId};
use seckill_common::events::Event;
use seckill_common::stock;

use crate::persistence::reservation::RELEASED;

/// Returns the units of a still-reserved reservation, once.
const RELEASE: &str = r#"
WITH released AS (
    UPDATE reservations
       SET status = 'released', release_cause = $2, released_at = now()
     WHERE order_id = $1 AND status = 'reserved'
 RETURNING sale_id, quantity
)
UPDATE sales s SET stock_remaining = s.stock_remaining + r.quantity
  FROM released r WHERE s.id = r.sale_id"#;

/// Marks reservations whose order order-service has confirmed.
const CONFIRM: &str = "UPDATE reservations SET confirmed_at = now() \
     WHERE order_id = ANY($1) AND confirmed_at IS NULL";

const STATUS: &str =
    "SELECT sale_id, user_id, quantity, status FROM reservations WHERE order_id = $1";

pub struct CompensationHandler {
    pub db: DatabaseConnection,
    pub redis: Conn,
}

/// A reservation that is released in PostgreSQL and must be released in Redis.
struct Released {
    sale: SaleId,
    user: UserId,
    order: OrderId,
    quantity: Quantity,
    span: tracing::Span,
}

impl BatchHandler for CompensationHandler {
    async fn handle(&self, batch: &[Incoming]) -> Result<(), HandleError> {
        let wanted: Vec<(&OrderId, &'static str, &tracing::Span)> = batch
            .iter()
            .filter_map(|m| {
                let event = &m.envelope.event;
                match event {
                    Event::OrderCancelled(_) | Event::OrderExpired(_) | Event::OrderFailed(_) => {
                        Some((event.order_id(), event.type_name(), &m.span))
                    }
                    _ => None, // OrderCreated, OrderPaid: nothing to give back.
                }
            })
            .collect();
        // The saga reached order-service: the sweeper (`crate::sweep`) leaves
        // these reservations alone.
        let confirmed: Vec<String> = batch
            .iter()
            .filter(|m| {
                matches!(
                    m.envelope.event,
                    Event::OrderCreated(_) | Event::OrderPaid(_)
                )
            })
            .map(|m| m.envelope.event.order_id().to_string())
            .collect();
        if wanted.is_empty() && confirmed.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin().await.map_err(HandleError::from)?;
        if !confirmed.is_empty() {
            txn.execute_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                CONFIRM,
                [confirmed.into()],
            ))
            .await
            .map_err(HandleError::from)?;
        }
        let mut released = Vec::new();
        for (order, cause, span) in wanted {
            // A child of the message's `kafka.process` span (whose parent came
            // in the headers), so the release shows in the order's trace.
            let db_span = tracing::info_span!(
                parent: span,
                "db.release",
                otel.kind = "client",
                db.system = "postgresql",
                db.operation = "UPDATE",
                db.sql.table = "reservations",
                order.id = %order,
                release.cause = cause,
            );
            match release(&txn, order, cause).instrument(db_span).await {
                Ok(Some(r)) => released.push(Released {
                    span: span.clone(),
                    ..r
                }),
                Ok(None) => {}
                Err(error) => {
                    let _ = txn.rollback().await;
                    return Err(HandleError::from(error));
                }
            }
        }
        txn.commit().await.map_err(HandleError::from)?;

        let releases = released.iter().map(|r| {
            let mut redis = self.redis.clone();
            async move {
                let changed =
                    stock::release(&mut redis, &r.sale, &r.user, &r.order, r.quantity).await?;
                if changed {
                    tracing::info!(order_id = %r.order, sale_id = %r.sale, quantity = r.quantity.get(), "stock returned to the sale");
                }
                Ok::<_, redis::RedisError>(())
            }
            .instrument(tracing::info_span!(
                parent: &r.span,
                "redis.release",
                otel.kind = "client",
                db.system = "redis",
                order.id = %r.order,
            ))
        });
        match join_all(releases).await.into_iter().find_map(Result::err) {
            Some(error) => Err(HandleError::Transient(format!(
                "cannot return stock in Redis: {error}"
            ))),
            None => Ok(()),
        }
    }
}

/// Releases the reservation if it is still held; returns it if it is released
/// (now or before), `None` if it was never reserved or does not exist.
async fn release(
    txn: &DatabaseTransaction,
    order: &OrderId,
    cause: &str,
) -> Result<Option<Released>, DbErr> {
    let id = order.to_string();
    txn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        RELEASE,
        [id.clone().into(), cause.into()],
    ))
    .await?;
    let Some(row) = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            STATUS,
            [id.into()],
        ))
        .await?
    else {
        tracing::warn!(order_id = %order, cause, "no reservation for this order; nothing to return");
        return Ok(None);
    };
    let status: String = row.try_get("", "status")?;
    if status != RELEASED {
        return Ok(None);
    }
    // What the database holds, not what the event claims: Redis gets back
    // exactly the units PostgreSQL gave back.
    let sale: String = row.try_get("", "sale_id")?;
    let user: String = row.try_get("", "user_id")?;
    let quantity: i32 = row.try_get("", "quantity")?;
    let invalid = |what: &str| DbErr::Custom(format!("reservation {order} has an invalid {what}"));
    Ok(Some(Released {
        sale: SaleId::parse(&sale).map_err(|_| invalid("sale id"))?,
        user: UserId::parse(&user).map_err(|_| invalid("user id"))?,
        order: order.clone(),
        quantity: Quantity::parse(i64::from(quantity)).map_err(|_| invalid("quantity"))?,
        span: tracing::Span::none(),
    }))
}
