//! Applies orders to the authoritative stock.
//!
//! A batch is first tried as a set ([`batch`]: one insert for all orders,
//! one decrement per sale, no savepoint). When the set cannot be decided as
//! a whole, the batch is decided here, order by order, in a fresh
//! transaction: this is the fallback, and the reference semantics.
//!
//! The reservation row is inserted first, keyed by order id: if it already
//! exists the message is a redelivery and the stored outcome is returned
//! without touching stock. Each order runs in a savepoint of its own, so a
//! constraint violation rejects that order without aborting the batch. (Each
//! savepoint is a subtransaction, and many of them locking one sales row is
//! what makes this path slow under load; hence the fast path.)
use sea_orm::{
    ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryResult, SqlErr,
    Statement, TransactionTrait, Value,
};

use seckill_common::events::{OrderRef, RejectReason};

use super::reservation::{self, REJECTED, RELEASED, RESERVED};
use super::sale;

pub mod batch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Reserved(Terms),
    Rejected(RejectReason),
}

/// The sale's payment terms, announced with the reservation so that
/// order-service can price the order and set its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub payment_window_secs: u32,
    pub unit_price_cents: i64,
}

impl Terms {
    fn from_row(row: &QueryResult) -> Result<Self, DbErr> {
        let window: i32 = row.try_get("", "payment_window_secs")?;
        Ok(Self {
            payment_window_secs: u32::try_from(window).unwrap_or(1),
            unit_price_cents: row.try_get("", "unit_price_cents")?,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReserveError {
    #[error(transparent)]
    Db(#[from] DbErr),
    /// The order id is already stored for a different sale, user or quantity:
    /// the message is not a redelivery but a bug or a forgery.
    #[error("order {0} was already stored with different contents")]
    Mismatch(String),
}

const INSERT: &str =
    "INSERT INTO reservations (order_id, sale_id, user_id, quantity, status, reason, created_at) \
     VALUES ($1, $2, $3, $4, $5, $6, now()) ON CONFLICT (order_id) DO NOTHING RETURNING order_id";

/// Conditional: never below zero, and concurrent consumers serialise on the row lock.
const DECREMENT: &str = "UPDATE sales SET stock_remaining = stock_remaining - $2 \
     WHERE id = $1 AND stock_remaining >= $2 RETURNING payment_window_secs, unit_price_cents";

/// Decides `order`. The caller commits `txn` before announcing the outcome.
pub async fn reserve(txn: &DatabaseTransaction, order: &OrderRef) -> Result<Outcome, ReserveError> {
    let savepoint = txn.begin().await?;
    match savepoint.query_one_raw(insert(order, RESERVED, None)).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            savepoint.commit().await?;
            return stored_outcome(txn, order).await;
        }
        Err(error) => {
            savepoint.rollback().await?;
            return match error.sql_err() {
                // No sale row, so no rejected row either (the foreign key
                // forbids it); a redelivery decides the same way again.
                Some(SqlErr::ForeignKeyConstraintViolation(_)) => {
                    Ok(Outcome::Rejected(RejectReason::SaleNotFound))
                }
                Some(SqlErr::UniqueConstraintViolation(_)) => {
                    reject(txn, order, RejectReason::DuplicateBuyer).await
                }
                _ => Err(error.into()),
            };
        }
    }
    let values: [Value; 2] = [order.sale_id.as_str().into(), quantity(order).into()];
    let decremented = savepoint
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            DECREMENT,
            values,
        ))
        .await?;
    if let Some(row) = decremented {
        let terms = Terms::from_row(&row)?;
        savepoint.commit().await?;
        return Ok(Outcome::Reserved(terms));
    }
    savepoint.rollback().await?;
    reject(txn, order, RejectReason::InsufficientStock).await
}

async fn reject(
    txn: &DatabaseTransaction,
    order: &OrderRef,
    why: RejectReason,
) -> Result<Outcome, ReserveError> {
    if txn
        .query_one_raw(insert(order, REJECTED, Some(why.as_str())))
        .await?
        .is_none()
    {
        // Only reachable if the same order id appears twice in one batch.
        return stored_outcome(txn, order).await;
    }
    Ok(Outcome::Rejected(why))
}

/// The outcome already persisted for this order id: a redelivery re-announces it.
async fn stored_outcome(
    txn: &DatabaseTransaction,
    order: &OrderRef,
) -> Result<Outcome, ReserveError> {
    let id = order.order_id.to_string();
    let row = reservation::Entity::find_by_id(id.as_str())
        .one(txn)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("reservation {id}")))?;
    if row.sale_id != order.sale_id.as_str()
        || row.user_id != order.user_id.as_str()
        || row.quantity != quantity(order)
    {
        return Err(ReserveError::Mismatch(id));
    }
    Ok(match row.status.as_str() {
        // Released later by a cancellation or expiry: it *was* reserved, and
        // the redelivery must say so again, without taking the stock again.
        RESERVED | RELEASED => {
            let sale = sale::Entity::find_by_id(row.sale_id.as_str())
                .one(txn)
                .await?
                .ok_or_else(|| DbErr::RecordNotFound(format!("sale {}", row.sale_id)))?;
            Outcome::Reserved(Terms {
                payment_window_secs: u32::try_from(sale.payment_window_secs).unwrap_or(1),
                unit_price_cents: sale.unit_price_cents,
            })
        }
        _ => Outcome::Rejected(
            row.reason
                .as_deref()
                .map_or(RejectReason::Rejected, RejectReason::from_stored),
        ),
    })
}

fn insert(order: &OrderRef, status: &str, why: Option<&str>) -> Statement {
    let values: [Value; 6] = [
        order.order_id.to_string().into(),
        order.sale_id.as_str().into(),
        order.user_id.as_str().into(),
        quantity(order).into(),
        status.into(),
        why.map(str::to_owned).into(),
    ];
    Statement::from_sql_and_values(DbBackend::Postgres, INSERT, values)
}

/// `Quantity` is at most `Quantity::MAX`, far inside `i32`.
fn quantity(order: &OrderRef) -> i32 {
    i32::try_from(order.quantity.get()).unwrap_or(i32::MAX)
}
