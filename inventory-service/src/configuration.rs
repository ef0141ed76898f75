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
        if self.consumer_group.trim().is_empty() {
            return Err(settings::invalid("consumer_group is empty"));
        }
        Ok(())
    }
}

/// Every environment variable this service reads, for checking deployment
/// manifests against the code.
pub fn env_var_names() -> Vec<String> {
    settings::env_var_names(&Settings::default())
}
