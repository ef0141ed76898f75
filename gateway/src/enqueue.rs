//! After the script took the stock: produce `OrderRequested`, and decide
//! what the buyer hears when the broker's answer does not come.
//!
//! With the idempotent producer a failed send is usually not a failure but
//! an *unknown*: the message may be in the log, unacknowledged (a timeout, a
//! connection lost after the request left). Undoing the reservation then
//! would let Redis sell a unit PostgreSQL will also give to this order. So:
//! - acknowledged: 202;
//! - certainly not written (refused before it left this process): the
//!   reservation is voided and returned, 503 "nothing was reserved, retry";
//! - anything else: the reservation is kept, the *same* event (same event
//!   id, same key) is produced again in the background until the broker
//!   acknowledges it (consumers are idempotent on the order id, so a second
//!   copy is harmless), and the buyer hears 504 `order_outcome_unknown` with
//!   the order id, which `GET /api/v1/orders/{id}` follows from `queued` to
//!   `created`.
//!
//! In the Redis Streams mode none of this happens: the purchase script
//! appended the order itself, so a 202 follows its answer, and a lost
//! answer is decided by [`settle`].
//!
//! The resolver gives up after `kafka.unknown_outcome_resolve_ms`; a unit
//! still held by an order that never arrived is then returned by
//! inventory-service's reconciliation (orphan buyers, after its grace period).
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use chrono::Utc;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use seckill_common::redis_conn::Conn;

use seckill_common::domain::{OrderId, Quantity, SaleId, UserId};
use seckill_common::events::{Envelope, Event, OrderRef, OrderRequested};
use seckill_common::http::ApiError;
use seckill_common::kafka::ProduceError;
use seckill_common::retry::Backoff;
use seckill_common::{redis_conn, stock};

use crate::state::AppState;

/// The purchase as the consumers will see it.
pub struct Order<'a> {
    pub sale: &'a SaleId,
    pub user: &'a UserId,
    pub quantity: Quantity,
    pub id: &'a OrderId,
}

/// The event the consumers see for `order`.
pub fn order_requested(order: &Order<'_>) -> Envelope {
    Envelope::new(Event::OrderRequested(OrderRequested {
        order: OrderRef {
            order_id: order.id.clone(),
            sale_id: order.sale.clone(),
            user_id: order.user.clone(),
            quantity: order.quantity,
        },
        requested_at: Utc::now(),
    }))
}

/// Produces the order and waits for the broker (see the module docs). In
/// the Redis Streams mode the purchase script already appended it: nothing
/// is left to do.
pub async fn enqueue(state: &AppState, order: Order<'_>) -> Result<(), ApiError> {
    let Some(producer) = &state.producer else {
        return Ok(());
    };
    let envelope = order_requested(&order);
    let key = order.id.to_string();
    let started = Instant::now();
    let produced = producer
        .send(&state.topics.order_requested, &key, &envelope)
        .await;
    state.metrics.produce(started.elapsed(), produced.is_ok());
    let Err(error) = produced else { return Ok(()) };

    if certainly_not_written(&error) {
        tracing::error!(%error, order_id = %order.id, "enqueue refused; returning the reservation");
        undo(state, &order).await;
        return Err(ApiError::unavailable(
            "order queue unavailable, nothing was reserved; try again",
        ));
    }
    tracing::warn!(%error, order_id = %order.id,
        "the broker's answer did not come; keeping the reservation and producing again");
    let resolver = resolve(
        producer.clone(),
        state.topics.order_requested.clone(),
        key,
        envelope,
        state.unknown_outcome_resolve,
    );
    state.tasks.detach(resolver);
    Err(outcome_unknown(order.id))
}

/// The answer for a purchase whose order may or may not have been enqueued.
pub fn outcome_unknown(order: &OrderId) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "order_outcome_unknown",
        "your order could not be confirmed in time and may still go through: \
         follow it with GET /api/v1/orders/{order_id}; do not buy again",
    )
    .with_order_id(order.to_string())
}

/// Errors raised before the message left this process: nothing can be in the log.
fn certainly_not_written(error: &ProduceError) -> bool {
    use RDKafkaErrorCode as C;
    match error {
        ProduceError::Timeout(_) => false,
        ProduceError::Kafka(KafkaError::MessageProduction(code)) => matches!(
            code,
            C::QueueFull
                | C::MessageSizeTooLarge
                | C::InvalidMessageSize
                | C::UnknownTopic
                | C::UnknownPartition
                | C::InvalidArgument
        ),
        ProduceError::Kafka(_) => false,
    }
}

/// Produces the same event again until the broker acknowledges it, for at
/// most `bound`. Each attempt is itself bounded by the produce timeout.
async fn resolve(
    producer: seckill_common::kafka::EventProducer,
    topic: String,
    key: String,
    envelope: Envelope,
    bound: Duration,
) {
    let deadline = Instant::now() + bound;
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(2),
        attempts: u32::MAX,
    };
    let mut attempt = 0;
    while Instant::now() < deadline {
        match producer.send(&topic, &key, &envelope).await {
            Ok(_) => {
                tracing::info!(order_id = %key, attempt, "order of unknown outcome enqueued");
                return;
            }
            Err(error) => {
                tracing::warn!(%error, order_id = %key, attempt, "order still not acknowledged")
            }
        }
        tokio::time::sleep(backoff.delay(attempt)).await;
        attempt += 1;
    }
    tracing::error!(order_id = %key, "gave up enqueueing an order of unknown outcome; reconciliation returns its unit if it never arrives");
}

/// Streams mode: decides a purchase whose script answer was lost
/// (`purchase::settle`). Queued: the purchase stands (202). Voided: nothing
/// was reserved (503, retry). No answer either: the outcome is unknown
/// (504), and a background task settles it so that the buyer's
/// `GET /api/v1/orders/{id}` reads `queued` or `failed`.
pub async fn settle(state: &AppState, order: &Order<'_>) -> Result<(), ApiError> {
    let held = Held::of(order);
    match redis_conn::within(state.redis_timeout, held.settle(state.redis.clone())).await {
        Ok(true) => return Ok(()),
        Ok(false) => {
            return Err(ApiError::unavailable(
                "stock store unavailable, nothing was reserved; try again",
            ))
        }
        Err(error) => tracing::warn!(%error, order_id = %order.id,
            "could not settle the purchase yet; settling in the background"),
    }
    // If it never settles, the order stands exactly when its script ran
    // (the order is then in the stream): `queued` until it is created.
    in_background(
        state,
        held,
        "settle the purchase",
        |held, redis| async move { held.settle(redis).await },
    );
    Err(outcome_unknown(order.id))
}

/// Retries `call` on `held` in a background task that shutdown waits for:
/// from 200 ms apart up to 5 s, 60 times, each within the Redis timeout.
fn in_background<T, F, Fut>(state: &AppState, held: Held, what: &'static str, call: F)
where
    T: std::fmt::Debug + Send + 'static,
    F: Fn(Held, Conn) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = redis::RedisResult<T>> + Send + 'static,
{
    let later = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(5),
        attempts: 60,
    };
    let (redis, timeout) = (state.redis.clone(), state.redis_timeout);
    state.tasks.detach(async move {
        let attempt = || redis_conn::within(timeout, call(held.clone(), redis.clone()));
        match later.retry(attempt, |_| true).await {
            Ok(outcome) => {
                tracing::info!(order_id = %held.id, ?outcome, "done in the background: {what}")
            }
            Err(error) => tracing::error!(%error, order_id = %held.id, "gave up: {what}"),
        }
    });
}

/// A reservation to undo, owned so a background task can keep it.
#[derive(Clone)]
struct Held {
    sale: SaleId,
    user: UserId,
    id: OrderId,
    quantity: Quantity,
}

impl Held {
    fn of(order: &Order<'_>) -> Self {
        Self {
            sale: order.sale.clone(),
            user: order.user.clone(),
            id: order.id.clone(),
            quantity: order.quantity,
        }
    }

    async fn void(&self, mut redis: Conn) -> redis::RedisResult<bool> {
        stock::void(&mut redis, &self.sale, &self.user, &self.id, self.quantity).await
    }

    async fn settle(&self, mut redis: Conn) -> redis::RedisResult<bool> {
        crate::purchase::settle(&mut redis, &self.sale, &self.user, &self.id).await
    }
}

/// Voids the order and returns its units (`stock::void`): one attempt
/// within the Redis timeout, so the buyer's answer never waits long (Redis
/// may be the thing that is down); if it fails, a background task keeps
/// trying with backoff for a while, and reconciliation returns what is left.
pub async fn undo(state: &AppState, order: &Order<'_>) {
    let held = Held::of(order);
    match redis_conn::within(state.redis_timeout, held.void(state.redis.clone())).await {
        Ok(_) => {
            state.sold_out.clear(order.sale);
            return;
        }
        Err(error) => tracing::warn!(%error, order_id = %order.id,
            "could not undo the reservation yet; retrying in the background"),
    }
    // What is left after the last attempt, reconciliation returns.
    in_background(
        state,
        held,
        "undo the reservation",
        |held, redis| async move { held.void(redis).await },
    );
}
