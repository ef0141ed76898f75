//! What can stop a reconciliation run.
use redis::RedisError;
use sea_orm::DbErr;

use crate::warm::WarmError;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
    #[error("another reconciliation is running")]
    Busy,
}

impl From<WarmError> for ReconcileError {
    fn from(e: WarmError) -> Self {
        match e {
            WarmError::Db(e) => Self::Db(e),
            WarmError::Redis(e) => Self::Redis(e),
        }
    }
}
