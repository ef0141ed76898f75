//! What the consumer writes and reads back of an order row, shared by the
//! one-by-one path (`consumer`) and the batch path (`consumer::batch`).
use sea_orm::{sqlx, DbErr, RuntimeErr};

use seckill_common::events::{RejectReason, Reserved};

use crate::persistence::OrderStatus;

/// The partial unique index on (sale_id, user_id) among live orders.
pub(super) const LIVE_SALE_USER_INDEX: &str = "orders_live_sale_user_key";

/// What an order looks like once persisted: all the event needs.
pub(super) struct Persisted {
    pub(super) status: OrderStatus,
    pub(super) reason: Option<RejectReason>,
}

/// The payment terms of a created order.
#[derive(Clone, Copy)]
pub(super) struct Terms {
    pub(super) window_secs: i32,
    pub(super) amount_cents: i64,
}

impl Terms {
    pub(super) fn of(reserved: &Reserved) -> Self {
        let quantity = i64::from(reserved.order.quantity.get());
        Self {
            window_secs: i32::try_from(reserved.payment_window_secs).unwrap_or(i32::MAX),
            amount_cents: reserved.unit_price_cents.saturating_mul(quantity).max(0),
        }
    }
}

/// True when `error` is a unique violation of the named index.
pub(super) fn violates(error: &DbErr, index: &str) -> bool {
    match error {
        DbErr::Exec(RuntimeErr::SqlxError(sqlx::Error::Database(e)))
        | DbErr::Query(RuntimeErr::SqlxError(sqlx::Error::Database(e))) => {
            e.code().as_deref() == Some("23505") && e.constraint() == Some(index)
        }
        _ => false,
    }
}
