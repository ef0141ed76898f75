//! A multiplexed, self-reconnecting Redis connection: one per process, plus
//! one per HTTP worker for the gateway's purchase script (`gateway::worker_redis`).
use std::time::Duration;

use crate::settings::RedisSettings;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Connects, with a timeout on connect and on every response, and capped
/// exponential backoff when the connection has to be re-established: 1 s,
/// then doubling, at most 2 s apart.
///
/// Callers that must not wait for a reconnection (anything serving a
/// request) bound each call with [`within`]: the manager's requests await
/// the reconnection in progress, retries and backoff included.
pub async fn connect(settings: &RedisSettings) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(settings.url.expose())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.response_timeout))
        .set_number_of_retries(3)
        .set_min_delay(Duration::from_secs(1))
        .set_exponent_base(2.0)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_with_config(client, config).await
}

/// Runs one Redis call, failing with a timeout error after `limit`: while
/// Redis is away a request fails fast instead of queueing behind the
/// reconnection, which goes on in the background.
pub async fn within<T>(
    limit: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("redis call timed out after {limit:?}"),
        )
        .into()),
    }
}

/// True when Redis answers PING in time.
pub async fn is_reachable(redis: &ConnectionManager, timeout: Duration) -> bool {
    let mut con = redis.clone();
    let cmd = redis::cmd("PING");
    let ping = cmd.query_async::<String>(&mut con);
    matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
}
