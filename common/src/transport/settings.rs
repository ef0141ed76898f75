//! `SECKILL_TRANSPORT` and the Redis Streams mode's settings.
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::settings::{invalid, KafkaSettings, RedisSettings, SettingsError};

/// `SECKILL_TRANSPORT`: `kafka` (the default) or `redis-streams`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    #[default]
    Kafka,
    RedisStreams,
}

/// The Streams mode's knobs (`SECKILL_STREAMS__*`); unused with Kafka.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct StreamsSettings {
    /// An entry pending this long on one consumer is taken over by another
    /// (`XAUTOCLAIM`): its consumer is presumed dead. Longer than any batch
    /// takes, or a slow consumer's work is done twice (harmless, wasted).
    #[serde(rename = "claim_idle_ms", with = "crate::settings::millis")]
    pub claim_idle: Duration,
    /// How often each consumer looks for such entries.
    #[serde(rename = "claim_interval_ms", with = "crate::settings::millis")]
    pub claim_interval: Duration,
    /// Deliveries after which an entry goes to the dead-letter stream rather
    /// than to a handler again (one that kills its consumer every time).
    pub max_deliveries: u32,
    /// Longest a read waits for new entries before the loop looks around.
    #[serde(rename = "block_ms", with = "crate::settings::millis")]
    pub block: Duration,
    /// How often acknowledged entries are trimmed and the backlog measured.
    #[serde(rename = "trim_interval_ms", with = "crate::settings::millis")]
    pub trim_interval: Duration,
    /// How often the list of streams is read again (a new sale's stream).
    #[serde(rename = "discover_interval_ms", with = "crate::settings::millis")]
    pub discover_interval: Duration,
    /// Entries the dead-letter stream keeps (nothing consumes it; an
    /// operator reads it).
    pub dead_letter_max_len: u64,
}

impl Default for StreamsSettings {
    fn default() -> Self {
        Self {
            claim_idle: Duration::from_millis(30_000),
            claim_interval: Duration::from_millis(5_000),
            max_deliveries: 5,
            block: Duration::from_millis(250),
            trim_interval: Duration::from_millis(5_000),
            discover_interval: Duration::from_millis(1_000),
            dead_letter_max_len: 100_000,
        }
    }
}

impl StreamsSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.max_deliveries == 0 {
            return Err(invalid("streams.max_deliveries must be positive"));
        }
        if self.block.is_zero() || self.block > Duration::from_secs(5) {
            return Err(invalid("streams.block_ms must be between 1 and 5000"));
        }
        if self.claim_idle < Duration::from_millis(100) {
            return Err(invalid("streams.claim_idle_ms must be at least 100"));
        }
        Ok(())
    }
}

/// What a service needs to reach its transport, gathered from its settings.
#[derive(Debug, Clone, Copy)]
pub struct Bus<'a> {
    pub transport: Transport,
    pub kafka: &'a KafkaSettings,
    pub streams: &'a StreamsSettings,
    /// Streams live in this Redis.
    pub redis: &'a RedisSettings,
}

impl Bus<'_> {
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.redis.validate()?;
        match self.transport {
            Transport::Kafka => self.kafka.validate(),
            // A consumer reads many streams in one XREADGROUP, and a
            // cluster refuses a command whose keys are in different slots.
            Transport::RedisStreams if !self.redis.cluster_nodes().is_empty() => Err(invalid(
                "transport redis-streams does not run on a Redis Cluster \
                 (redis.cluster_nodes is set): use transport kafka",
            )),
            Transport::RedisStreams => self.streams.validate(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bus<'a>(
        transport: Transport,
        kafka: &'a KafkaSettings,
        streams: &'a StreamsSettings,
        redis: &'a RedisSettings,
    ) -> Bus<'a> {
        Bus {
            transport,
            kafka,
            streams,
            redis,
        }
    }

    #[test]
    fn a_cluster_runs_kafka_and_refuses_streams() {
        let (kafka, streams) = (KafkaSettings::default(), StreamsSettings::default());
        let cluster = RedisSettings {
            cluster_nodes: "redis://10.0.0.1:6379, redis://10.0.0.2:6379".into(),
            ..RedisSettings::default()
        };
        assert_eq!(cluster.cluster_nodes().len(), 2);
        assert!(bus(Transport::Kafka, &kafka, &streams, &cluster)
            .validate()
            .is_ok());
        let refused = bus(Transport::RedisStreams, &kafka, &streams, &cluster).validate();
        assert!(format!("{refused:?}").contains("does not run on a Redis Cluster"));
        let single = RedisSettings::default();
        assert!(single.cluster_nodes().is_empty());
        assert!(bus(Transport::RedisStreams, &kafka, &streams, &single)
            .validate()
            .is_ok());
    }

    #[test]
    fn a_cluster_node_that_is_not_a_redis_url_is_refused_without_echoing_it() {
        let redis = RedisSettings {
            cluster_nodes: "redis://ok:6379,secret-password@host".into(),
            ..RedisSettings::default()
        };
        let error = format!("{:?}", redis.validate());
        assert!(error.contains("entry 2"), "{error}");
        assert!(!error.contains("secret-password"), "{error}");
    }
}
