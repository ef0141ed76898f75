//! One error type for the whole tool: main turns it into a message and a
//! non-zero exit, nothing here needs to tell the variants apart beyond that.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error("refusing to send load to {0}: only 127.0.0.1, ::1 and localhost are allowed")]
    NotLoopback(String),
    #[error("HTTP: {0}")]
    Http(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("token: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
    #[error("plot: {0}")]
    Plot(String),
    #[error("timed out: {0}")]
    Timeout(String),
}

pub type Result<T> = std::result::Result<T, BenchError>;

pub(crate) fn usage(message: impl Into<String>) -> BenchError {
    BenchError::Usage(message.into())
}
