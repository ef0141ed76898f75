//! The inventory-events handler: one order row per inventory decision.
//!
//! Per batch: one transaction, commit, then one event per message, all
//! awaited. Only then does the batch loop store the offsets, so a crash
//! anywhere means redelivery, and a redelivery finds the row already there,
//! changes nothing and re-emits the same event (same event id, see
//! `Envelope::new`).
//!
//! The transaction is set-based when it can be ([`batch`]: one multi-row
//! insert, no savepoint, because a savepoint per message is a subtransaction
//! per message and those are what made PostgreSQL slow under load). When the
//! batch repeats an order id or holds a second live order for one user and
//! sale, it is rolled back and the batch is stored message by message instead
//! (`intake::persist`), each in a savepoint of its own, so that the second live order is
//! recorded as failed (`duplicate_buyer`) without aborting the batch.
use futures::future::join_all;
use sea_orm::{DatabaseConnection, TransactionTrait};
use tracing::Instrument;

use seckill_common::consumer::{BatchHandler, HandleError, Incoming};
use seckill_common::events::{Envelope, Event, OrderRef, RejectReason, Rejection};
use seckill_common::kafka::traceparent_of;
use seckill_common::sampling;
use seckill_common::transport::Publisher;

use crate::persistence::intake::batch::{self, Fallback, Row};
use crate::persistence::intake::{persist, Persisted, Terms};
use crate::persistence::OrderStatus;

pub struct OrderHandler {
    pub db: DatabaseConnection,
    pub producer: Publisher,
    /// `topics.order_events`.
    pub topic: String,
}

/// One message to act on, with its `db.persist_order` span.
struct Pending<'a> {
    incoming: &'a Incoming,
    order: &'a OrderRef,
    wanted: Persisted,
    terms: Option<Terms>,
    traceparent: Option<String>,
    span: tracing::Span,
}

impl BatchHandler for OrderHandler {
    async fn handle(&self, batch: &[Incoming]) -> Result<(), HandleError> {
        let mut pending = Vec::with_capacity(batch.len());
        for incoming in batch {
            let Some((order, wanted, terms)) = decision(&incoming.envelope.event) else {
                tracing::debug!(parent: &incoming.span, event = incoming.envelope.event.type_name(), "ignoring event");
                continue;
            };
            let span = sampling::child(&incoming.span, || {
                tracing::info_span!(
                    parent: &incoming.span,
                    "db.persist_order",
                    otel.kind = "client",
                    db.system = "postgresql",
                    db.operation = "INSERT",
                    db.sql.table = "orders",
                    order.id = %order.order_id,
                    order.status = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty,
                )
            });
            pending.push(Pending {
                incoming,
                order,
                wanted,
                terms,
                // Kept on the row: the order's later events that no request
                // carries (OrderExpired) continue the purchase's trace.
                traceparent: traceparent_of(&incoming.span),
                span,
            });
        }
        if pending.is_empty() {
            return Ok(());
        }
        // The batch's statements serve every message: they run in a span of
        // their own, linked to each message's.
        let batch_span = tracing::info_span!(
            "db.persist_order_batch",
            otel.kind = "client",
            db.system = "postgresql",
            db.operation = "INSERT",
            db.sql.table = "orders",
            batch.size = pending.len(),
            path = tracing::field::Empty,
            fallback = tracing::field::Empty,
        );
        for p in &pending {
            batch_span.follows_from(&p.incoming.span);
        }
        let stored = self.persist_as_set(&pending).instrument(batch_span.clone());
        let persisted = match stored.await? {
            Ok(persisted) => {
                batch_span.record("path", "set");
                tracing::debug!(parent: &batch_span, size = pending.len(), "order batch stored as a set");
                persisted
            }
            Err(why) => {
                batch_span.record("path", "per_message");
                batch_span.record("fallback", why.as_str());
                tracing::info!(parent: &batch_span, size = pending.len(), fallback = why.as_str(),
                    "order batch cannot be stored as a set; storing it message by message");
                self.persist_one_by_one(&pending)
                    .instrument(batch_span)
                    .await?
            }
        };
        let outgoing: Vec<(&Incoming, Event)> = pending
            .iter()
            .zip(persisted)
            .map(|(p, persisted)| {
                p.span.record("order.status", persisted.status.as_str());
                (p.incoming, event_for(p.order, persisted))
            })
            .collect();

        let sends = outgoing.iter().map(|(incoming, event)| {
            let envelope = Envelope::new(event.clone());
            let key = event.order_id().to_string();
            let producer = &self.producer;
            let topic = &self.topic;
            async move { producer.send(topic, &key, &envelope).await }
                .instrument(incoming.span.clone())
        });
        for result in join_all(sends).await {
            // The rows are committed; a redelivery re-emits from them.
            result.map_err(|e| HandleError::Transient(e.to_string()))?;
        }
        for (incoming, event) in &outgoing {
            tracing::info!(parent: &incoming.span, order_id = %event.order_id(), event = event.type_name(), "order persisted and announced");
        }
        Ok(())
    }
}

impl OrderHandler {
    /// The fast path ([`batch`]) in a transaction of its own: committed when
    /// it stored the batch, rolled back when it says why it cannot (before
    /// the fallback starts, which would otherwise wait on its rows).
    async fn persist_as_set(
        &self,
        pending: &[Pending<'_>],
    ) -> Result<Result<Vec<Persisted>, Fallback>, HandleError> {
        let rows: Vec<Row<'_>> = pending
            .iter()
            .map(|p| Row {
                order: p.order,
                wanted: &p.wanted,
                terms: p.terms,
                traceparent: p.traceparent.as_deref(),
            })
            .collect();
        if batch::repeats_an_order(&rows) {
            return Ok(Err(Fallback::RepeatedOrder));
        }
        let txn = self.db.begin().await.map_err(HandleError::from)?;
        match batch::persist_all(&txn, &rows).await {
            Ok(Ok(persisted)) => {
                txn.commit().await.map_err(HandleError::from)?;
                Ok(Ok(persisted))
            }
            Ok(Err(why)) => {
                txn.rollback().await.map_err(HandleError::from)?;
                Ok(Err(why))
            }
            Err(error) => {
                for p in pending {
                    p.span.record("otel.status_code", "ERROR");
                }
                tracing::warn!(%error, size = pending.len(), "cannot persist order batch");
                let _ = txn.rollback().await;
                Err(HandleError::from(error))
            }
        }
    }

    /// The fallback: one transaction, one savepoint per message.
    async fn persist_one_by_one(
        &self,
        pending: &[Pending<'_>],
    ) -> Result<Vec<Persisted>, HandleError> {
        let txn = self.db.begin().await.map_err(HandleError::from)?;
        let mut persisted = Vec::with_capacity(pending.len());
        for p in pending {
            let one = persist(&txn, p.order, &p.wanted, p.terms, p.traceparent.as_deref())
                .instrument(p.span.clone())
                .await;
            match one {
                Ok(one) => persisted.push(one),
                Err(error) => {
                    p.span.record("otel.status_code", "ERROR");
                    tracing::warn!(parent: &p.span, %error, "cannot persist order");
                    // Dropping `txn` would also roll back; an explicit rollback
                    // returns the connection to the pool clean and at once.
                    let _ = txn.rollback().await;
                    return Err(HandleError::from(error));
                }
            }
        }
        txn.commit().await.map_err(HandleError::from)?;
        Ok(persisted)
    }
}

/// The order an inventory event is about, the status/reason it asks for,
/// and the payment terms when it creates an order.
fn decision(event: &Event) -> Option<(&OrderRef, Persisted, Option<Terms>)> {
    match event {
        Event::StockReserved(reserved) => Some((
            &reserved.order,
            Persisted {
                status: OrderStatus::Created,
                reason: None,
            },
            Some(Terms::of(reserved)),
        )),
        Event::StockRejected(Rejection { order, reason }) => Some((
            order,
            Persisted {
                status: OrderStatus::Failed,
                reason: Some(*reason),
            },
            None,
        )),
        _ => None,
    }
}

/// The event that tells the world what the persisted row says. Any status
/// other than `failed` means the order was created (later transitions have
/// their own events), so a redelivery re-emits exactly the original event.
fn event_for(order: &OrderRef, persisted: Persisted) -> Event {
    match persisted.status {
        OrderStatus::Failed => Event::OrderFailed(Rejection {
            order: order.clone(),
            reason: persisted.reason.unwrap_or(RejectReason::Rejected),
        }),
        _ => Event::OrderCreated(order.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use seckill_common::domain::{OrderId, Quantity, SaleId, UserId};
    use seckill_common::events::Reserved;

    fn order() -> OrderRef {
        let sale = SaleId::parse("s1").unwrap();
        OrderRef {
            order_id: OrderId::new(&sale),
            sale_id: sale,
            user_id: UserId::parse("u1").unwrap(),
            quantity: Quantity::ONE,
        }
    }

    #[test]
    fn reserved_becomes_created_and_rejected_becomes_failed_with_reason() {
        let o = order();
        let reserved = Reserved {
            unit_price_cents: 250,
            ..Reserved::new(o.clone())
        };
        let (_, p, terms) = decision(&Event::StockReserved(reserved)).unwrap();
        assert_eq!((p.status, p.reason), (OrderStatus::Created, None));
        let terms = terms.unwrap();
        assert_eq!((terms.window_secs, terms.amount_cents), (900, 250));
        let (_, p, terms) = decision(&Event::StockRejected(Rejection {
            order: o.clone(),
            reason: RejectReason::InsufficientStock,
        }))
        .unwrap();
        assert_eq!(
            (p.status, p.reason),
            (OrderStatus::Failed, Some(RejectReason::InsufficientStock))
        );
        assert!(terms.is_none());
        assert!(decision(&Event::OrderCreated(o)).is_none());
    }

    #[test]
    fn the_event_follows_the_persisted_status() {
        let o = order();
        let created = event_for(
            &o,
            Persisted {
                status: OrderStatus::Created,
                reason: None,
            },
        );
        assert_eq!(created, Event::OrderCreated(o.clone()));
        let failed = event_for(
            &o,
            Persisted {
                status: OrderStatus::Failed,
                reason: Some(RejectReason::DuplicateBuyer),
            },
        );
        assert_eq!(
            failed,
            Event::OrderFailed(Rejection {
                order: o,
                reason: RejectReason::DuplicateBuyer
            })
        );
    }
}
