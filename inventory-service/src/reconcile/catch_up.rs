//! "Has the reservation consumer applied everything produced until now?"
//!
//! Asked before a sale that Redis lost is warmed again: orders that the lost
//! Redis accepted may still sit in `order-requested`, and PostgreSQL counts
//! them only once they are applied. The answer compares, per partition, the
//! group's committed offset with the high watermark read *before* it: when
//! every committed offset has reached that watermark, every message produced
//! before the check is applied, whatever arrives meanwhile.
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use seckill_common::settings::KafkaSettings;

pub struct CatchUp {
    /// Never subscribes: it only reads the group's committed offsets, so it
    /// never joins the group or takes a partition from the real consumer.
    consumer: BaseConsumer,
    topic: String,
    timeout: Duration,
}

impl CatchUp {
    pub fn new(settings: &KafkaSettings, group: &str, topic: &str) -> Result<Self, KafkaError> {
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
    pub fn caught_up(&self) -> Result<bool, KafkaError> {
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
