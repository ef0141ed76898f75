//! A multiplexed, self-reconnecting Redis connection: one per process, plus
//! one per HTTP worker for the gateway's purchase script (`gateway::worker_redis`).
//! To a single Redis, or to a Redis Cluster when `redis.cluster_nodes` is
//! set: [`Conn`] is either, and every caller is written once for both.
use std::time::Duration;

use crate::settings::RedisSettings;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};

/// A handle to Redis, cheap to clone (clones share the connection).
///
/// On a cluster each command goes to the node that owns its keys' slot. A
/// sale's keys share the hash tag `{sale_id}` (`stock::SaleKeys`), so every
/// script and pipeline on one sale runs on one node, unchanged.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Connects, with a timeout on connect and on every response, and capped
/// exponential backoff when the connection has to be re-established: 1 s,
/// then doubling, at most 2 s apart. A cluster connection is given the same
/// bounds, and follows the cluster's slot moves (MOVED/ASK) by itself.
///
/// Callers that must not wait for a reconnection (anything serving a
/// request) bound each call with [`within`]: the manager's requests await
/// the reconnection in progress, retries and backoff included.
pub async fn connect(settings: &RedisSettings) -> redis::RedisResult<Conn> {
    let nodes = settings.cluster_nodes();
    if !nodes.is_empty() {
        return cluster(settings, &nodes).await.map(Conn::Cluster);
    }
    let client = client(settings)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(settings.response_timeout))
        .set_number_of_retries(3)
        .set_min_delay(Duration::from_secs(1))
        .set_exponent_base(2.0)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_with_config(client, config)
        .await
        .map(Conn::Single)
}

/// The cluster connection: the seed `nodes`, the credentials and CA file
/// given apart from them, and the single connection's timeouts.
async fn cluster(
    settings: &RedisSettings,
    nodes: &[&str],
) -> redis::RedisResult<ClusterConnection> {
    let mut builder = ClusterClientBuilder::new(nodes.to_vec())
        .tcp_settings(tcp())
        .connection_timeout(settings.connect_timeout)
        .response_timeout(settings.response_timeout)
        .retries(3)
        .min_retry_wait(100)
        .max_retry_wait(2_000);
    if let Some(user) = &settings.username {
        builder = builder.username(user);
    }
    if let Some(password) = &settings.password {
        builder = builder.password(password.expose());
    }
    if let Some(path) = &settings.tls_ca_file {
        builder = builder.certs(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(read_ca(path)?),
        });
    }
    builder.build()?.get_async_connection().await
}

/// `TCP_NODELAY` (the redis crate leaves Nagle's algorithm on): many
/// requests share one multiplexed connection, and with Nagle a small write
/// waits for the previous one's ACK, which the kernel may delay up to 40 ms.
fn tcp() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

fn read_ca(path: &std::path::Path) -> redis::RedisResult<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "cannot read redis.tls_ca_file",
            format!("{}: {e}", path.display()),
        ))
    })
}

/// The client for `settings`: the URL, then the credentials and the CA file
/// that are given apart from it.
pub fn client(settings: &RedisSettings) -> redis::RedisResult<redis::Client> {
    let mut info = settings
        .url
        .expose()
        .into_connection_info()?
        .set_tcp_settings(tcp());
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
            let root_cert = read_ca(path)?;
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
pub async fn is_reachable(redis: &Conn, timeout: Duration) -> bool {
    let mut con = redis.clone();
    let cmd = redis::cmd("PING");
    let ping = cmd.query_async::<String>(&mut con);
    matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
}
