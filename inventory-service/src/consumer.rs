//! The `OrderRequested` handler: one database transaction per batch (set-based
//! when it can be, see [`crate::persistence::reserve`]), then one event per order, then the
//! Redis reservations of rejected orders go back.
//!
//! The order matters. Events are produced only after the commit, so nothing
//! is announced that could still roll back; Redis is released only after the
//! rejection is acknowledged, so the gateway never resells a unit while the
//! order could still turn out reserved. Any failure after the commit makes
//! the whole batch retry, which is safe because [`reserve`] is idempotent.
use futures::future::join_all;
use sea_orm::{DatabaseConnection, TransactionTrait};
use seckill_common::redis_conn::Conn;
use tracing::Instrument;

use seckill_common::consumer::{BatchHandler, HandleError, Incoming};
use seckill_common::events::{Envelope, Event, OrderRef, RejectReason, Rejection, Reserved};
use seckill_common::sampling;
use seckill_common::settings::Topics;
use seckill_common::stock;
use seckill_common::transport::Publisher;

use crate::persistence;
use crate::persistence::reserve::batch::{self, Fallback};
use crate::persistence::reserve::{reserve, Outcome, ReserveError};

pub struct InventoryHandler {
    pub db: DatabaseConnection,
    pub redis: Conn,
    pub producer: Publisher,
    pub topics: Topics,
}

/// One order's outcome, with the span its message is processed in.
struct Decision<'a> {
    order: &'a OrderRef,
    outcome: Outcome,
    span: &'a tracing::Span,
}

impl BatchHandler for InventoryHandler {
    async fn handle(&self, batch: &[Incoming]) -> Result<(), HandleError> {
        let orders: Vec<(&OrderRef, &tracing::Span)> = batch
            .iter()
            .filter_map(|m| match &m.envelope.event {
                Event::OrderRequested(requested) => Some((&requested.order, &m.span)),
                _ => None, // Not ours to act on.
            })
            .collect();
        if orders.is_empty() {
            return Ok(());
        }
        let decisions = self.decide(orders).await?;
        self.publish(&decisions).await?;
        for d in &decisions {
            let outcome = match &d.outcome {
                Outcome::Reserved(_) => "reserved",
                Outcome::Rejected(reason) => reason.as_str(),
            };
            tracing::info!(parent: d.span, order_id = %d.order.order_id, outcome, "stock decision announced");
        }
        self.release_rejected(&decisions).await
    }
}

impl InventoryHandler {
    /// Decides every order, committed before this returns: as a set when it
    /// can, else order by order (see [`crate::persistence::reserve`]). Each order gets its
    /// `db.reserve` span under its message's span, whichever path decides it;
    /// the batch's statements run in one `db.reserve_batch` span of their own.
    async fn decide<'a>(
        &self,
        orders: Vec<(&'a OrderRef, &'a tracing::Span)>,
    ) -> Result<Vec<Decision<'a>>, HandleError> {
        let refs: Vec<&OrderRef> = orders.iter().map(|(order, _)| *order).collect();
        let db_spans: Vec<tracing::Span> = orders
            .iter()
            .map(|(order, span)| {
                sampling::child(span, || {
                    tracing::info_span!(
                        parent: *span,
                        "db.reserve",
                        otel.kind = "client",
                        db.system = "postgresql",
                        db.operation = "reserve",
                        order_id = %order.order_id,
                        sale_id = %order.sale_id,
                        outcome = tracing::field::Empty,
                    )
                })
            })
            .collect();
        let batch_span = tracing::info_span!(
            "db.reserve_batch",
            otel.kind = "client",
            db.system = "postgresql",
            db.operation = "reserve_batch",
            batch.size = refs.len(),
            path = tracing::field::Empty,
            fallback = tracing::field::Empty,
        );
        for (_, span) in &orders {
            batch_span.follows_from(*span);
        }
        let outcomes = match self
            .decide_as_set(&refs)
            .instrument(batch_span.clone())
            .await?
        {
            Ok(outcomes) => {
                batch_span.record("path", "set");
                tracing::debug!(parent: &batch_span, size = refs.len(), path = "set", "reservation batch decided");
                outcomes
            }
            Err(why) => {
                batch_span.record("path", "per_order");
                batch_span.record("fallback", why.as_str());
                tracing::info!(parent: &batch_span, size = refs.len(), path = "per_order", fallback = why.as_str(),
                    "reservation batch cannot be decided as a set; deciding it order by order");
                self.decide_one_by_one(&refs, &db_spans)
                    .instrument(batch_span)
                    .await?
            }
        };
        let decisions = orders
            .into_iter()
            .zip(outcomes)
            .zip(&db_spans)
            .map(|(((order, span), outcome), db_span)| {
                match &outcome {
                    Outcome::Reserved(_) => db_span.record("outcome", "reserved"),
                    Outcome::Rejected(reason) => db_span.record("outcome", reason.as_str()),
                };
                Decision {
                    order,
                    outcome,
                    span,
                }
            })
            .collect();
        Ok(decisions)
    }

    /// The fast path in a transaction of its own, committed when it decided,
    /// rolled back when it says why it cannot (before the fallback starts,
    /// which would otherwise wait on this transaction's rows).
    async fn decide_as_set(
        &self,
        orders: &[&OrderRef],
    ) -> Result<Result<Vec<Outcome>, Fallback>, HandleError> {
        if batch::repeats_an_order(orders) {
            return Ok(Err(Fallback::RepeatedOrder));
        }
        let txn = self.db.begin().await.map_err(HandleError::from)?;
        match batch::reserve_all(&txn, orders).await {
            Ok(Ok(outcomes)) => {
                txn.commit().await.map_err(HandleError::from)?;
                Ok(Ok(outcomes))
            }
            Ok(Err(why)) => {
                txn.rollback().await.map_err(HandleError::from)?;
                Ok(Err(why))
            }
            Err(error) => {
                let _ = txn.rollback().await;
                Err(handle_error(error))
            }
        }
    }

    /// The fallback: one transaction, one savepoint per order.
    async fn decide_one_by_one(
        &self,
        orders: &[&OrderRef],
        db_spans: &[tracing::Span],
    ) -> Result<Vec<Outcome>, HandleError> {
        let txn = self.db.begin().await.map_err(HandleError::from)?;
        let mut outcomes = Vec::with_capacity(orders.len());
        for (order, db_span) in orders.iter().zip(db_spans) {
            let outcome = reserve(&txn, order)
                .instrument(db_span.clone())
                .await
                .map_err(handle_error)?;
            outcomes.push(outcome);
        }
        txn.commit().await.map_err(HandleError::from)?;
        Ok(outcomes)
    }

    /// Produces every outcome concurrently and waits for all acknowledgements.
    async fn publish(&self, decisions: &[Decision<'_>]) -> Result<(), HandleError> {
        let topic = self.topics.inventory_events.as_str();
        let sends = decisions.iter().map(|d| {
            let event = match &d.outcome {
                Outcome::Reserved(terms) => Event::StockReserved(Reserved {
                    order: d.order.clone(),
                    payment_window_secs: terms.payment_window_secs,
                    unit_price_cents: terms.unit_price_cents,
                }),
                Outcome::Rejected(reason) => Event::StockRejected(Rejection {
                    order: d.order.clone(),
                    reason: *reason,
                }),
            };
            let key = d.order.order_id.to_string();
            async move { self.producer.send(topic, &key, &Envelope::new(event)).await }
                .instrument(d.span.clone())
        });
        match join_all(sends).await.into_iter().find_map(Result::err) {
            Some(error) => Err(HandleError::Transient(format!(
                "cannot publish inventory events: {error}"
            ))),
            None => Ok(()),
        }
    }

    /// Gives rejected orders' units back to the gateway. Idempotent per order.
    /// A rejected duplicate's user already holds another order: the buyers
    /// entry is pointed back at that order, not removed, so the user stays
    /// blocked from buying a second unit.
    async fn release_rejected(&self, decisions: &[Decision<'_>]) -> Result<(), HandleError> {
        let releases = decisions
            .iter()
            .filter(|d| matches!(d.outcome, Outcome::Rejected(_)))
            .map(|d| {
                let mut redis = self.redis.clone();
                let o = d.order;
                let duplicate =
                    matches!(d.outcome, Outcome::Rejected(RejectReason::DuplicateBuyer));
                async move {
                    let holder = match duplicate {
                        true => persistence::reservation::holder(&self.db, &o.sale_id, &o.user_id)
                            .await
                            .map_err(HandleError::from)?,
                        false => None,
                    };
                    stock::release_keeping(
                        &mut redis,
                        &o.sale_id,
                        &o.user_id,
                        &o.order_id,
                        o.quantity,
                        holder.as_deref(),
                    )
                    .await
                    .map_err(|error| {
                        HandleError::Transient(format!(
                            "cannot release reservations in Redis: {error}"
                        ))
                    })
                }
                .instrument(d.span.clone())
            });
        match join_all(releases).await.into_iter().find_map(Result::err) {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// A mismatched redelivery is about the message; database errors classify
/// themselves (an outage is transient).
fn handle_error(error: ReserveError) -> HandleError {
    match error {
        ReserveError::Db(e) => HandleError::from(e),
        mismatch @ ReserveError::Mismatch(_) => HandleError::Permanent(mismatch.to_string()),
    }
}
