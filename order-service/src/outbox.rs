//! The transactional outbox: a lifecycle transition and its event commit
//! together, so the event cannot be lost if the process dies between the
//! commit and the produce.
//!
//! [`enqueue`] writes the event into the `outbox` table inside the
//! transition's transaction. The [`Relay`] task publishes the rows and
//! deletes them once the broker acknowledged them. Rows are claimed with
//! `FOR UPDATE SKIP LOCKED`, so replicas share the work without publishing a
//! row twice at once; a crash after the produce and before the delete
//! publishes it again, which consumers absorb (they are idempotent, and the
//! event id is the same: see `Envelope::new`).
//!
//! Each row keeps the W3C `traceparent` of the work that wrote it; the relay
//! publishes the row in a span whose parent is that context, so a lifecycle
//! event continues the trace of the request (or purchase) behind it instead
//! of starting one of its own.
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DbBackend, DbErr, Statement, TransactionTrait, Value,
};
use tokio::sync::Notify;
use tracing::Instrument;

use seckill_common::events::{Envelope, Event};
use seckill_common::kafka::context_from_traceparent;
use seckill_common::retry::Backoff;
use seckill_common::shutdown::Shutdown;
use seckill_common::transport::Publisher;

const INSERT: &str =
    "INSERT INTO outbox (topic, key, payload, traceparent) VALUES ($1, $2, $3, $4)";
const CLAIM: &str = "SELECT id, topic, key, payload, traceparent FROM outbox \
     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED";

/// Writes `event` to the outbox in the caller's transaction. `traceparent`
/// is the context its publication continues (`kafka::traceparent_of`).
pub async fn enqueue(
    db: &impl ConnectionTrait,
    topic: &str,
    event: Event,
    traceparent: Option<String>,
) -> Result<(), DbErr> {
    let key = event.order_id().to_string();
    let payload = Envelope::new(event).to_json();
    let values: [Value; 4] = [topic.into(), key.into(), payload.into(), traceparent.into()];
    db.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        INSERT,
        values,
    ))
    .await
    .map(drop)
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("cannot publish: {0}")]
    Produce(String),
}

pub struct Relay {
    pub db: DatabaseConnection,
    pub producer: Publisher,
    /// Notified after a local commit wrote to the outbox: publish now.
    pub wake: Arc<Notify>,
    /// The longest wait between two looks (rows written by other replicas).
    pub interval: Duration,
    pub batch: u32,
}

impl Relay {
    pub async fn run(self, shutdown: Shutdown) {
        let outage = Backoff::OUTAGE;
        let mut failures = 0u32;
        while !shutdown.is_triggered() {
            let pause = match self.publish_batch().await {
                // A full batch: there may be more right away.
                Ok(n) if n >= self.batch as usize => {
                    failures = 0;
                    continue;
                }
                Ok(_) => {
                    failures = 0;
                    self.interval
                }
                Err(error) => {
                    tracing::warn!(%error, "outbox relay failed; the rows stay and are retried");
                    failures = failures.saturating_add(1);
                    outage.delay(failures)
                }
            };
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Publishes up to `batch` rows; returns how many.
    async fn publish_batch(&self) -> Result<usize, RelayError> {
        let txn = self.db.begin().await?;
        let rows = txn
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                CLAIM,
                [i64::from(self.batch).into()],
            ))
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("", "id")?;
            let topic: String = row.try_get("", "topic")?;
            let key: String = row.try_get("", "key")?;
            let payload: Vec<u8> = row.try_get("", "payload")?;
            let traceparent: Option<String> = row.try_get("", "traceparent")?;
            claimed.push((id, topic, key, payload, traceparent));
        }
        let sends = claimed
            .iter()
            .map(|(id, topic, key, payload, traceparent)| {
                let span = publish_span(*id, key, traceparent.as_deref());
                async move {
                    match Envelope::from_json(payload) {
                        Ok(envelope) => self
                            .producer
                            .send(topic, key, &envelope)
                            .await
                            .map(|_| *id)
                            .map_err(|e| RelayError::Produce(e.to_string())),
                        // Only this service writes the outbox; an unreadable row is a
                        // bug, and retrying it forever would stall every row after it.
                        Err(error) => {
                            tracing::error!(%error, id, "dropping an unreadable outbox row");
                            Ok(*id)
                        }
                    }
                }
                .instrument(span)
            });
        let mut published = Vec::with_capacity(claimed.len());
        for result in join_all(sends).await {
            published.push(result?);
        }
        if !published.is_empty() {
            // Integers only: nothing here can inject.
            let ids: Vec<String> = published.iter().map(i64::to_string).collect();
            txn.execute_unprepared(&format!(
                "DELETE FROM outbox WHERE id IN ({})",
                ids.join(",")
            ))
            .await?;
        }
        txn.commit().await?;
        Ok(published.len())
    }
}

/// The span one row is published in: a child of the stored context when
/// there is one, so the produce span (and every consumer after it) joins the
/// trace of the work that wrote the row.
fn publish_span(id: i64, key: &str, traceparent: Option<&str>) -> tracing::Span {
    let parent = traceparent
        .map(context_from_traceparent)
        .unwrap_or_default();
    seckill_common::sampling::edge_span(
        parent,
        || tracing::info_span!("outbox.publish", outbox.id = id, order.id = %key),
    )
}
