//! PostgreSQL connection set-up shared by the two services that own tables.
use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, RuntimeErr};

use crate::settings::DatabaseSettings;

/// A pool with bounded connect and acquire times, and a server-side
/// `statement_timeout`, so a stuck database surfaces as an error instead of a hang.
pub async fn connect(settings: &DatabaseSettings) -> Result<DatabaseConnection, DbErr> {
    let mut options = ConnectOptions::new(settings.url.expose());
    let statement_timeout = settings.statement_timeout_ms.to_string();
    options
        .max_connections(settings.max_connections)
        .min_connections(1)
        .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .acquire_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .sqlx_logging(false)
        .map_sqlx_postgres_opts(move |pg| {
            pg.options([("statement_timeout", statement_timeout.as_str())])
        });
    Database::connect(options).await
}

/// True when the database answers `SELECT 1` in time.
pub async fn is_reachable(db: &DatabaseConnection, timeout: Duration) -> bool {
    matches!(
        tokio::time::timeout(timeout, db.execute_unprepared("SELECT 1")).await,
        Ok(Ok(_))
    )
}

/// Outages (connection refused, pool exhausted, server restarting) are worth
/// retrying indefinitely; anything else is about the data.
pub fn is_transient(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            use sea_orm::sqlx::Error;
            match e {
                Error::Io(_)
                | Error::PoolTimedOut
                | Error::PoolClosed
                | Error::WorkerCrashed
                | Error::Tls(_) => true,
                // 57P01 admin_shutdown, 57P02/57P03 crash/cannot connect now, 08xxx connection
                // exceptions, 40001/40P01 serialization failure/deadlock, 57014 statement timeout.
                Error::Database(db) => db.code().is_some_and(|c| {
                    c.starts_with("08")
                        || c.starts_with("57P")
                        || c == "40001"
                        || c == "40P01"
                        || c == "57014"
                }),
                _ => false,
            }
        }
        _ => false,
    }
}
