//! Sends events, on whichever transport the service runs.
use std::collections::HashMap;
use std::time::Duration;

use rdkafka::message::{Header, OwnedHeaders};

use super::delivery::Position;
use super::streams::{field, topic_stream, StreamsPublisher};
use crate::events::Envelope;
use crate::kafka::{EventProducer, ProduceError};

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Kafka(#[from] ProduceError),
    #[error("redis streams: {0}")]
    Redis(#[from] redis::RedisError),
}

/// A message that could not be processed, as it came, with the reason.
#[derive(Clone, Copy)]
pub struct DeadLetter<'a> {
    /// The logical topic it came from.
    pub topic: &'a str,
    pub position: &'a Position,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    pub reason: &'a str,
}

/// One per process, cheap to clone.
#[derive(Clone)]
pub enum Publisher {
    Kafka(EventProducer),
    Streams(StreamsPublisher),
}

impl Publisher {
    /// Sends `envelope` keyed by `key` and waits until the transport has it
    /// (the broker's acknowledgement, or Redis's reply). The current span's
    /// trace context travels with it.
    pub async fn send(
        &self,
        topic: &str,
        key: &str,
        envelope: &Envelope,
    ) -> Result<(), PublishError> {
        match self {
            Publisher::Kafka(p) => p.send(topic, key, envelope).await.map(drop)?,
            Publisher::Streams(p) => p.send(topic, key, envelope).await.map(drop)?,
        }
        Ok(())
    }

    /// Sends a dead letter to `dead_letter_topic`.
    pub async fn dead_letter(
        &self,
        dead_letter_topic: &str,
        letter: DeadLetter<'_>,
    ) -> Result<(), PublishError> {
        let position = letter.position.to_string();
        match self {
            Publisher::Kafka(p) => {
                let (partition, offset) = match letter.position {
                    Position::Kafka { partition, offset } => {
                        (partition.to_string(), offset.to_string())
                    }
                    Position::Stream { .. } => (String::new(), position.clone()),
                };
                let headers = OwnedHeaders::new()
                    .insert(Header {
                        key: "dlq.reason",
                        value: Some(letter.reason),
                    })
                    .insert(Header {
                        key: "dlq.source.topic",
                        value: Some(letter.topic),
                    })
                    .insert(Header {
                        key: "dlq.source.partition",
                        value: Some(&partition),
                    })
                    .insert(Header {
                        key: "dlq.source.offset",
                        value: Some(&offset),
                    });
                p.send_raw(dead_letter_topic, letter.key, letter.payload, headers)
                    .await
                    .map(drop)?;
            }
            Publisher::Streams(p) => {
                let mut fields: HashMap<&str, &[u8]> = HashMap::from([
                    (field::PAYLOAD, letter.payload),
                    (field::REASON, letter.reason.as_bytes()),
                    (field::SOURCE_TOPIC, letter.topic.as_bytes()),
                    (field::SOURCE_POSITION, position.as_bytes()),
                ]);
                if let Some(key) = letter.key {
                    fields.insert(field::KEY, key);
                }
                p.dead_letter(&topic_stream(dead_letter_topic), &fields)
                    .await
                    .map(drop)?;
            }
        }
        Ok(())
    }

    /// Waits for what is queued to be delivered (Kafka; Redis queues nothing).
    pub async fn flush(&self, timeout: Duration) {
        if let Publisher::Kafka(producer) = self {
            let producer = producer.clone();
            match tokio::task::spawn_blocking(move || producer.flush(timeout)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "producer flush incomplete"),
                Err(error) => tracing::error!(%error, "producer flush task failed"),
            }
        }
    }

    /// Whether the transport answers within `timeout`.
    pub async fn is_reachable(&self, timeout: Duration) -> bool {
        match self {
            // librdkafka's metadata call blocks its thread: keep it off the workers.
            Publisher::Kafka(producer) => {
                let producer = producer.clone();
                let check = tokio::task::spawn_blocking(move || producer.is_reachable(timeout));
                matches!(
                    tokio::time::timeout(timeout + Duration::from_millis(250), check).await,
                    Ok(Ok(true))
                )
            }
            Publisher::Streams(p) => p.is_reachable(timeout).await,
        }
    }

    /// The readiness check's name for the transport.
    pub fn name(&self) -> &'static str {
        match self {
            Publisher::Kafka(_) => "kafka",
            Publisher::Streams(_) => "redis_streams",
        }
    }
}
