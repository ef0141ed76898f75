//! What order-service's consumer writes: an order row per inventory
//! decision, inserted unless it exists, and read back as it is stored, so a
//! redelivery announces exactly what the first delivery did. One message at
//! a time here, in a savepoint each; a whole batch at once in [`batch`].
pub mod batch;

use sea_orm::{
    sqlx, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, QueryResult, RuntimeErr,
    Statement, TransactionTrait,
};

use seckill_common::events::{OrderRef, RejectReason, Reserved};

use super::OrderStatus;

/// The partial unique index on (sale_id, user_id) among live orders.
pub const LIVE_SALE_USER_INDEX: &str = "orders_live_sale_user_key";

/// What an order looks like once persisted: all the event needs.
pub struct Persisted {
    pub status: OrderStatus,
    pub reason: Option<RejectReason>,
}

/// The payment terms of a created order.
#[derive(Clone, Copy)]
pub struct Terms {
    pub window_secs: i32,
    pub amount_cents: i64,
}

impl Terms {
    pub fn of(reserved: &Reserved) -> Self {
        let quantity = i64::from(reserved.order.quantity.get());
        Self {
            window_secs: i32::try_from(reserved.payment_window_secs).unwrap_or(i32::MAX),
            amount_cents: reserved.unit_price_cents.saturating_mul(quantity).max(0),
        }
    }
}

/// True when `error` is a unique violation of the named index.
pub fn violates(error: &DbErr, index: &str) -> bool {
    let (DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e))) = error
    else {
        return false;
    };
    match e.as_ref() {
        sqlx::Error::Database(e) => {
            e.code().as_deref() == Some("23505") && e.constraint() == Some(index)
        }
        _ => false,
    }
}

/// The payment window starts when the order exists: the buyer can pay from
/// that moment, whatever the queue's lag was.
const INSERT: &str = "INSERT INTO orders \
     (order_id, sale_id, user_id, quantity, status, reason, expires_at, amount_cents, traceparent) \
     VALUES ($1, $2, $3, $4, $5, $6, now() + $7::integer * interval '1 second', $8, $9) \
     ON CONFLICT (order_id) DO NOTHING \
     RETURNING status, reason";

const SELECT: &str = "SELECT status, reason FROM orders WHERE order_id = $1";

/// What a stored order row says, for the event that announces it.
pub fn persisted(row: &QueryResult) -> Result<Persisted, DbErr> {
    let status: String = row.try_get("", "status")?;
    let status = OrderStatus::parse(&status)
        .ok_or_else(|| DbErr::Custom(format!("unknown order status {status:?}")))?;
    Ok(Persisted {
        status,
        reason: row
            .try_get::<Option<String>>("", "reason")?
            .as_deref()
            .map(RejectReason::from_stored),
    })
}

/// Inserts the order unless it exists; returns what is persisted either way.
pub async fn persist(
    txn: &DatabaseTransaction,
    order: &OrderRef,
    requested: &Persisted,
    terms: Option<Terms>,
    traceparent: Option<&str>,
) -> Result<Persisted, DbErr> {
    match insert_in_savepoint(txn, order, requested, terms, traceparent).await {
        Err(error) if violates(&error, LIVE_SALE_USER_INDEX) => {
            tracing::warn!(order_id = %order.order_id, sale_id = %order.sale_id, user_id = %order.user_id,
                "user already holds a live order in this sale; recording this one as failed");
            let duplicate = Persisted {
                status: OrderStatus::Failed,
                reason: Some(RejectReason::DuplicateBuyer),
            };
            insert_in_savepoint(txn, order, &duplicate, None, traceparent).await
        }
        other => other,
    }
}

/// One attempt in its own savepoint, so a constraint violation leaves the
/// batch's transaction usable.
async fn insert_in_savepoint(
    txn: &DatabaseTransaction,
    order: &OrderRef,
    wanted: &Persisted,
    terms: Option<Terms>,
    traceparent: Option<&str>,
) -> Result<Persisted, DbErr> {
    let savepoint = txn.begin().await?;
    match insert_or_read(&savepoint, order, wanted, terms, traceparent).await {
        Ok(persisted) => {
            savepoint.commit().await?;
            Ok(persisted)
        }
        Err(error) => {
            savepoint.rollback().await?;
            Err(error)
        }
    }
}

async fn insert_or_read(
    db: &DatabaseTransaction,
    order: &OrderRef,
    wanted: &Persisted,
    terms: Option<Terms>,
    traceparent: Option<&str>,
) -> Result<Persisted, DbErr> {
    let order_id = order.order_id.to_string();
    let quantity = i32::try_from(order.quantity.get()).map_err(|e| DbErr::Custom(e.to_string()))?;
    let insert = Statement::from_sql_and_values(
        DbBackend::Postgres,
        INSERT,
        [
            order_id.clone().into(),
            order.sale_id.to_string().into(),
            order.user_id.to_string().into(),
            quantity.into(),
            wanted.status.as_str().into(),
            wanted.reason.map(RejectReason::as_str).into(),
            terms.map(|t| t.window_secs).into(),
            terms.map_or(0, |t| t.amount_cents).into(),
            traceparent.map(str::to_owned).into(),
        ],
    );
    let row = match db.query_one_raw(insert).await? {
        Some(row) => row,
        // Already there: a redelivery. Change nothing; report what is stored.
        None => db
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                SELECT,
                [order_id.into()],
            ))
            .await?
            .ok_or_else(|| {
                DbErr::RecordNotFound(format!("order {} conflicted but is gone", order.order_id))
            })?,
    };
    persisted(&row)
}
