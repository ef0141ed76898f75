//! Layered configuration: compiled-in defaults, then an optional file, then
//! the environment. Every setting can come from the environment, which is
//! how Kubernetes configures the services:
//!
//! `SECKILL_<FIELD>` for top-level fields, `SECKILL_<SECTION>__<FIELD>` for
//! nested ones (e.g. `SECKILL_KAFKA__BROKERS`). `SECKILL_CONFIG` names the file.

use std::fmt;
use std::time::Duration;

use serde::{de::DeserializeOwned, Deserialize, Serialize, Serializer};

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot load configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Loads `T`, whose serde defaults are the first layer.
pub fn load<T: DeserializeOwned>() -> Result<T, SettingsError> {
    let mut builder = config::Config::builder();
    if let Ok(path) = std::env::var("SECKILL_CONFIG") {
        builder = builder.add_source(config::File::with_name(&path).required(true));
    }
    let cfg = builder
        .add_source(
            config::Environment::with_prefix("SECKILL")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true),
        )
        .build()?;
    Ok(cfg.try_deserialize()?)
}

/// A configuration value that must never be logged: `Debug` and `Serialize`
/// print a placeholder; only [`Secret::expose`] reveals it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// A secret that has no usable default: set, and at least 16 bytes.
pub fn require_secret(name: &str, secret: &Secret) -> Result<(), SettingsError> {
    if secret.expose().len() < 16 {
        return Err(invalid(format!(
            "{name} must be set to at least 16 bytes (SECKILL_{})",
            name.to_ascii_uppercase()
        )));
    }
    Ok(())
}

impl From<&str> for Secret {
    fn from(v: &str) -> Self {
        Self(v.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(********)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("********")
    }
}

/// The environment variable names a settings struct reads, derived from its
/// defaults. Used to check Kubernetes manifests against the code.
pub fn env_var_names<T: Serialize>(defaults: &T) -> Vec<String> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let name = if prefix.is_empty() {
                        k.to_uppercase()
                    } else {
                        format!("{prefix}__{}", k.to_uppercase())
                    };
                    walk(&name, v, out);
                }
            }
            _ => out.push(format!("SECKILL_{prefix}")),
        }
    }
    let mut out = Vec::new();
    if let Ok(v) = serde_json::to_value(defaults) {
        walk("", &v, &mut out);
    }
    out.sort();
    out
}

/// Durations in settings are whole milliseconds in files and variables
/// (`*_MS`: unambiguous in an env var), and `Duration`s in the code, so no
/// call site converts: `#[serde(rename = "x_ms", with = "millis")] x: Duration`.
pub mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

pub fn invalid(msg: impl Into<String>) -> SettingsError {
    SettingsError::Invalid(msg.into())
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct KafkaSettings {
    /// Comma-separated `host:port` list.
    pub brokers: String,
    /// Prefixes every topic name, so several stacks (or tests) can share a cluster.
    pub topic_prefix: String,
    /// Partitions of each topic created at start. At least 6, so one hot sale
    /// (keyed by order id) spreads over as many consumers.
    pub partitions: i32,
    pub replication_factor: i32,
    /// How long one produce may take, librdkafka's own retries included.
    #[serde(rename = "produce_timeout_ms", with = "crate::settings::millis")]
    pub produce_timeout: Duration,
    /// Producer batching window: a few ms buys large batches at flash-sale rates.
    #[serde(rename = "linger_ms", with = "crate::settings::millis")]
    pub linger: Duration,
    /// The producers' `compression.type`. LZ4 by default: cheap, and it
    /// shrinks the JSON envelopes on the wire and on the brokers' disks. On
    /// the benchmark machine `none` measured the same CPU per produce within
    /// the noise (docs/benchmarks.md, "The purchase floor").
    pub compression: Compression,
    /// Consumer batch: up to this many messages...
    pub batch_max: usize,
    /// ...or whatever arrived within this window.
    #[serde(rename = "batch_linger_ms", with = "crate::settings::millis")]
    pub batch_linger: Duration,
    /// A consumer's fetch waits for this many bytes (librdkafka `fetch.min.bytes`)...
    pub fetch_min_bytes: u32,
    /// ...or this long (`fetch.wait.max.ms`). Fewer, fuller fetches cost the
    /// broker far less per message than one fetch per trickle of messages.
    pub fetch_wait_max_ms: u32,
    #[serde(rename = "session_timeout_ms", with = "crate::settings::millis")]
    pub session_timeout: Duration,
    /// Attempts at one message that fails for a reason other than an outage
    /// before it goes to the dead-letter topic.
    pub max_attempts: u32,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: "seckill.".into(),
            partitions: 6,
            replication_factor: 1,
            produce_timeout: Duration::from_millis(3_000),
            linger: Duration::from_millis(2),
            compression: Compression::Lz4,
            batch_max: 500,
            batch_linger: Duration::from_millis(5),
            fetch_min_bytes: 1,
            fetch_wait_max_ms: 500,
            session_timeout: Duration::from_millis(10_000),
            max_attempts: 3,
        }
    }
}

/// The codecs both librdkafka and Apache Kafka support, but snappy (which
/// the local stand-in broker lacks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Lz4,
    Zstd,
    Gzip,
}

impl Compression {
    /// librdkafka's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
        }
    }
}

impl KafkaSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.brokers.trim().is_empty() {
            return Err(invalid("kafka.brokers is empty"));
        }
        if self.partitions < 6 {
            return Err(invalid("kafka.partitions must be at least 6"));
        }
        if self.replication_factor < 1 || self.batch_max == 0 || self.max_attempts == 0 {
            return Err(invalid(
                "kafka.replication_factor, batch_max and max_attempts must be positive",
            ));
        }
        if self.produce_timeout < Duration::from_millis(100) {
            return Err(invalid("kafka.produce_timeout_ms must be at least 100"));
        }
        Ok(())
    }

    pub fn topics(&self) -> Topics {
        Topics::new(&self.topic_prefix)
    }
}

/// The topic names, derived from one prefix.
#[derive(Debug, Clone)]
pub struct Topics {
    /// gateway -> inventory-service
    pub order_requested: String,
    /// inventory-service -> order-service: StockReserved / StockRejected
    pub inventory_events: String,
    /// order-service -> anyone: OrderCreated / OrderFailed
    pub order_events: String,
    /// Messages that could not be processed, with the reason in a header.
    pub dead_letter: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Self {
        Self {
            order_requested: format!("{prefix}order-requested"),
            inventory_events: format!("{prefix}inventory-events"),
            order_events: format!("{prefix}order-events"),
            dead_letter: format!("{prefix}dead-letter"),
        }
    }

    pub fn all(&self) -> [&str; 4] {
        [
            &self.order_requested,
            &self.inventory_events,
            &self.order_events,
            &self.dead_letter,
        ]
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct RedisSettings {
    /// `redis://host:port` or, with TLS, `rediss://host:port`; may carry
    /// `user:password@`. A secret: it may hold the password.
    pub url: Secret,
    /// ACL user (Redis 6+), when not in the URL.
    pub username: Option<String>,
    /// The password (of `username`, or `requirepass`), when not in the URL:
    /// so that Kubernetes can give it from a Secret and the URL from a
    /// ConfigMap. Never logged.
    pub password: Option<Secret>,
    /// PEM file of the CA that signed the server's certificate (`rediss://`
    /// only); without it the system's trust store is used.
    pub tls_ca_file: Option<std::path::PathBuf>,
    #[serde(rename = "connect_timeout_ms", with = "crate::settings::millis")]
    pub connect_timeout: Duration,
    #[serde(rename = "response_timeout_ms", with = "crate::settings::millis")]
    pub response_timeout: Duration,
    /// A Redis Cluster: some of its nodes, comma-separated
    /// (`redis://10.0.0.1:6379,redis://10.0.0.2:6379`, or `rediss://` for
    /// TLS); the client learns the rest. Empty: the one Redis at `url`.
    pub cluster_nodes: String,
}

impl RedisSettings {
    /// The cluster's seed nodes; empty for a single Redis.
    pub fn cluster_nodes(&self) -> Vec<&str> {
        self.cluster_nodes
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect()
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        for (i, node) in self.cluster_nodes().iter().enumerate() {
            // The entry is not printed: it may hold a password.
            if !(node.starts_with("redis://") || node.starts_with("rediss://")) {
                return Err(invalid(format!(
                    "redis.cluster_nodes: entry {} is not a redis:// or rediss:// URL",
                    i + 1
                )));
            }
        }
        Ok(())
    }
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: Secret::from("redis://127.0.0.1:6379"),
            username: None,
            password: None,
            tls_ca_file: None,
            connect_timeout: Duration::from_millis(1_000),
            response_timeout: Duration::from_millis(500),
            cluster_nodes: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// `postgres://user:password@host:port/db`. A secret: it holds the password.
    pub url: Secret,
    pub max_connections: u32,
    #[serde(rename = "connect_timeout_ms", with = "crate::settings::millis")]
    pub connect_timeout: Duration,
    /// Bounds every statement, so a stuck database surfaces as an error.
    #[serde(rename = "statement_timeout_ms", with = "crate::settings::millis")]
    pub statement_timeout: Duration,
    /// Run migrations at start (the migrate subcommand does it for a Job).
    pub migrate_on_start: bool,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: Secret::from("postgres://postgres:postgres@127.0.0.1:5432/seckill"),
            max_connections: 10,
            connect_timeout: Duration::from_millis(3_000),
            statement_timeout: Duration::from_millis(5_000),
            migrate_on_start: true,
        }
    }
}

impl DatabaseSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        if !self.url.expose().starts_with("postgres") {
            return Err(invalid("database.url must be a postgres:// URL"));
        }
        if self.max_connections == 0 {
            return Err(invalid("database.max_connections must be positive"));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct HttpSettings {
    pub host: String,
    pub port: u16,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    pub shutdown_timeout_secs: u64,
    /// A port of its own for `/metrics` (0: served on `port`, as on a
    /// developer's machine). In a cluster the network policy then admits
    /// Prometheus to this port and only the gateway to `port`, where the
    /// internal routes are.
    pub metrics_port: u16,
}

impl HttpSettings {
    pub fn with_port(port: u16) -> Self {
        Self {
            host: "127.0.0.1".into(),
            port,
            workers: 0,
            shutdown_timeout_secs: 10,
            metrics_port: 0,
        }
    }

    pub fn workers(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        } else {
            self.workers
        }
    }
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self::with_port(8080)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_milliseconds_under_their_ms_names() {
        let k: KafkaSettings = serde_json::from_str(r#"{"produce_timeout_ms": 1234}"#).unwrap();
        assert_eq!(k.produce_timeout, Duration::from_millis(1234));
        let back = serde_json::to_value(&k).unwrap();
        assert_eq!(back["produce_timeout_ms"], 1234);
        assert!(back.get("produce_timeout").is_none());
    }

    #[test]
    fn defaults_are_valid_and_topics_share_the_prefix() {
        KafkaSettings::default().validate().unwrap();
        DatabaseSettings::default().validate().unwrap();
        let topics = Topics::new("t1.");
        assert!(topics.all().iter().all(|t| t.starts_with("t1.")));
    }

    #[test]
    fn compression_is_one_of_the_codecs_both_brokers_support() {
        let k: KafkaSettings = serde_json::from_str(r#"{"compression": "none"}"#).unwrap();
        assert_eq!(k.compression.as_str(), "none");
        assert_eq!(KafkaSettings::default().compression, Compression::Lz4);
        assert!(serde_json::from_str::<KafkaSettings>(r#"{"compression": "snappy"}"#).is_err());
    }

    #[test]
    fn too_few_partitions_is_rejected() {
        let k = KafkaSettings {
            partitions: 3,
            ..Default::default()
        };
        assert!(k.validate().is_err());
    }
}
