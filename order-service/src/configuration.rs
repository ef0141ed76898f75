//! order-service's typed settings: defaults, then `SECKILL_CONFIG` file, then
//! `SECKILL_*` environment variables; validated before anything starts.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use seckill_common::settings::{
    self, DatabaseSettings, HttpSettings, KafkaSettings, RedisSettings, Secret, SettingsError,
};
use seckill_common::transport::{Bus, StreamsSettings, Transport};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Settings {
    pub http: HttpSettings,
    /// This service's own database: it owns its tables and its migrations.
    pub database: DatabaseSettings,
    /// `kafka` (the default) or `redis-streams` (`SECKILL_TRANSPORT`).
    pub transport: Transport,
    /// Topic names, batching and attempts (both transports); the broker
    /// (Kafka only).
    pub kafka: KafkaSettings,
    /// The Redis Streams mode's knobs.
    pub streams: StreamsSettings,
    /// The Redis the streams live in (Redis Streams mode only).
    pub redis: RedisSettings,
    /// Consumer group id; replicas share it and split the partitions.
    pub consumer_group: String,
    pub payment: PaymentSettings,
    pub expiry: ExpirySettings,
    pub outbox: OutboxSettings,
    /// The secret the gateway presents on `/internal/...` (at least 16
    /// bytes; no default: see `seckill_common::internal_auth`).
    pub internal_token: Secret,
}

/// The payment provider. Only the fake exists (README, "Payment").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct PaymentSettings {
    /// What the fake provider answers. Idempotency keys starting
    /// `fake-decline` or `fake-timeout` override it per request, so a test
    /// can script a decline and then a success.
    pub mode: PaymentMode,
    /// Bound on one charge or refund; past it the outcome is unknown and the
    /// client retries with the same Idempotency-Key.
    #[serde(rename = "timeout_ms", with = "seckill_common::settings::millis")]
    pub timeout: Duration,
    /// How long the fake takes to answer (to widen races in tests).
    #[serde(rename = "latency_ms", with = "seckill_common::settings::millis")]
    pub latency: Duration,
    /// An attempt still without an outcome this long after it began (the
    /// provider timed out and the client never retried) is asked again by
    /// the expiry worker, so money taken without an answer is never kept for
    /// an order that was not paid.
    #[serde(rename = "resolve_after_ms", with = "seckill_common::settings::millis")]
    pub resolve_after: Duration,
}

/// `SECKILL_PAYMENT__MODE`: `succeed`, `decline` or `timeout`; anything
/// else fails at start, naming the variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMode {
    Succeed,
    Decline,
    Timeout,
}

impl Default for PaymentSettings {
    fn default() -> Self {
        Self {
            mode: PaymentMode::Succeed,
            timeout: Duration::from_millis(1_500),
            latency: Duration::from_millis(0),
            resolve_after: Duration::from_millis(60_000),
        }
    }
}

/// The worker that expires unpaid orders (README, "Expiry").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ExpirySettings {
    /// How often each replica looks for orders past their payment window.
    #[serde(rename = "interval_ms", with = "seckill_common::settings::millis")]
    pub interval: Duration,
    /// Orders expired per transaction.
    pub batch: u32,
}

impl Default for ExpirySettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(1_000),
            batch: 500,
        }
    }
}

/// The relay that publishes lifecycle events written to the outbox table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct OutboxSettings {
    /// Longest wait between two looks at the outbox (a local write wakes it at once).
    #[serde(rename = "interval_ms", with = "seckill_common::settings::millis")]
    pub interval: Duration,
    /// Rows published per transaction.
    pub batch: u32,
}

impl Default for OutboxSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            batch: 500,
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::with_port(8082),
            database: DatabaseSettings {
                url: Secret::from("postgres://postgres:postgres@127.0.0.1:5432/seckill_orders"),
                ..DatabaseSettings::default()
            },
            transport: Transport::default(),
            kafka: KafkaSettings::default(),
            streams: StreamsSettings::default(),
            redis: RedisSettings::default(),
            consumer_group: "order-service".into(),
            payment: PaymentSettings::default(),
            expiry: ExpirySettings::default(),
            outbox: OutboxSettings::default(),
            internal_token: Secret::from(""),
        }
    }
}

impl Settings {
    pub fn load() -> Result<Self, SettingsError> {
        let s: Self = settings::load()?;
        s.validate()?;
        Ok(s)
    }

    /// What serving needs besides valid settings (not `migrate`).
    pub fn check_secrets(&self) -> Result<(), SettingsError> {
        settings::require_secret("internal_token", &self.internal_token)
    }

    /// The transport, as `seckill_common::service::Core` takes it.
    pub fn bus(&self) -> Bus<'_> {
        Bus {
            transport: self.transport,
            kafka: &self.kafka,
            streams: &self.streams,
            redis: &self.redis,
        }
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        self.kafka.validate()?;
        self.bus().validate()?;
        self.database.validate()?;
        if self.consumer_group.trim().is_empty() {
            return Err(settings::invalid("consumer_group is empty"));
        }
        if self.payment.timeout.is_zero() {
            return Err(settings::invalid("payment.timeout_ms must be positive"));
        }
        if self.payment.resolve_after <= self.payment.timeout {
            return Err(settings::invalid(
                "payment.resolve_after_ms must exceed payment.timeout_ms",
            ));
        }
        if self.expiry.interval.is_zero() || self.expiry.batch == 0 {
            return Err(settings::invalid(
                "expiry.interval_ms and expiry.batch must be positive",
            ));
        }
        if self.outbox.interval.is_zero() || self.outbox.batch == 0 {
            return Err(settings::invalid(
                "outbox.interval_ms and outbox.batch must be positive",
            ));
        }
        Ok(())
    }
}

/// Every environment variable this service reads (besides `SECKILL_CONFIG`
/// and the OpenTelemetry ones), derived from the defaults so it cannot drift.
pub fn env_var_names() -> Vec<String> {
    settings::env_var_names(&Settings::default())
}
