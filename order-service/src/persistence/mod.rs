//! The `orders` table: its sea-orm entity and the migrations that create it.
pub mod migration;
pub mod order;

use sea_orm::{ConnectionTrait, DatabaseConnection, DbErr, TransactionTrait};
use sea_orm_migration::MigratorTrait;

pub use migration::Migrator;
pub use order::OrderStatus;

/// Arbitrary but fixed: every replica (and the `migrate` Job) contends for
/// the same advisory lock, so exactly one of them migrates at a time.
const MIGRATION_LOCK_KEY: i64 = 0x5EC0_0D00_0001;

/// Applies pending migrations under a PostgreSQL advisory lock.
///
/// The lock is transaction-scoped (`pg_advisory_xact_lock`): a pooled
/// connection cannot leak it, and it is released on commit or on a crash.
/// The migrations run inside that same transaction, so a replica that waited
/// finds them applied and does nothing.
pub async fn migrate(db: &DatabaseConnection) -> Result<(), DbErr> {
    let txn = db.begin().await?;
    // Waiting for another replica's migration may outlast the pool's
    // statement_timeout; this bound applies to this transaction only.
    txn.execute_unprepared("SET LOCAL statement_timeout = '120s'")
        .await?;
    txn.execute_unprepared(&format!(
        "SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"
    ))
    .await?;
    Migrator::up(&txn, None).await?;
    txn.commit().await
}
