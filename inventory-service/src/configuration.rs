//! inventory-service's typed settings: defaults, then `SECKILL_CONFIG` file, then
//! `SECKILL_*` environment variables; validated before anything starts.
use serde::{Deserialize, Serialize};

use seckill_common::settings::{
    self, DatabaseSettings, HttpSettings, KafkaSettings, RedisSettings, Secret, SettingsError,
};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Settings {
    pub http: HttpSettings,
    /// This service's own database: it owns its tables and its migrations.
    pub database: DatabaseSettings,
    /// Used to warm sales and to return reservations the database rejected.
    pub redis: RedisSettings,
    pub kafka: KafkaSettings,
    /// Consumer group id; replicas share it and split the partitions.
    pub consumer_group: String,
    /// Group of the second consumer, which reads `order-events` and returns
    /// the stock of cancelled and expired orders. Its own group, so it never
    /// holds back (or is held back by) the reservations.
    pub compensation_group: String,
    pub reconcile: ReconcileSettings,
}

/// The job that compares Redis with PostgreSQL and repairs drift (README,
/// "Reconciliation").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ReconcileSettings {
    /// Full comparison of every unfinished sale, this often.
    pub interval_ms: u64,
    /// How long a Redis buyer may go without a reservation in PostgreSQL
    /// before it counts as orphaned (its order id's UUIDv7 time is the clock):
    /// longer than any produce plus consumer lag seen in practice.
    pub grace_ms: u64,
    /// How often to look for sales whose Redis hash is missing (Redis lost it).
    pub rewarm_check_ms: u64,
    /// A missing sale is re-warmed no sooner than this after it was found
    /// missing, and only once the reservation consumer has caught up: longer
    /// than a produce may take, so every order accepted before the loss is in
    /// PostgreSQL by then.
    pub rewarm_delay_ms: u64,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            interval_ms: 60_000,
            grace_ms: 60_000,
            rewarm_check_ms: 1_000,
            rewarm_delay_ms: 5_000,
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
            kafka: KafkaSettings::default(),
            consumer_group: "inventory-service".into(),
            compensation_group: "inventory-service-compensation".into(),
            reconcile: ReconcileSettings::default(),
        }
    }
}

impl Settings {
    pub fn load() -> Result<Self, SettingsError> {
        let s: Self = settings::load()?;
        s.validate()?;
        Ok(s)
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        self.kafka.validate()?;
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
        if r.interval_ms == 0 || r.rewarm_check_ms == 0 {
            return Err(settings::invalid(
                "reconcile.interval_ms and reconcile.rewarm_check_ms must be positive",
            ));
        }
        if r.rewarm_delay_ms < self.kafka.produce_timeout_ms {
            return Err(settings::invalid(
                "reconcile.rewarm_delay_ms must be at least kafka.produce_timeout_ms",
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
