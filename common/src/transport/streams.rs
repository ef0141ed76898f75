//! Redis Streams: the layout, and the publisher.
//!
//! Layout, and why:
//! * `OrderRequested`: one stream per sale, `seckill:{sale}:orders`
//!   ([`order_stream`]), written by the purchase script itself. It must be
//!   in the sale's hash slot for the script to touch it on Redis Cluster.
//!   inventory-service reads every unfinished sale's stream (it knows the
//!   sales: [`StreamNames`]).
//! * Every other topic: one stream, `stream:{<topic>}` ([`topic_stream`]),
//!   its own slot, so topics spread over a cluster's shards.
//!
//! A consumer group shares a stream's entries among all its consumers
//! (Redis does not pin an entry range to one consumer as Kafka pins a
//! partition), so one hot sale's stream is spread over every instance.
//! Order across consumers is not kept, and need not be: each order has one
//! `OrderRequested` and one `StockReserved`/`StockRejected`, and the
//! handlers of the later events are conditional updates of rows whose state
//! machines order-service alone decides (`OrderCreated` confirms,
//! `OrderCancelled` releases: either order gives the same rows).
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::redis_conn::Conn;
use tracing::Instrument;

use crate::domain::SaleId;
use crate::events::Envelope;
use crate::kafka::trace_fields;
use crate::redis_conn;
use crate::stock::SaleKeys;

/// Field names of an entry, written by [`StreamsPublisher`] and by the
/// purchase script alike.
pub mod field {
    pub const KEY: &str = "key";
    pub const TYPE: &str = "type";
    pub const PAYLOAD: &str = "payload";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
    /// Dead letters only: why, and where the entry was.
    pub const REASON: &str = "reason";
    pub const SOURCE_TOPIC: &str = "source_topic";
    pub const SOURCE_POSITION: &str = "source_position";
}

/// The stream of a topic other than `OrderRequested`.
pub fn topic_stream(topic: &str) -> String {
    format!("stream:{{{topic}}}")
}

/// The stream the purchase script appends a sale's orders to.
pub fn order_stream(sale: &SaleId) -> String {
    SaleKeys::new(sale).orders
}

/// An entry id `ms-seq` as a pair that orders like the ids do.
pub fn entry_id(id: &str) -> (u64, u64) {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
}

/// Which streams a consumer reads, asked again every
/// `streams.discover_interval_ms`: a fixed one, or a sale's that appears.
pub trait StreamNames: Send + Sync {
    fn names(&self) -> Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send + '_>>;
}

/// Always the same streams.
pub struct Fixed(pub Vec<String>);

impl StreamNames for Fixed {
    fn names(&self) -> Pin<Box<dyn Future<Output = Result<Vec<String>, String>> + Send + '_>> {
        Box::pin(std::future::ready(Ok(self.0.clone())))
    }
}

/// The span of one append to a stream, a child of the current span: its
/// context is what the entry carries (the consumers' spans continue it).
pub fn publish_span(topic: &str, key: &str, envelope: &Envelope) -> tracing::Span {
    crate::sampling::child(&tracing::Span::current(), || {
        tracing::info_span!(
            "streams.publish",
            otel.name = %crate::kafka::SpanName(topic, "publish"),
            otel.kind = "producer",
            messaging.system = "redis",
            messaging.operation = "publish",
            messaging.destination.name = %topic,
            messaging.redis.message.key = %key,
            messaging.message.id = %envelope.event_id,
            event.type = envelope.event.type_name(),
            otel.status_code = tracing::field::Empty,
        )
    })
}

#[derive(Clone)]
pub struct StreamsPublisher {
    redis: Conn,
    timeout: Duration,
    dead_letter_max_len: u64,
}

impl StreamsPublisher {
    pub fn new(redis: Conn, timeout: Duration, dead_letter_max_len: u64) -> Self {
        Self {
            redis,
            timeout,
            dead_letter_max_len,
        }
    }

    /// `XADD`s `envelope` with the current span's trace context. Bounded by
    /// the Redis response timeout: Redis answers or the call failed.
    pub async fn send(
        &self,
        topic: &str,
        key: &str,
        envelope: &Envelope,
    ) -> redis::RedisResult<String> {
        let stream = topic_stream(topic);
        let span = publish_span(topic, key, envelope);
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&stream)
            .arg("*")
            .arg(field::KEY)
            .arg(key)
            .arg(field::TYPE)
            .arg(envelope.event.type_name())
            .arg(field::PAYLOAD)
            .arg(envelope.to_json());
        for (name, value) in trace_fields(&span) {
            cmd.arg(name).arg(value);
        }
        let mut redis = self.redis.clone();
        let added = redis_conn::within(self.timeout, cmd.query_async::<String>(&mut redis))
            .instrument(span.clone())
            .await;
        if let Err(error) = &added {
            span.record("otel.status_code", "ERROR");
            tracing::warn!(parent: &span, %error, "publish failed");
        }
        added
    }

    /// Appends a dead letter, the original payload untouched.
    pub async fn dead_letter(
        &self,
        stream: &str,
        fields: &HashMap<&str, &[u8]>,
    ) -> redis::RedisResult<String> {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.dead_letter_max_len)
            .arg("*");
        for (name, value) in fields {
            cmd.arg(*name).arg(*value);
        }
        let mut redis = self.redis.clone();
        redis_conn::within(self.timeout, cmd.query_async(&mut redis)).await
    }

    pub async fn is_reachable(&self, timeout: Duration) -> bool {
        redis_conn::is_reachable(&self.redis, timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::entry_id;

    #[test]
    fn ids_order_by_time_then_sequence() {
        assert!(entry_id("1700000000000-5") < entry_id("1700000000001-0"));
        assert!(entry_id("1700000000000-5") > entry_id("1700000000000-4"));
        assert_eq!(entry_id("0-0"), (0, 0));
    }
}
