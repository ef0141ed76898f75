//! Reads a stack's dead-letter topic (or stream), so tests can see what was
//! given up on.
use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::Headers;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

use seckill_common::transport::Transport;

use crate::stack::Stack;

/// One dead-lettered message: its key, payload and `dlq.*` headers.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: HashMap<String, String>,
}

impl DeadLetter {
    pub fn reason(&self) -> &str {
        self.headers.get("dlq.reason").map_or("", String::as_str)
    }

    pub fn source_topic(&self) -> &str {
        self.headers
            .get("dlq.source.topic")
            .map_or("", String::as_str)
    }
}

fn topic(stack: &Stack) -> String {
    format!("{}dead-letter", stack.topic_prefix)
}

fn stream(stack: &Stack) -> String {
    seckill_common::transport::streams::topic_stream(&topic(stack))
}

/// How many messages the dead-letter topic holds (sum of its partitions'
/// high watermarks; nothing is ever deleted from it in a test).
pub fn count(stack: &Stack) -> i64 {
    if stack.transport == Transport::RedisStreams {
        let mut con = redis::Client::open(stack.redis_url.as_str())
            .and_then(|c| c.get_connection())
            .expect("redis reachable");
        return redis::cmd("XLEN")
            .arg(stream(stack))
            .query(&mut con)
            .expect("xlen");
    }
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("group.id", format!("t-dlq-count-{}", uuid::Uuid::new_v4()))
        .create()
        .expect("consumer");
    let topic = topic(stack);
    let metadata = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions())
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
                .expect("watermarks");
            high - low
        })
        .sum()
}

/// Waits until the dead-letter topic holds at least `at_least` messages (30 s
/// at most), then reads all of them from the start.
pub async fn read(stack: &Stack, at_least: i64) -> Vec<DeadLetter> {
    let want = crate::wait_until(
        &format!("{at_least} dead letters"),
        Duration::from_secs(30),
        || async { Some(count(stack)).filter(|n| *n >= at_least) },
    )
    .await;
    if stack.transport == Transport::RedisStreams {
        let bus = crate::bus::Bus::of(stack).await;
        let header = |name: &str| match name {
            "reason" => Some("dlq.reason"),
            "source_topic" => Some("dlq.source.topic"),
            "source_position" => Some("dlq.source.offset"),
            _ => None,
        };
        return bus
            .stream_entries(&stream(stack))
            .await
            .into_iter()
            .map(|mut fields| DeadLetter {
                key: fields.remove("key"),
                payload: fields.remove("payload").unwrap_or_default(),
                headers: fields
                    .into_iter()
                    .filter_map(|(k, v)| {
                        let name = header(&k)?;
                        Some((name.to_owned(), String::from_utf8_lossy(&v).into_owned()))
                    })
                    .collect(),
            })
            .collect();
    }
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &stack.brokers)
        .set("group.id", format!("t-dlq-read-{}", uuid::Uuid::new_v4()))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let topic = topic(stack);
    let metadata = consumer
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .expect("metadata");
    let mut assignment = TopicPartitionList::new();
    for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
        assignment
            .add_partition_offset(&topic, p.id(), Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&assignment).expect("assign");
    let mut out = Vec::new();
    while (out.len() as i64) < want {
        let message = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .expect("dead letters arrive in time")
            .expect("dead letter");
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let value = String::from_utf8_lossy(h.value.unwrap_or_default());
                        (h.key.to_owned(), value.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(DeadLetter {
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().unwrap_or_default().to_vec(),
            headers,
        });
    }
    out
}
