//! "Has this group applied everything produced until now?"
//!
//! Asked before acting on the absence of an event: the re-warm of a sale
//! Redis lost (orders it accepted may still be in flight) and the saga sweep
//! (an order may still be on its way to order-service).
//!
//! * Kafka: per partition, the group's committed offset against the high
//!   watermark read *before* it: when every committed offset has reached
//!   that watermark, every message produced before the check is applied.
//! * Streams: on every stream, the group has read everything (`lag` 0) and
//!   acknowledged everything it read (nothing pending).
use std::sync::Arc;
use std::time::Duration;

use crate::redis_conn::Conn;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use redis::streams::{StreamInfoGroupsReply, StreamInfoStreamReply};

use super::streams::{entry_id, StreamNames};
use crate::redis_conn;
use crate::settings::KafkaSettings;

#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("cannot list the streams: {0}")]
    Names(String),
    #[error("the check's task failed: {0}")]
    Task(String),
}

#[derive(Clone)]
pub enum CatchUp {
    Kafka(Arc<KafkaCatchUp>),
    Streams {
        redis: Conn,
        group: String,
        names: Arc<dyn StreamNames>,
    },
}

impl CatchUp {
    pub fn kafka(settings: &KafkaSettings, group: &str, topic: &str) -> Result<Self, KafkaError> {
        Ok(Self::Kafka(Arc::new(KafkaCatchUp::new(
            settings, group, topic,
        )?)))
    }

    pub fn streams(redis: Conn, group: &str, names: Arc<dyn StreamNames>) -> Self {
        Self::Streams {
            redis,
            group: group.to_owned(),
            names,
        }
    }

    pub async fn caught_up(&self) -> Result<bool, CatchUpError> {
        match self {
            CatchUp::Kafka(check) => {
                let check = check.clone();
                tokio::task::spawn_blocking(move || check.caught_up())
                    .await
                    .map_err(|e| CatchUpError::Task(e.to_string()))?
                    .map_err(CatchUpError::from)
            }
            CatchUp::Streams {
                redis,
                group,
                names,
            } => {
                let mut redis = redis.clone();
                for key in names.names().await.map_err(CatchUpError::Names)? {
                    let mut info = redis::cmd("XINFO");
                    info.arg("GROUPS").arg(&key);
                    let groups = match redis_conn::within(
                        Duration::from_secs(3),
                        info.query_async::<StreamInfoGroupsReply>(&mut redis),
                    )
                    .await
                    {
                        Ok(groups) => groups,
                        // No stream at all: nothing was ever written to it.
                        Err(e) if e.to_string().contains("no such key") => continue,
                        Err(e) => return Err(e.into()),
                    };
                    let Some(ours) = groups.groups.iter().find(|g| &g.name == group) else {
                        return Ok(false); // Not joined yet: nothing is known.
                    };
                    if ours.pending > 0 {
                        return Ok(false);
                    }
                    let read_everything = match ours.lag {
                        Some(lag) => lag == 0,
                        // Redis cannot always count the lag (entries deleted
                        // in the middle): compare with the newest id instead.
                        None => {
                            let mut info = redis::cmd("XINFO");
                            info.arg("STREAM").arg(&key);
                            let stream: StreamInfoStreamReply = redis_conn::within(
                                Duration::from_secs(3),
                                info.query_async(&mut redis),
                            )
                            .await?;
                            entry_id(&ours.last_delivered_id) >= entry_id(&stream.last_generated_id)
                        }
                    };
                    if !read_everything {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        }
    }
}

pub struct KafkaCatchUp {
    /// Never subscribes: it only reads the group's committed offsets, so it
    /// never joins the group or takes a partition from the real consumer.
    consumer: BaseConsumer,
    topic: String,
    timeout: Duration,
}

impl KafkaCatchUp {
    fn new(settings: &KafkaSettings, group: &str, topic: &str) -> Result<Self, KafkaError> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("socket.timeout.ms", "3000")
            .create()?;
        Ok(Self {
            consumer,
            topic: topic.to_owned(),
            timeout: Duration::from_secs(3),
        })
    }

    /// Blocking (librdkafka calls): run it on a blocking thread.
    fn caught_up(&self) -> Result<bool, KafkaError> {
        let timeout = Timeout::After(self.timeout);
        let metadata = self.consumer.fetch_metadata(Some(&self.topic), timeout)?;
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .filter(|t| t.name() == self.topic)
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .collect();
        if partitions.is_empty() {
            return Ok(false); // The topic is not there yet: nothing can be known.
        }
        let mut watermarks = Vec::with_capacity(partitions.len());
        let mut list = TopicPartitionList::new();
        for &p in &partitions {
            watermarks.push((p, self.consumer.fetch_watermarks(&self.topic, p, timeout)?));
            list.add_partition(&self.topic, p);
        }
        let committed = self.consumer.committed_offsets(list, timeout)?;
        Ok(watermarks.into_iter().all(|(p, (low, high))| {
            match committed.find_partition(&self.topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(at)) => at >= high,
                // Nothing committed: caught up only if there is nothing to read.
                _ => low >= high,
            }
        }))
    }
}
