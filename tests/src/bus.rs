//! The test's own access to a stack's transport, whichever it runs on:
//! publishing events as the services would (duplicates, poison), and
//! reading what a topic holds.
use std::collections::HashMap;
use std::time::Duration;

use redis::streams::StreamRangeReply;
use seckill_common::domain::SaleId;
use seckill_common::events::Envelope;
use seckill_common::kafka::EventProducer;
use seckill_common::settings::{KafkaSettings, RedisSettings, Secret, Topics};
use seckill_common::transport::streams::{field, order_stream, topic_stream};
use seckill_common::transport::{Publisher, StreamsPublisher, Transport};

use crate::stack::Stack;

pub struct Bus {
    pub transport: Transport,
    pub topics: Topics,
    publisher: Publisher,
    redis_url: String,
}

impl Bus {
    pub async fn of(stack: &Stack) -> Self {
        let kafka = KafkaSettings {
            brokers: stack.brokers.clone(),
            topic_prefix: stack.topic_prefix.clone(),
            ..Default::default()
        };
        let publisher = match stack.transport {
            Transport::Kafka => Publisher::Kafka(EventProducer::new(&kafka).expect("producer")),
            Transport::RedisStreams => {
                let settings = RedisSettings {
                    url: Secret::from(stack.redis_url.as_str()),
                    response_timeout: Duration::from_secs(5),
                    ..Default::default()
                };
                let redis = seckill_common::redis_conn::connect(&settings)
                    .await
                    .expect("redis");
                Publisher::Streams(StreamsPublisher::new(redis, Duration::from_secs(5), 1_000))
            }
        };
        Self {
            transport: stack.transport,
            topics: kafka.topics(),
            publisher,
            redis_url: stack.redis_url.clone(),
        }
    }

    /// Publishes an event to `topic` as a service would.
    pub async fn publish(&self, topic: &str, key: &str, envelope: &Envelope) {
        self.publisher
            .send(topic, key, envelope)
            .await
            .unwrap_or_else(|e| panic!("publish to {topic}: {e}"));
    }

    /// Publishes an `OrderRequested` of `sale` where the gateway would.
    pub async fn publish_order_requested(&self, sale: &str, key: &str, envelope: &Envelope) {
        self.publish_raw_order(sale, key, &envelope.to_json()).await;
    }

    /// Puts raw bytes where `OrderRequested` events of `sale` go (poison).
    pub async fn publish_raw_order(&self, sale: &str, key: &str, payload: &[u8]) {
        match self.transport {
            Transport::Kafka => {
                let topic = self.topics.order_requested.clone();
                self.publish_raw(&topic, key, payload).await
            }
            Transport::RedisStreams => {
                let sale = SaleId::parse(sale).expect("sale id");
                self.xadd(&order_stream(&sale), key, payload).await
            }
        }
    }

    /// Puts raw bytes on `topic` (poison), keyed by `key`.
    pub async fn publish_raw(&self, topic: &str, key: &str, payload: &[u8]) {
        match &self.publisher {
            Publisher::Kafka(producer) => {
                producer
                    .send_raw(
                        topic,
                        Some(key.as_bytes()),
                        payload,
                        rdkafka::message::OwnedHeaders::new(),
                    )
                    .await
                    .expect("produce");
            }
            Publisher::Streams(_) => self.xadd(&topic_stream(topic), key, payload).await,
        }
    }

    async fn xadd(&self, stream: &str, key: &str, payload: &[u8]) {
        let mut con = self.redis().await;
        redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg(field::KEY)
            .arg(key)
            .arg(field::PAYLOAD)
            .arg(payload)
            .query_async::<String>(&mut con)
            .await
            .expect("xadd");
    }

    async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .expect("redis url")
            .get_multiplexed_async_connection()
            .await
            .expect("redis reachable")
    }

    /// Every entry a topic's stream holds now, oldest first, as field maps
    /// (Streams mode only).
    pub async fn stream_entries(&self, stream: &str) -> Vec<HashMap<String, Vec<u8>>> {
        let mut con = self.redis().await;
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(stream)
            .arg("-")
            .arg("+")
            .query_async(&mut con)
            .await
            .expect("xrange");
        reply
            .ids
            .into_iter()
            .map(|entry| {
                entry
                    .map
                    .into_iter()
                    .filter_map(|(k, v)| match v {
                        redis::Value::BulkString(b) => Some((k, b)),
                        _ => None,
                    })
                    .collect()
            })
            .collect()
    }

    /// Streams mode: joins a group of the test's own on `topic`'s stream,
    /// from its start, that never acknowledges: nothing written to it from
    /// now on is trimmed, so [`Bus::stream_entries`] sees the whole history.
    /// (Kafka keeps it anyway.)
    pub async fn keep_history(&self, topic: &str) {
        if self.transport != Transport::RedisStreams {
            return;
        }
        let mut con = self.redis().await;
        redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(topic_stream(topic))
            .arg("test-history")
            .arg("0")
            .arg("MKSTREAM")
            .query_async::<()>(&mut con)
            .await
            .expect("history group");
    }

    /// The stream of a topic (Streams mode).
    pub fn stream_of(&self, topic: &str) -> String {
        topic_stream(topic)
    }
}
