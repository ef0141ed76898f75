//! This service's tables: `sales` (the authoritative stock) and
//! `reservations` (one row per order id, which makes consumption idempotent).
pub mod migration;
pub mod reservation;
pub mod reserve;
pub mod sale;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter, QuerySelect, TransactionTrait,
};
use seckill_common::domain::SaleId;

pub use migration::Migrator;

/// The advisory lock migrations run under (`db::migrate_locked`).
/// Arbitrary but fixed: every replica and the `migrate` Job must agree on it.
pub const MIGRATION_LOCK_KEY: i64 = 0x5EC0_1A7E_0000_0001;

/// Sales that end in the future or ended less than `ago` ago, with their end.
pub async fn sales_ending_after(
    db: &DatabaseConnection,
    ago: std::time::Duration,
) -> Result<Vec<(SaleId, DateTime<Utc>)>, DbErr> {
    let since = Utc::now() - chrono::Duration::from_std(ago).unwrap_or_default();
    let rows: Vec<(String, DateTime<Utc>)> = sale::Entity::find()
        .select_only()
        .column(sale::Column::Id)
        .column(sale::Column::EndsAt)
        .filter(sale::Column::EndsAt.gt(since))
        .into_tuple()
        .all(db)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, ends_at)| Some((SaleId::parse(&id).ok()?, ends_at)))
        .collect())
}

/// A sale and its live reservations as `(user id, order id)`, read from one
/// repeatable-read snapshot, so stock and buyers agree with each other: a
/// reservation is counted in both or in neither. Used to warm Redis.
pub async fn sale_snapshot(
    db: &DatabaseConnection,
    id: &seckill_common::domain::SaleId,
) -> Result<Option<(sale::Model, Vec<(String, String)>)>, DbErr> {
    Ok(reconcile_snapshot(db, id, &[])
        .await?
        .map(|view| (view.sale, view.reserved)))
}

/// What reconciliation reads of one sale, from one repeatable-read snapshot.
pub struct ReconcileView {
    pub sale: sale::Model,
    /// `(user id, order id)` of every `reserved` reservation.
    pub reserved: Vec<(String, String)>,
    /// `(order id, units)` of those of `orders` whose reservation is
    /// `released` or `rejected`: their Redis release may still be due.
    pub settled: Vec<(String, i64)>,
}

/// The sale, its live reservations, and the settled ones among `orders`
/// (the order ids Redis lists as buyers), all from one snapshot.
pub async fn reconcile_snapshot(
    db: &DatabaseConnection,
    id: &seckill_common::domain::SaleId,
    orders: &[String],
) -> Result<Option<ReconcileView>, DbErr> {
    use sea_orm::{AccessMode, ColumnTrait, EntityTrait, IsolationLevel, QueryFilter, QuerySelect};
    let txn = db
        .begin_with_config(
            Some(IsolationLevel::RepeatableRead),
            Some(AccessMode::ReadOnly),
        )
        .await?;
    let Some(row) = sale::Entity::find_by_id(id.as_str()).one(&txn).await? else {
        txn.commit().await?;
        return Ok(None);
    };
    let reserved: Vec<(String, String)> = reservation::Entity::find()
        .select_only()
        .column(reservation::Column::UserId)
        .column(reservation::Column::OrderId)
        .filter(reservation::Column::SaleId.eq(id.as_str()))
        .filter(reservation::Column::Status.eq(reservation::RESERVED))
        .into_tuple()
        .all(&txn)
        .await?;
    let settled: Vec<(String, i32)> = match orders.is_empty() {
        true => Vec::new(),
        false => {
            reservation::Entity::find()
                .select_only()
                .column(reservation::Column::OrderId)
                .column(reservation::Column::Quantity)
                .filter(reservation::Column::SaleId.eq(id.as_str()))
                .filter(reservation::Column::OrderId.is_in(orders.iter().map(String::as_str)))
                .filter(reservation::Column::Status.ne(reservation::RESERVED))
                .into_tuple()
                .all(&txn)
                .await?
        }
    };
    txn.commit().await?;
    Ok(Some(ReconcileView {
        sale: row,
        reserved,
        settled: settled
            .into_iter()
            .map(|(order, units)| (order, i64::from(units)))
            .collect(),
    }))
}
