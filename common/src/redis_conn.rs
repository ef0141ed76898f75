//! One multiplexed, self-reconnecting Redis connection per process.
use std::time::Duration;

use crate::settings::RedisSettings;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

/// Connects, with a timeout on connect and on every response, and capped
/// exponential backoff when the connection has to be re-established.
pub async fn connect(settings: &RedisSettings) -> redis::RedisResult<ConnectionManager> {
    let client = redis::Client::open(settings.url.expose())?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .set_response_timeout(Duration::from_millis(settings.response_timeout_ms))
        .set_number_of_retries(3)
        .set_exponent_base(2)
        .set_factor(50)
        .set_max_delay(2_000);
    ConnectionManager::new_with_config(client, config).await
}

/// True when Redis answers PING in time.
pub async fn is_reachable(redis: &ConnectionManager, timeout: Duration) -> bool {
    let mut con = redis.clone();
    let cmd = redis::cmd("PING");
    let ping = cmd.query_async::<String>(&mut con);
    matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
}
