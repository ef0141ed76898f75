//! Deliveries from a Kafka consumer group. An offset is stored only once its
//! batch was handled ([`KafkaSource::ack`]); librdkafka's periodic commit
//! then commits only what was stored.
use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::time::Instant;

use super::delivery::{Delivery, Position};
use crate::kafka::{self, EventConsumer};
use crate::retry::Backoff;
use crate::settings::KafkaSettings;
use crate::shutdown::Shutdown;

pub struct KafkaSource {
    consumer: EventConsumer,
    receive_errors: u32,
}

impl KafkaSource {
    /// Joins `group` on `topic`.
    pub fn subscribe(
        settings: &KafkaSettings,
        group: &str,
        topic: &str,
    ) -> Result<Self, KafkaError> {
        let consumer = kafka::consumer(settings, group)?;
        consumer.subscribe(&[topic])?;
        Ok(Self {
            consumer,
            receive_errors: 0,
        })
    }

    /// The consumer, for its statistics (the lag gauge).
    pub fn consumer(&self) -> &EventConsumer {
        &self.consumer
    }

    /// Waits for a first message (returns `None` on shutdown), then takes
    /// what else arrives within `linger`, up to `max`.
    pub async fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
        shutdown: &Shutdown,
    ) -> Option<Vec<Delivery>> {
        let first = loop {
            let received = tokio::select! {
                _ = shutdown.wait() => return None,
                m = self.consumer.recv() => m.map(|m| delivery(&m)),
            };
            match received {
                Ok(m) => {
                    self.receive_errors = 0;
                    break m;
                }
                Err(error) => {
                    tracing::warn!(%error, "kafka receive failed; backing off");
                    tokio::time::sleep(Backoff::OUTAGE.delay(self.receive_errors)).await;
                    self.receive_errors = self.receive_errors.saturating_add(1);
                }
            }
        };
        let mut batch = vec![first];
        let deadline = Instant::now() + linger;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(m)) => batch.push(delivery(&m)),
                Ok(Err(error)) => {
                    tracing::warn!(%error, "kafka receive failed");
                    break;
                }
                Err(_) => break,
            }
        }
        Some(batch)
    }

    /// Stores the next offset of every partition in `done`.
    pub fn ack(&self, done: &[Delivery]) {
        let mut next: HashMap<(&str, i32), i64> = HashMap::new();
        for delivery in done {
            if let Position::Kafka { partition, offset } = &delivery.position {
                let e = next
                    .entry((delivery.topic.as_str(), *partition))
                    .or_insert(offset + 1);
                *e = (*e).max(offset + 1);
            }
        }
        let mut tpl = TopicPartitionList::new();
        for ((topic, partition), offset) in next {
            if let Err(error) = tpl.add_partition_offset(topic, partition, Offset::Offset(offset)) {
                tracing::error!(%error, "cannot build offset list");
            }
        }
        if let Err(error) = self.consumer.store_offsets(&tpl) {
            // Happens after a rebalance took the partition away: the new owner
            // will redeliver, and the handlers are idempotent.
            tracing::warn!(%error, "cannot store offsets");
        }
    }

    /// Commits synchronously and leaves the group.
    pub fn close(&self) {
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(%error, "final commit had nothing to commit or failed");
        }
        self.consumer.unsubscribe();
        tracing::info!("consumer committed and left its group");
    }
}

/// Copies what the loop needs out of librdkafka's buffer, once.
fn delivery(message: &BorrowedMessage<'_>) -> Delivery {
    let trace = message
        .headers()
        .map(|headers| {
            headers
                .iter()
                .filter(|h| h.key == "traceparent" || h.key == "tracestate")
                .filter_map(|h| {
                    let value = std::str::from_utf8(h.value?).ok()?;
                    Some((h.key.to_owned(), value.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default();
    Delivery {
        topic: message.topic().to_owned(),
        position: Position::Kafka {
            partition: message.partition(),
            offset: message.offset(),
        },
        key: message.key().map(<[u8]>::to_vec),
        payload: message.payload().map(<[u8]>::to_vec),
        trace,
        poison: None,
    }
}
