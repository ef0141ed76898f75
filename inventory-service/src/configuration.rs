//! inventory-service's typed settings: defaults, then `SECKILL_CONFIG` file, then
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
    /// Used to warm sales and to return reservations the database rejected.
    pub redis: RedisSettings,
    /// `kafka` (the default) or `redis-streams` (`SECKILL_TRANSPORT`).
    pub transport: Transport,
    /// Topic names, batching and attempts (both transports); the broker
    /// (Kafka only).
    pub kafka: KafkaSettings,
    /// The Redis Streams mode's knobs.
    pub streams: StreamsSettings,
    /// Consumer group id; replicas share it and split the partitions.
    pub consumer_group: String,
    /// Group of the second consumer, which reads `order-events` and returns
    /// the stock of cancelled and expired orders. Its own group, so it never
    /// holds back (or is held back by) the reservations.
    pub compensation_group: String,
    pub reconcile: ReconcileSettings,
    pub sweep: SweepSettings,
    /// The secret the gateway presents on `/internal/...` (at least 16
    /// bytes; no default: see `seckill_common::internal_auth`).
    pub internal_token: Secret,
}

/// The saga sweeper (`crate::sweep`): reservations whose order never appeared.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct SweepSettings {
    /// How often to look.
    #[serde(rename = "interval_ms", with = "seckill_common::settings::millis")]
    pub interval: Duration,
    /// A reservation unconfirmed for this long is announced again: far
    /// longer than order-service takes to apply a `StockReserved`.
    #[serde(rename = "after_ms", with = "seckill_common::settings::millis")]
    pub after: Duration,
    /// Announcements without a confirmation before its units are given back.
    pub max_attempts: u32,
    /// Reservations per round.
    pub batch: u32,
    /// order-service's consumer group: abandoning waits until it has seen
    /// every announcement.
    pub order_service_group: String,
}

impl Default for SweepSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(30_000),
            after: Duration::from_millis(120_000),
            max_attempts: 10,
            batch: 500,
            order_service_group: "order-service".into(),
        }
    }
}

/// The job that compares Redis with PostgreSQL and repairs drift (README,
/// "Reconciliation").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ReconcileSettings {
    /// Full comparison of every unfinished sale, this often.
    #[serde(rename = "interval_ms", with = "seckill_common::settings::millis")]
    pub interval: Duration,
    /// How long a Redis buyer without a reservation must have been seen
    /// (by this service's clock) before it may count as orphaned, and then
    /// only once the reservation consumer has caught up (`reconcile::plan`).
    /// At least `gateway_produce_window_ms`; consumer lag does not matter.
    #[serde(rename = "grace_ms", with = "seckill_common::settings::millis")]
    pub grace: Duration,
    /// The longest a gateway may still be producing an order after its
    /// purchase script ran: the gateways' `kafka.produce_timeout_ms` plus
    /// their `unknown_outcome_resolve_ms`. The re-warm delay and the grace
    /// period must cover it.
    #[serde(
        rename = "gateway_produce_window_ms",
        with = "seckill_common::settings::millis"
    )]
    pub gateway_produce_window: Duration,
    /// How often to look for sales whose Redis hash is missing (Redis lost it).
    #[serde(rename = "rewarm_check_ms", with = "seckill_common::settings::millis")]
    pub rewarm_check: Duration,
    /// Sales that ended less than this long ago are still reconciled (not
    /// re-warmed): an orphan's unit and order id are settled after the end.
    #[serde(rename = "after_end_ms", with = "seckill_common::settings::millis")]
    pub after_end: Duration,
    /// A missing sale is re-warmed no sooner than this after it was found
    /// missing, and only once the reservation consumer has caught up: at
    /// least `gateway_produce_window_ms`, so every order the lost Redis
    /// accepted has been produced, and is in PostgreSQL by then.
    #[serde(rename = "rewarm_delay_ms", with = "seckill_common::settings::millis")]
    pub rewarm_delay: Duration,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(60_000),
            grace: Duration::from_millis(60_000),
            gateway_produce_window: Duration::from_millis(13_000),
            rewarm_check: Duration::from_millis(1_000),
            after_end: Duration::from_millis(3_600_000),
            rewarm_delay: Duration::from_millis(15_000),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::with_port(8081),
            database: DatabaseSettings {
                url: Secret::from("postgres://postgres:postgres@127.0.0.1:5432/seckill_inventory"),
                ..DatabaseSettings::default()
            },
            redis: RedisSettings::default(),
            transport: Transport::default(),
            kafka: KafkaSettings::default(),
            streams: StreamsSettings::default(),
            consumer_group: "inventory-service".into(),
            compensation_group: "inventory-service-compensation".into(),
            reconcile: ReconcileSettings::default(),
            sweep: SweepSettings::default(),
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
        if self.consumer_group.trim().is_empty() || self.compensation_group.trim().is_empty() {
            return Err(settings::invalid(
                "consumer_group and compensation_group must not be empty",
            ));
        }
        if self.consumer_group == self.compensation_group {
            return Err(settings::invalid(
                "compensation_group must differ from consumer_group",
            ));
        }
        let r = &self.reconcile;
        if r.interval.is_zero() || r.rewarm_check.is_zero() {
            return Err(settings::invalid(
                "reconcile.interval and reconcile.rewarm_check must be positive",
            ));
        }
        let w = &self.sweep;
        if w.interval.is_zero() || w.after.is_zero() || w.max_attempts == 0 || w.batch == 0 {
            return Err(settings::invalid(
                "sweep.interval, after_ms, max_attempts and batch must be positive",
            ));
        }
        if r.rewarm_delay < r.gateway_produce_window || r.grace < r.gateway_produce_window {
            return Err(settings::invalid(
                "reconcile.rewarm_delay and reconcile.grace must be at least \
                 reconcile.gateway_produce_window (the gateways' produce timeout plus \
                 their unknown_outcome_resolve_ms)",
            ));
        }
        Ok(())
    }
}

/// Every environment variable this service reads, for checking deployment
/// manifests against the code.
pub fn env_var_names() -> Vec<String> {
    settings::env_var_names(&Settings::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The re-warm delay and the orphan grace period must cover the
    /// gateways' real produce window (produce timeout plus the re-produce
    /// of unknown outcomes), not this service's own produce timeout.
    #[test]
    fn the_rewarm_delay_and_grace_cover_the_gateways_produce_window() {
        assert!(Settings::default().validate().is_ok());
        let mut s = Settings::default();
        s.reconcile.gateway_produce_window = Duration::from_millis(20_000);
        assert!(s.validate().is_err(), "15 s delay < 20 s window");
        s.reconcile.rewarm_delay = Duration::from_millis(20_000);
        assert!(s.validate().is_ok());
        s.reconcile.grace = Duration::from_millis(19_999);
        assert!(s.validate().is_err(), "grace < window");
    }
}
