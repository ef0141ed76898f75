//! order-service's typed settings: defaults, then `SECKILL_CONFIG` file, then
//! `SECKILL_*` environment variables; validated before anything starts.
use serde::{Deserialize, Serialize};

use seckill_common::settings::{
    self, DatabaseSettings, HttpSettings, KafkaSettings, Secret, SettingsError,
};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Settings {
    pub http: HttpSettings,
    /// This service's own database: it owns its tables and its migrations.
    pub database: DatabaseSettings,
    pub kafka: KafkaSettings,
    /// Consumer group id; replicas share it and split the partitions.
    pub consumer_group: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::with_port(8082),
            database: DatabaseSettings {
                url: Secret::from("postgres://postgres:postgres@127.0.0.1:5432/seckill_orders"),
                ..DatabaseSettings::default()
            },
            kafka: KafkaSettings::default(),
            consumer_group: "order-service".into(),
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

/// Every environment variable this service reads (besides `SECKILL_CONFIG`
/// and the OpenTelemetry ones), derived from the defaults so it cannot drift.
pub fn env_var_names() -> Vec<String> {
    settings::env_var_names(&Settings::default())
}
