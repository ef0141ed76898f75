//! A multiplexed, self-reconnecting Redis connection: one per process, plus
//! one per HTTP worker for the gateway's purchase script (`gateway::worker_redis`).
use std::time::Duration;

use crate::settings::RedisSettings;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::IntoConnectionInfo;

/// Connects, with a timeout on connect and on every response, and capped
/// exponential backoff when the connection has to be re-established: 1 s,
/// then doubling, at most 2 s apart.
///
/// Callers that must not wait for a reconnection (anything serving a
/// request) bound each call with [`within`]: the manager's requests await
/// the reconnection in progress, retries and backoff included.
pub async fn connect(settings: &RedisSettings) -> redis::RedisResult<ConnectionManager> {
    let client = client(settings)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.response_timeout))
        .set_number_of_retries(3)
        .set_min_delay(Duration::from_secs(1))
        .set_exponent_base(2.0)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_with_config(client, config).await
}

/// The client for `settings`: the URL, then the credentials and the CA file
/// that are given apart from it.
pub fn client(settings: &RedisSettings) -> redis::RedisResult<redis::Client> {
    let mut info = settings.url.expose().into_connection_info()?;
    let mut auth = info.redis_settings().clone();
    if let Some(user) = &settings.username {
        auth = auth.set_username(user);
    }
    if let Some(password) = &settings.password {
        auth = auth.set_password(password.expose());
    }
    info = info.set_redis_settings(auth);
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    match &settings.tls_ca_file {
        Some(path) if tls => {
            let root_cert = std::fs::read(path).map_err(|e| {
                redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "cannot read redis.tls_ca_file",
                    format!("{}: {e}", path.display()),
                ))
            })?;
            redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            )
        }
        Some(_) => Err(redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "redis.tls_ca_file is set but the URL is not rediss://",
        ))),
        None => redis::Client::open(info),
    }
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
