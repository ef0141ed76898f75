//! The order's life after `created`: paid, cancelled or expired.
//!
//! Every transition is one compare-and-set, `UPDATE orders SET status = ...
//! WHERE order_id = $1 AND status = 'created'`, so of a concurrent pay,
//! cancel and expiry exactly one wins; the others find nothing to update.
//! Each winner writes its event (`OrderPaid`, `OrderCancelled`,
//! `OrderExpired`) to the outbox in the same transaction (see `outbox`).
//!
//! Paying calls the provider *outside* any transaction (no row lock is held
//! across a network call), then records the result and moves the order in
//! one transaction. If the order stopped being payable meanwhile, the money
//! is given back: the payment is recorded `refund_pending`, refunded, then
//! `refunded` (a failed refund is retried by the expiry worker). An attempt
//! whose answer never came (a provider timeout) is asked again by the expiry
//! worker if the client does not retry, so money taken without an answer
//! either pays the order or is refunded.
use std::sync::Arc;

use actix_web::http::StatusCode;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QueryResult, QuerySelect, Statement, TransactionTrait, Value,
};
use serde_json::json;
use tokio::sync::Notify;

use seckill_common::domain::{IdempotencyKey, OrderId, Quantity, SaleId, UserId};
use seckill_common::events::{Event, OrderRef, Paid};
use seckill_common::kafka::traceparent_of;

use crate::outbox;
use crate::payment::{PaymentError, Payments};
use crate::persistence::{order, OrderStatus};
use crate::view::OrderView;

mod paying;

/// Most orders one user listing returns, newest first.
pub const LIST_LIMIT: u64 = 100;

/// An HTTP answer that can be stored with a payment and replayed verbatim
/// to a repeat of the same request.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: StatusCode,
    pub body: serde_json::Value,
}

impl Answer {
    fn ok(body: serde_json::Value) -> Self {
        Self {
            status: StatusCode::OK,
            body,
        }
    }

    fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            body: json!({"error": {"code": code, "message": message.into()}}),
        }
    }

    fn not_found() -> Self {
        Self::error(StatusCode::NOT_FOUND, "order_not_found", "no such order")
    }

    fn not_payable(status: &str) -> Self {
        Self::error(
            StatusCode::CONFLICT,
            "order_not_payable",
            format!(
                "the order is {status}; only an unpaid order within its payment window can be paid"
            ),
        )
    }
}

pub struct Lifecycle {
    pub db: DatabaseConnection,
    pub payments: Payments,
    /// Where lifecycle events go (`order-events`).
    pub topic: String,
    /// Wakes the outbox relay after a commit that wrote to the outbox.
    pub wake: Arc<Notify>,
}

const CANCEL: &str = "UPDATE orders SET status = 'cancelled', updated_at = now() \
     WHERE order_id = $1 AND user_id = $2 AND status = 'created'";
/// Claims due orders with SKIP LOCKED, so replicas never wait for or
/// expire the same rows, and a row a payment is updating is left to it.
const EXPIRE: &str = r#"
WITH due AS (
    SELECT order_id FROM orders
     WHERE status = 'created' AND expires_at <= now()
     ORDER BY expires_at LIMIT $1
       FOR UPDATE SKIP LOCKED
)
UPDATE orders o SET status = 'expired', updated_at = now()
  FROM due WHERE o.order_id = due.order_id AND o.status = 'created'
RETURNING o.order_id, o.sale_id, o.user_id, o.quantity, o.traceparent"#;

fn statement(sql: &str, values: Vec<Value>) -> Statement {
    Statement::from_sql_and_values(DbBackend::Postgres, sql, values)
}

/// What events say about an order, from its row.
fn order_ref(
    order_id: &str,
    sale_id: &str,
    user_id: &str,
    quantity: i32,
) -> Result<OrderRef, DbErr> {
    let bad = |what: &str| DbErr::Custom(format!("order {order_id} has an invalid {what}"));
    Ok(OrderRef {
        order_id: OrderId::parse(order_id).map_err(|_| bad("id"))?,
        sale_id: SaleId::parse(sale_id).map_err(|_| bad("sale id"))?,
        user_id: UserId::parse(user_id).map_err(|_| bad("user id"))?,
        quantity: Quantity::parse(i64::from(quantity)).map_err(|_| bad("quantity"))?,
    })
}

impl Lifecycle {
    async fn find(&self, order_id: &OrderId) -> Result<Option<order::Model>, DbErr> {
        order::Entity::find_by_id(order_id.to_string())
            .one(&self.db)
            .await
    }

    /// Cancels an unpaid order for its owner. Cancelling a cancelled order
    /// answers as the first time did.
    pub async fn cancel(&self, order_id: &OrderId, user: &UserId) -> Result<Answer, DbErr> {
        let id = order_id.to_string();
        let txn = self.db.begin().await?;
        let won = txn
            .execute_raw(statement(
                CANCEL,
                vec![id.clone().into(), user.as_str().into()],
            ))
            .await?
            .rows_affected()
            == 1;
        let current = order::Entity::find_by_id(id.as_str()).one(&txn).await?;
        let Some(current) = current.filter(|o| o.user_id == user.as_str()) else {
            txn.rollback().await?;
            return Ok(Answer::not_found());
        };
        if won {
            let event = Event::OrderCancelled(order_ref(
                &current.order_id,
                &current.sale_id,
                &current.user_id,
                current.quantity,
            )?);
            let traceparent = traceparent_of(&tracing::Span::current());
            outbox::enqueue(&txn, &self.topic, event, traceparent).await?;
        }
        txn.commit().await?;
        if won {
            self.wake.notify_one();
            tracing::info!(order_id = %order_id, "order cancelled");
        }
        if current.status != OrderStatus::Cancelled {
            return Ok(Answer::error(
                StatusCode::CONFLICT,
                "order_not_cancellable",
                format!(
                    "the order is {}; only an unpaid order can be cancelled",
                    current.status.as_str()
                ),
            ));
        }
        Ok(Answer::ok(
            serde_json::to_value(OrderView::from(current)).unwrap_or_default(),
        ))
    }

    /// Expires up to `batch` orders past their payment window, with their
    /// events, in one transaction. Returns how many.
    pub async fn expire_due(&self, batch: u32) -> Result<usize, DbErr> {
        let txn = self.db.begin().await?;
        let rows = txn
            .query_all_raw(statement(EXPIRE, vec![i64::from(batch).into()]))
            .await?;
        for row in &rows {
            let order = order_ref(
                &row.try_get::<String>("", "order_id")?,
                &row.try_get::<String>("", "sale_id")?,
                &row.try_get::<String>("", "user_id")?,
                row.try_get("", "quantity")?,
            )?;
            // No request is behind an expiry: the event continues the
            // purchase's trace, whose context the order row kept.
            let traceparent: Option<String> = row.try_get("", "traceparent")?;
            outbox::enqueue(&txn, &self.topic, Event::OrderExpired(order), traceparent).await?;
        }
        txn.commit().await?;
        if !rows.is_empty() {
            self.wake.notify_one();
        }
        Ok(rows.len())
    }

    /// The user's orders, newest first.
    pub async fn list(&self, user: &UserId) -> Result<Vec<order::Model>, DbErr> {
        order::Entity::find()
            .filter(order::Column::UserId.eq(user.as_str()))
            .order_by_desc(order::Column::CreatedAt)
            .limit(LIST_LIMIT)
            .all(&self.db)
            .await
    }
}
