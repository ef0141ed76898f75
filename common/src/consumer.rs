//! The at-least-once batch loop that inventory-service and order-service both run.
//!
//! Guarantees, in order of importance:
//! 1. An offset is stored only after its batch's database transaction has
//!    committed and its follow-up events were acknowledged. A crash at any
//!    point means redelivery, never loss; handlers are idempotent, so a
//!    redelivery changes nothing.
//! 2. An outage (database or broker down) is retried with capped backoff for
//!    as long as it lasts: the partition pauses, nothing is dead-lettered.
//! 3. A message that fails on its own (malformed, or rejected by the handler
//!    `max_attempts` times) goes to the dead-letter topic with its reason, and
//!    its partition carries on.
//! 4. On shutdown the current batch is finished, offsets are committed
//!    synchronously and the consumer leaves its group.
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::time::Instant;

use crate::events::Envelope;
use crate::kafka::{extract_trace_context, set_parent, EventConsumer, EventProducer};
use crate::retry::Backoff;
use crate::settings::KafkaSettings;
use crate::shutdown::Shutdown;

/// Longest one handler call may take. A healthy batch takes milliseconds;
/// every call inside has its own timeout, so this only catches a hang.
const HANDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One decoded message, with the span its processing runs in: a child of the
/// producer's span, so one purchase stays one trace across services.
pub struct Incoming {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
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
    pub consumer: EventConsumer,
    pub handler: H,
    pub producer: EventProducer,
    pub settings: KafkaSettings,
    pub observer: O,
}

enum Outcome {
    Done,
    Aborted,
}

impl<H: BatchHandler, O: ConsumerObserver> BatchConsumer<H, O> {
    pub async fn run(self, shutdown: Shutdown) {
        let max = self.settings.batch_max;
        let linger = self.settings.batch_linger;
        let outage = Backoff::OUTAGE;
        let mut recv_errors = 0u32;
        while !shutdown.is_triggered() {
            let first = tokio::select! {
                _ = shutdown.wait() => break,
                m = self.consumer.recv() => m.map(|m| m.detach()),
            };
            let first = match first {
                Ok(m) => {
                    recv_errors = 0;
                    m
                }
                Err(error) => {
                    tracing::warn!(%error, "kafka receive failed; backing off");
                    tokio::time::sleep(outage.delay(recv_errors)).await;
                    recv_errors = recv_errors.saturating_add(1);
                    continue;
                }
            };
            let mut raw = vec![first];
            let deadline = Instant::now() + linger;
            while raw.len() < max {
                match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                    Ok(Ok(m)) => raw.push(m.detach()),
                    Ok(Err(error)) => {
                        tracing::warn!(%error, "kafka receive failed");
                        break;
                    }
                    Err(_) => break,
                }
            }
            let positions: Vec<(String, i32, i64)> = raw
                .iter()
                .map(|m| (m.topic().to_owned(), m.partition(), m.offset()))
                .collect();
            let mut batch = Vec::with_capacity(raw.len());
            for message in raw {
                match decode(&message) {
                    Ok(incoming) => batch.push(incoming),
                    Err(reason) => {
                        if let Outcome::Aborted =
                            self.dead_letter(&message, &reason, &shutdown).await
                        {
                            return self.close();
                        }
                    }
                }
            }
            if !batch.is_empty() {
                if let Outcome::Aborted = self.process(&batch, &shutdown).await {
                    return self.close();
                }
                self.observer.processed(&batch[0].topic, batch.len());
            }
            self.store(&positions);
        }
        self.close();
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
                        return self
                            .dead_letter_parts(
                                &message.topic,
                                message.partition,
                                message.offset,
                                Some(message.envelope.event.order_id().to_string().as_bytes()),
                                &message.envelope.to_json(),
                                &reason,
                                shutdown,
                            )
                            .await;
                    }
                    tokio::time::sleep(Backoff::default().delay(failures)).await;
                }
            }
        }
    }

    async fn dead_letter(
        &self,
        message: &OwnedMessage,
        reason: &str,
        shutdown: &Shutdown,
    ) -> Outcome {
        let payload = message.payload().unwrap_or_default();
        self.dead_letter_parts(
            message.topic(),
            message.partition(),
            message.offset(),
            message.key(),
            payload,
            reason,
            shutdown,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn dead_letter_parts(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: &[u8],
        reason: &str,
        shutdown: &Shutdown,
    ) -> Outcome {
        tracing::error!(%topic, partition, offset, %reason, "sending message to the dead-letter topic");
        let dead_letter_topic = self.settings.topics().dead_letter;
        let (partition_s, offset_s) = (partition.to_string(), offset.to_string());
        let mut attempt = 0;
        loop {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "dlq.reason",
                    value: Some(reason),
                })
                .insert(Header {
                    key: "dlq.source.topic",
                    value: Some(topic),
                })
                .insert(Header {
                    key: "dlq.source.partition",
                    value: Some(&partition_s),
                })
                .insert(Header {
                    key: "dlq.source.offset",
                    value: Some(&offset_s),
                });
            match self
                .producer
                .send_raw(&dead_letter_topic, key, payload, headers)
                .await
            {
                Ok(_) => {
                    self.observer.dead_lettered(topic);
                    return Outcome::Done;
                }
                // Never drop silently: keep trying while the broker is away.
                Err(error) if !shutdown.is_triggered() => {
                    tracing::warn!(%error, "dead-letter produce failed; retrying");
                    tokio::time::sleep(Backoff::OUTAGE.delay(attempt)).await;
                    attempt = attempt.saturating_add(1);
                }
                Err(_) => return Outcome::Aborted,
            }
        }
    }

    /// Stores the next offset of every partition in the batch; librdkafka's
    /// periodic commit picks them up.
    fn store(&self, positions: &[(String, i32, i64)]) {
        let mut next: HashMap<(&str, i32), i64> = HashMap::new();
        for (topic, partition, offset) in positions {
            let e = next
                .entry((topic.as_str(), *partition))
                .or_insert(*offset + 1);
            *e = (*e).max(*offset + 1);
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

    fn close(&self) {
        if let Err(error) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(%error, "final commit had nothing to commit or failed");
        }
        self.consumer.unsubscribe();
        tracing::info!("consumer committed and left its group");
    }
}

/// Two spans per message, both children of the producer's span (its context
/// comes in the headers), as the messaging conventions have them: `receive`
/// covers taking the message off the batch and decoding it (a decode error
/// is recorded there); `process` is the handler's work, the parent of the
/// service's database and produce spans.
fn decode(message: &OwnedMessage) -> Result<Incoming, String> {
    let parent = extract_trace_context(message.headers().map(|h| h.as_borrowed()));
    let topic = message.topic();
    let key = String::from_utf8_lossy(message.key().unwrap_or_default());
    let receive = tracing::info_span!(
        "kafka.receive",
        otel.name = %format!("{topic} receive"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "kafka",
        messaging.operation = "receive",
        messaging.destination.name = %topic,
        messaging.kafka.destination.partition = message.partition(),
        messaging.kafka.message.offset = message.offset(),
        messaging.kafka.message.key = %key,
        messaging.message.id = tracing::field::Empty,
        error.message = tracing::field::Empty,
    );
    set_parent(&receive, parent.clone());
    let decoded = message
        .payload()
        .ok_or_else(|| "message has no payload".to_owned())
        .and_then(|payload| Envelope::from_json(payload).map_err(|e| e.to_string()));
    let envelope = match decoded {
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
    let span = tracing::info_span!(
        "kafka.process",
        otel.name = %format!("{topic} process"),
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.operation = "process",
        messaging.destination.name = %topic,
        messaging.kafka.destination.partition = message.partition(),
        messaging.kafka.message.offset = message.offset(),
        messaging.kafka.message.key = %key,
        messaging.message.id = %envelope.event_id,
        event.type = envelope.event.type_name(),
    );
    set_parent(&span, parent);
    Ok(Incoming {
        topic: topic.to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        envelope,
        span,
    })
}
