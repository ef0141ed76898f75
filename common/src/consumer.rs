//! The at-least-once batch loop that inventory-service and order-service
//! both run, on either transport ([`crate::transport::Source`]).
//!
//! Guarantees, in order of importance:
//! 1. A message is acknowledged (Kafka: its offset stored; Streams: `XACK`)
//!    only after its batch's database transaction has committed and its
//!    follow-up events were acknowledged. A crash at any
//!    point means redelivery, never loss; handlers are idempotent, so a
//!    redelivery changes nothing.
//! 2. An outage (database or broker down) is retried with capped backoff for
//!    as long as it lasts: the partition pauses, nothing is dead-lettered.
//! 3. A message that fails on its own (malformed, or rejected by the handler
//!    `max_attempts` times) goes to the dead-letter topic with its reason, and
//!    its partition carries on.
//! 4. On shutdown the current batch is finished and acknowledged, and the
//!    consumer leaves its group (Kafka commits synchronously first).
use std::future::Future;
use std::time::Duration;

use crate::events::Envelope;
use crate::kafka::{context_from_fields, SpanName};
use crate::retry::Backoff;
use crate::sampling;
use crate::settings::KafkaSettings;
use crate::shutdown::Shutdown;
use crate::transport::{DeadLetter, Delivery, Position, Publisher, Source};

/// Longest one handler call may take. A healthy batch takes milliseconds;
/// every call inside has its own timeout, so this only catches a hang.
const HANDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One decoded message, with the span its processing runs in: a child of the
/// producer's span, so one purchase stays one trace across services.
pub struct Incoming {
    /// The logical topic.
    pub topic: String,
    pub position: Position,
    pub envelope: Envelope,
    pub span: tracing::Span,
}

#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// A dependency is unavailable: retry the same batch until it is back.
    #[error("dependency unavailable: {0}")]
    Transient(String),
    /// Something about the messages themselves: retry each alone, then dead-letter it.
    #[error("{0}")]
    Permanent(String),
}

/// Database errors classify themselves: an outage is transient, anything
/// else is about the data (see [`crate::db::is_transient`]).
impl From<sea_orm::DbErr> for HandleError {
    fn from(error: sea_orm::DbErr) -> Self {
        if crate::db::is_transient(&error) {
            HandleError::Transient(error.to_string())
        } else {
            HandleError::Permanent(error.to_string())
        }
    }
}

/// What a service does with a batch. It must be idempotent per message, and
/// return `Ok` only once its effects are durable and its events acknowledged.
pub trait BatchHandler: Send + Sync {
    fn handle(&self, batch: &[Incoming]) -> impl Future<Output = Result<(), HandleError>> + Send;
}

/// Observes the loop, so each service can feed its own metrics.
pub trait ConsumerObserver: Send + Sync {
    fn processed(&self, _topic: &str, _count: usize) {}
    fn retried(&self, _topic: &str) {}
    fn dead_lettered(&self, _topic: &str) {}
}

impl ConsumerObserver for () {}

pub struct BatchConsumer<H, O = ()> {
    pub source: Source,
    pub handler: H,
    /// Dead letters go out through it.
    pub producer: Publisher,
    /// Batch size and linger, attempts, and the dead-letter topic's name
    /// (used by both transports).
    pub settings: KafkaSettings,
    pub observer: O,
}

enum Outcome {
    Done,
    Aborted,
}

impl<H: BatchHandler, O: ConsumerObserver> BatchConsumer<H, O> {
    pub async fn run(mut self, shutdown: Shutdown) {
        let (max, linger) = (self.settings.batch_max, self.settings.batch_linger);
        while !shutdown.is_triggered() {
            let Some(raw) = self.source.next_batch(max, linger, &shutdown).await else {
                break;
            };
            let mut batch = Vec::with_capacity(raw.len());
            for delivery in &raw {
                let decoded = match &delivery.poison {
                    Some(reason) => Err(reason.clone()),
                    None => decode(delivery),
                };
                match decoded {
                    Ok(incoming) => batch.push(incoming),
                    Err(reason) => {
                        if let Outcome::Aborted =
                            self.dead_letter(delivery, &reason, &shutdown).await
                        {
                            return self.source.close().await;
                        }
                    }
                }
            }
            if !batch.is_empty() {
                crate::fault::before_batch(batch.iter().map(|m| &m.envelope.event)).await;
                if let Outcome::Aborted = self.process(&batch, &shutdown).await {
                    return self.source.close().await;
                }
                self.observer.processed(&batch[0].topic, batch.len());
            }
            self.source.ack(&raw).await;
        }
        self.source.close().await;
    }

    /// One call of the handler, bounded: a dependency that hangs (a network
    /// that drops packets rather than refusing them) counts as an outage like
    /// one that refuses, and the batch is retried; handlers are idempotent,
    /// so abandoning one midway is safe.
    async fn handle(&self, batch: &[Incoming]) -> Result<(), HandleError> {
        match tokio::time::timeout(HANDLE_TIMEOUT, self.handler.handle(batch)).await {
            Ok(result) => result,
            Err(_) => Err(HandleError::Transient(format!(
                "handling a batch took longer than {HANDLE_TIMEOUT:?}"
            ))),
        }
    }

    async fn process(&self, batch: &[Incoming], shutdown: &Shutdown) -> Outcome {
        let mut attempt = 0;
        loop {
            match self.handle(batch).await {
                Ok(()) => return Outcome::Done,
                Err(HandleError::Transient(error)) => {
                    if shutdown.is_triggered() {
                        tracing::warn!(%error, "shutting down during an outage; the batch will be redelivered");
                        return Outcome::Aborted;
                    }
                    tracing::warn!(%error, attempt, "dependency unavailable; pausing this batch and retrying");
                    self.observer.retried(&batch[0].topic);
                    tokio::time::sleep(Backoff::OUTAGE.delay(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
                Err(HandleError::Permanent(error)) if batch.len() > 1 => {
                    tracing::warn!(%error, size = batch.len(), "batch failed; retrying its messages one by one");
                    for one in batch {
                        if let Outcome::Aborted = self.process_one(one, shutdown).await {
                            return Outcome::Aborted;
                        }
                    }
                    return Outcome::Done;
                }
                Err(HandleError::Permanent(_)) => {
                    return self.process_one(&batch[0], shutdown).await
                }
            }
        }
    }

    async fn process_one(&self, message: &Incoming, shutdown: &Shutdown) -> Outcome {
        let (mut failures, mut outages) = (0u32, 0u32);
        loop {
            match self.handle(std::slice::from_ref(message)).await {
                Ok(()) => return Outcome::Done,
                Err(HandleError::Transient(error)) => {
                    if shutdown.is_triggered() {
                        return Outcome::Aborted;
                    }
                    tracing::warn!(%error, "dependency unavailable; retrying");
                    tokio::time::sleep(Backoff::OUTAGE.delay(outages)).await;
                    outages = outages.saturating_add(1);
                }
                Err(HandleError::Permanent(error)) => {
                    failures += 1;
                    self.observer.retried(&message.topic);
                    if failures >= self.settings.max_attempts {
                        let reason = format!("failed {failures} times: {error}");
                        let key = message.envelope.event.order_id().to_string();
                        let payload = message.envelope.to_json();
                        let letter = DeadLetter {
                            topic: &message.topic,
                            position: &message.position,
                            key: Some(key.as_bytes()),
                            payload: &payload,
                            reason: &reason,
                        };
                        return self.send_dead_letter(letter, shutdown).await;
                    }
                    tokio::time::sleep(Backoff::default().delay(failures)).await;
                }
            }
        }
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str, shutdown: &Shutdown) -> Outcome {
        let letter = DeadLetter {
            topic: &delivery.topic,
            position: &delivery.position,
            key: delivery.key.as_deref(),
            payload: delivery.payload.as_deref().unwrap_or_default(),
            reason,
        };
        self.send_dead_letter(letter, shutdown).await
    }

    async fn send_dead_letter(&self, letter: DeadLetter<'_>, shutdown: &Shutdown) -> Outcome {
        let (topic, position) = (letter.topic, letter.position);
        tracing::error!(%topic, %position, reason = %letter.reason, "sending message to the dead-letter topic");
        let dead_letter_topic = self.settings.topics().dead_letter;
        let mut attempt = 0;
        loop {
            match self.producer.dead_letter(&dead_letter_topic, letter).await {
                Ok(()) => {
                    self.observer.dead_lettered(topic);
                    return Outcome::Done;
                }
                // Never drop silently: keep trying while the transport is away.
                Err(error) if !shutdown.is_triggered() => {
                    tracing::warn!(%error, "dead-letter send failed; retrying");
                    tokio::time::sleep(Backoff::OUTAGE.delay(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
                Err(_) => return Outcome::Aborted,
            }
        }
    }
}

/// Two spans per message, both children of the producer's span (its context
/// comes with the message), as the messaging conventions have them:
/// `receive` covers taking the message off the batch and decoding it (a
/// decode error is recorded there); `process` is the handler's work, the
/// parent of the service's database and produce spans.
///
/// A message of a trace dropped upstream gets neither: one bare span, which
/// OpenTelemetry never sees and which carries the decision (and the trace
/// id, for the logs) to the handler's spans. Nobody would read their fields.
fn decode(delivery: &Delivery) -> Result<Incoming, String> {
    let parent = context_from_fields(&delivery.trace);
    let (envelope, span) = match sampling::dropped_parent(&parent) {
        Some(ids) => (
            envelope_of(delivery)?,
            sampling::within_dropped(ids, || tracing::info_span!("kafka.process")),
        ),
        None => traced(delivery, parent)?,
    };
    Ok(Incoming {
        topic: delivery.topic.clone(),
        position: delivery.position.clone(),
        envelope,
        span,
    })
}

/// The receive and process spans of a message whose trace may be sampled.
fn traced(
    delivery: &Delivery,
    parent: opentelemetry::Context,
) -> Result<(Envelope, tracing::Span), String> {
    let topic = delivery.topic.as_str();
    let key = String::from_utf8_lossy(delivery.key.as_deref().unwrap_or_default());
    let system = match delivery.position {
        Position::Kafka { .. } => "kafka",
        Position::Stream { .. } => "redis",
    };
    let receive = sampling::edge_span(parent.clone(), || {
        tracing::info_span!(
            "kafka.receive",
            otel.name = %SpanName(topic, "receive"),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            messaging.system = system,
            messaging.operation = "receive",
            messaging.destination.name = %topic,
            messaging.kafka.destination.partition = tracing::field::Empty,
            messaging.kafka.message.offset = tracing::field::Empty,
            messaging.kafka.message.key = tracing::field::Empty,
            messaging.redis.stream = tracing::field::Empty,
            messaging.redis.message.key = tracing::field::Empty,
            messaging.redis.entry_id = tracing::field::Empty,
            messaging.message.id = tracing::field::Empty,
            error.message = tracing::field::Empty,
        )
    });
    record_position(&receive, &delivery.position, &key);
    let envelope = match envelope_of(delivery) {
        Ok(envelope) => envelope,
        Err(reason) => {
            receive.record("otel.status_code", "ERROR");
            receive.record("error.message", reason.as_str());
            return Err(reason);
        }
    };
    receive.record(
        "messaging.message.id",
        tracing::field::display(envelope.event_id),
    );
    drop(receive);
    let span = sampling::edge_span(parent, || {
        tracing::info_span!(
            "kafka.process",
            otel.name = %SpanName(topic, "process"),
            otel.kind = "consumer",
            messaging.system = system,
            messaging.operation = "process",
            messaging.destination.name = %topic,
            messaging.kafka.destination.partition = tracing::field::Empty,
            messaging.kafka.message.offset = tracing::field::Empty,
            messaging.kafka.message.key = tracing::field::Empty,
            messaging.redis.stream = tracing::field::Empty,
            messaging.redis.message.key = tracing::field::Empty,
            messaging.redis.entry_id = tracing::field::Empty,
            messaging.message.id = %envelope.event_id,
            event.type = envelope.event.type_name(),
        )
    });
    record_position(&span, &delivery.position, &key);
    Ok((envelope, span))
}

fn envelope_of(delivery: &Delivery) -> Result<Envelope, String> {
    delivery
        .payload()
        .and_then(|payload| Envelope::from_json(payload).map_err(|e| e.to_string()))
}

fn record_position(span: &tracing::Span, position: &Position, message_key: &str) {
    match position {
        Position::Kafka { partition, offset } => {
            span.record("messaging.kafka.destination.partition", partition);
            span.record("messaging.kafka.message.offset", offset);
            span.record("messaging.kafka.message.key", message_key);
        }
        Position::Stream { key, id } => {
            span.record("messaging.redis.stream", key.as_str());
            span.record("messaging.redis.entry_id", id.as_str());
            span.record("messaging.redis.message.key", message_key);
        }
    }
}
