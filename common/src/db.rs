//! PostgreSQL connection set-up shared by the two services that own tables.
use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, RuntimeErr};

use crate::settings::DatabaseSettings;

/// A pool with bounded connect and acquire times, and a server-side
/// `statement_timeout`, so a stuck database surfaces as an error instead of a hang.
pub async fn connect(settings: &DatabaseSettings) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(settings.url.expose());
    let statement_timeout = settings.statement_timeout.as_millis().to_string();
    options
        .max_connections(settings.max_connections)
        .min_connections(1)
        .connect_timeout(settings.connect_timeout)
        .acquire_timeout(settings.connect_timeout)
        .sqlx_logging(false)
        .map_sqlx_postgres_opts(move |pg| {
            pg.options([("statement_timeout", statement_timeout.as_str())])
        });
    Database::connect(options).await
}

/// Applies `M`'s migrations under a PostgreSQL advisory lock held for one
/// transaction, so replicas starting together migrate one after the other
/// and the later ones find nothing to do. Waiting for another replica may
/// outlast the pool's `statement_timeout`: this transaction has its own.
pub async fn migrate_locked<M: sea_orm_migration::MigratorTrait>(
    db: &DatabaseConnection,
    lock_key: i64,
) -> Result<(), DbErr> {
    use sea_orm::TransactionTrait;
    let txn = db.begin().await?;
    txn.execute_unprepared("SET LOCAL statement_timeout = '120s'")
        .await?;
    txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({lock_key})"))
        .await?;
    M::up(&txn, None).await?;
    txn.commit().await
}

/// True when the database answers `SELECT 1` in time.
pub async fn is_reachable(db: &DatabaseConnection, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, db.execute_unprepared("SELECT 1")).await,
        Ok(Ok(_))
    )
}

/// Outages (connection refused, pool exhausted, server restarting, disk
/// full, read-only after a failover) are worth retrying indefinitely;
/// anything else is about the data.
///
/// Why the line matters: a transient error pauses the consumer and retries,
/// a permanent one dead-letters the message. Dead-lettering a good message
/// loses a 202 order (inventory-service) or strands its reservation
/// (order-service), so when in doubt an error of the *server* is an outage.
pub fn is_transient(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            use sea_orm::sqlx::Error;
            match e.as_ref() {
                Error::Io(_)
                | Error::PoolTimedOut
                | Error::PoolClosed
                | Error::WorkerCrashed
                | Error::Tls(_) => true,
                Error::Database(db) => db.code().is_some_and(|c| is_outage_code(&c)),
                _ => false,
            }
        }
        _ => false,
    }
}

/// SQLSTATEs that describe the server's state, not the statement's data.
pub fn is_outage_code(code: &str) -> bool {
    const CLASSES: &[&str] = &[
        "08",  // connection exception
        "53",  // insufficient resources: disk full, out of memory, too many connections
        "57P", // operator intervention: shutdown, crash, cannot connect now, database dropped
        "58",  // system error: I/O error, undefined file
    ];
    const CODES: &[&str] = &[
        "40001", // serialization failure
        "40P01", // deadlock detected
        "40003", // statement completion unknown
        "57014", // query cancelled (statement timeout)
        "55P03", // lock not available
        "55006", // object in use
        "25006", // read-only transaction: a replica, or a primary demoted in a failover
        "42501", // insufficient privilege: a grant lost or not yet applied
        "28000", // invalid authorization: credentials rotated
        "28P01", // invalid password
        "3D000", // database does not exist (yet)
        "XX001", // data corrupted: an operator must act; retrying keeps the message
        "XX002", // index corrupted
    ];
    CLASSES.iter().any(|c| code.starts_with(c)) || CODES.contains(&code)
}

#[cfg(test)]
mod tests {
    use super::is_outage_code;

    #[test]
    fn server_side_resource_and_availability_errors_are_outages() {
        for code in [
            "53100", "53200", "53300", "25006", "58030", "58000", "42501", "57P01", "57P03",
            "08006", "40001", "40P01", "57014", "55P03",
        ] {
            assert!(is_outage_code(code), "{code} must pause and retry");
        }
    }

    #[test]
    fn errors_about_the_data_are_not() {
        // unique violation, check violation, foreign key, invalid text, division by zero
        for code in ["23505", "23514", "23503", "22P02", "22012", "42P01"] {
            assert!(!is_outage_code(code), "{code} is about the data");
        }
    }
}
