//! Kafka plumbing shared by every service: the producer (idempotent, acks=all,
//! traced), consumer construction (manual offset store), topic creation, and
//! W3C trace context in message headers.
use std::time::Duration;

use opentelemetry::propagation::Injector;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::consumer::{ConsumerContext, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::statistics::Statistics;
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use tracing::Instrument;

use crate::events::Envelope;
use crate::settings::KafkaSettings;

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("kafka produce failed: {0}")]
    Kafka(#[from] KafkaError),
    #[error("kafka produce timed out after {0:?}")]
    Timeout(Duration),
}

/// Where the broker stored a message.
#[derive(Debug, Clone, Copy)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// One per process: librdkafka batches and multiplexes internally, so sharing
/// a single producer is both the fastest and the cheapest choice.
#[derive(Clone)]
pub struct EventProducer {
    inner: FutureProducer,
    timeout: Duration,
    /// The topic whose metadata the readiness probe asks for (see
    /// [`Self::is_reachable`]).
    probe_topic: String,
}

impl EventProducer {
    pub fn new(settings: &KafkaSettings) -> Result<Self, KafkaError> {
        let timeout = settings.produce_timeout;
        let inner: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            // Exactly one copy per produce, in order, even across librdkafka's retries.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", settings.compression.as_str())
            .set("linger.ms", millis(settings.linger))
            // librdkafka retries with backoff inside this bound; then the send fails.
            .set("message.timeout.ms", millis(settings.produce_timeout))
            .set(
                "request.timeout.ms",
                millis(settings.produce_timeout.min(Duration::from_secs(30))),
            )
            // librdkafka leaves Nagle's algorithm on: a small produce request
            // would then wait for the previous one's (possibly delayed) ACK.
            .set("socket.nagle.disable", "true")
            .set("retry.backoff.ms", "50")
            .set("retry.backoff.max.ms", "500")
            .set("socket.timeout.ms", "3000")
            .create()?;
        Ok(Self {
            inner,
            timeout,
            probe_topic: settings.topics().dead_letter,
        })
    }

    /// Produces `envelope` keyed by `key` and waits for the broker's acknowledgement.
    /// The current span's context is injected as `traceparent`/`tracestate`.
    pub async fn send(
        &self,
        topic: &str,
        key: &str,
        envelope: &Envelope,
    ) -> Result<Delivered, ProduceError> {
        let span = crate::sampling::child(&tracing::Span::current(), || {
            tracing::info_span!(
                "kafka.produce",
                otel.name = %SpanName(topic, "publish"),
                otel.kind = "producer",
                messaging.system = "kafka",
                messaging.operation = "publish",
                messaging.destination.name = %topic,
                messaging.kafka.message.key = %key,
                messaging.message.id = %envelope.event_id,
                messaging.kafka.destination.partition = tracing::field::Empty,
                messaging.kafka.message.offset = tracing::field::Empty,
                event.type = envelope.event.type_name(),
                otel.status_code = tracing::field::Empty,
            )
        });
        let headers = inject_trace_context(&span, OwnedHeaders::new()).insert(Header {
            key: "event_type",
            value: Some(envelope.event.type_name()),
        });
        let payload = envelope.to_json();
        let deadline = self.timeout + Duration::from_millis(500);
        let result = async {
            let record = FutureRecord::to(topic)
                .key(key)
                .payload(&payload)
                .headers(headers);
            let fut = self.inner.send(record, Timeout::After(self.timeout));
            match tokio::time::timeout(deadline, fut).await {
                Err(_) => Err(ProduceError::Timeout(self.timeout)),
                Ok(Err((e, _))) => Err(ProduceError::Kafka(e)),
                Ok(Ok(d)) => Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                }),
            }
        }
        .instrument(span.clone())
        .await;
        match &result {
            Ok(d) => {
                span.record("messaging.kafka.destination.partition", d.partition);
                span.record("messaging.kafka.message.offset", d.offset);
            }
            Err(error) => {
                span.record("otel.status_code", "ERROR");
                tracing::warn!(parent: &span, %error, "produce failed");
            }
        }
        result
    }

    /// Produces raw bytes (dead letters keep the original payload untouched).
    pub async fn send_raw(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        payload: &[u8],
        headers: OwnedHeaders,
    ) -> Result<Delivered, ProduceError> {
        let mut record: FutureRecord<'_, [u8], [u8]> =
            FutureRecord::to(topic).payload(payload).headers(headers);
        if let Some(key) = key {
            record = record.key(key);
        }
        let deadline = self.timeout + Duration::from_millis(500);
        match tokio::time::timeout(
            deadline,
            self.inner.send(record, Timeout::After(self.timeout)),
        )
        .await
        {
            Err(_) => Err(ProduceError::Timeout(self.timeout)),
            Ok(Err((e, _))) => Err(ProduceError::Kafka(e)),
            Ok(Ok(d)) => Ok(Delivered {
                partition: d.partition,
                offset: d.offset,
            }),
        }
    }

    /// Waits for every queued message to be acknowledged (called on shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.inner.flush(Timeout::After(timeout))
    }

    /// True when the broker answers a metadata request in time. The request
    /// names one topic: an all-topics request grows with the cluster (28 ms
    /// per thousand topics on an idle local broker), and every pod sends
    /// one per probe.
    pub fn is_reachable(&self, timeout: Duration) -> bool {
        self.inner
            .client()
            .fetch_metadata(Some(&self.probe_topic), Timeout::After(timeout))
            .is_ok()
    }
}

/// A duration as librdkafka's `*.ms` properties take it.
fn millis(d: Duration) -> String {
    d.as_millis().to_string()
}

/// How often librdkafka reports statistics (consumer lag among them).
const STATISTICS_INTERVAL_MS: &str = "5000";

/// The consumer every service runs (see [`consumer`]).
pub type EventConsumer = StreamConsumer<ConsumerStats>;

/// Where a consumer's periodic statistics go (the metrics' lag gauge). A
/// trait here, so that this module does not depend on the metrics.
pub trait StatsSink: Send + Sync {
    fn record(&self, statistics: &Statistics);
}

/// Receives librdkafka's periodic statistics, and hands them to the sink a
/// service set (`metrics::ConsumerMetrics::watch_lag`), if any.
#[derive(Default)]
pub struct ConsumerStats {
    sink: std::sync::OnceLock<Box<dyn StatsSink>>,
}

impl ConsumerStats {
    pub fn report_to(&self, sink: impl StatsSink + 'static) {
        if self.sink.set(Box::new(sink)).is_err() {
            tracing::debug!("this consumer's statistics already have a sink");
        }
    }
}

impl ClientContext for ConsumerStats {
    fn stats(&self, statistics: Statistics) {
        if let Some(sink) = self.sink.get() {
            sink.record(&statistics);
        }
    }
}

impl ConsumerContext for ConsumerStats {}

/// A consumer that never stores an offset by itself: the service stores each
/// offset only after the message's database transaction has committed, and
/// librdkafka's periodic commit then commits only what was stored.
pub fn consumer(settings: &KafkaSettings, group_id: &str) -> Result<EventConsumer, KafkaError> {
    ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("group.id", group_id)
        .set("socket.nagle.disable", "true")
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "500")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.min.bytes", settings.fetch_min_bytes.to_string())
        .set("fetch.wait.max.ms", settings.fetch_wait_max_ms.to_string())
        .set("session.timeout.ms", millis(settings.session_timeout))
        .set("socket.timeout.ms", "3000")
        .set("reconnect.backoff.ms", "50")
        .set("reconnect.backoff.max.ms", "2000")
        .set("statistics.interval.ms", STATISTICS_INTERVAL_MS)
        .create_with_context(ConsumerStats::default())
}

/// Creates the topics if they do not exist. Idempotent: run by every service
/// at start and by the `create-topics` subcommand (a Kubernetes Job).
pub async fn ensure_topics(settings: &KafkaSettings) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.brokers)
        .set("socket.timeout.ms", "3000")
        .create()?;
    let topics = settings.topics();
    let new: Vec<NewTopic<'_>> = topics
        .all()
        .into_iter()
        .map(|name| {
            NewTopic::new(
                name,
                settings.partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
        })
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(new.iter(), &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::AdminOp(code))
                    .inspect_err(|_| tracing::error!(%topic, ?code, "cannot create topic"))
            }
        }
    }
    Ok(())
}

/// A messaging span's name, `"{topic} {operation}"` as the conventions have
/// it, written only if a layer reads it: most spans belong to dropped
/// traces (`sampling`), and a `format!` would allocate for each of them.
pub struct SpanName<'a>(pub &'a str, pub &'static str);

impl std::fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

/// Writes the span's W3C trace context into Kafka headers.
pub fn inject_trace_context(span: &tracing::Span, headers: OwnedHeaders) -> OwnedHeaders {
    struct HeaderInjector(Option<OwnedHeaders>);
    impl Injector for HeaderInjector {
        fn set(&mut self, key: &str, value: String) {
            if let Some(h) = self.0.take() {
                self.0 = Some(h.insert(Header {
                    key,
                    value: Some(&value),
                }));
            }
        }
    }
    let mut injector = HeaderInjector(Some(headers));
    let cx = crate::sampling::context(span);
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut injector));
    injector.0.unwrap_or_default()
}

/// The span's W3C trace context as fields (`traceparent`, `tracestate`):
/// what a Redis Streams entry carries beside its payload.
pub fn trace_fields(span: &tracing::Span) -> std::collections::HashMap<String, String> {
    let mut fields = std::collections::HashMap::new();
    let cx = crate::sampling::context(span);
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut fields));
    fields
}

/// The context such fields name (an empty context if they hold none).
pub fn context_from_fields(
    fields: &std::collections::HashMap<String, String>,
) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(fields))
}

/// The span's W3C `traceparent`, to store beside work that is published
/// later by another task (an outbox row), so that the later produce can
/// continue the trace with [`context_from_traceparent`]. `None` when the
/// span has no valid context (telemetry not initialised).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    trace_fields(span).remove("traceparent")
}

/// The context a stored `traceparent` names: the parent of the span the
/// deferred produce runs in (`sampling::edge_span`).
pub fn context_from_traceparent(traceparent: &str) -> opentelemetry::Context {
    context_from_fields(&std::collections::HashMap::from([(
        "traceparent".to_owned(),
        traceparent.to_owned(),
    )]))
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    #[test]
    fn a_stored_traceparent_continues_the_trace() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let stored = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = context_from_traceparent(stored);
        let parent = cx.span().span_context().clone();
        assert_eq!(
            parent.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(parent.is_sampled());

        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let child = tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("deferred");
            crate::sampling::set_parent(&span, cx);
            traceparent_of(&span)
        })
        .expect("a traceparent");
        assert!(
            child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{child}"
        );
        assert!(
            !child.contains("00f067aa0ba902b7"),
            "a new span id: {child}"
        );
    }
}
