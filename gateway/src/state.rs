//! What a request handler may touch: one per process, shared by all workers.
use std::sync::Arc;
use std::time::Duration;

use seckill_common::redis_conn::Conn;

use seckill_common::kafka::EventProducer;
use seckill_common::settings::{RedisSettings, Topics};
use seckill_common::tasks::Tasks;

use crate::breaker::Breakers;
use crate::catalog::{CachedReads, Catalog};
use crate::clients::{InventoryClient, OrderClient};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::purchase_token::PurchaseTokens;
use crate::sold_out::{SoldOutAnswer, SoldOutCache};
use crate::storefront::Storefront;

pub struct AppState {
    /// Shared by every worker; the purchase script uses `worker_redis`.
    pub redis: Conn,
    /// For the per-worker connections (see `worker_redis`).
    pub redis_settings: RedisSettings,
    /// Kafka: produces `OrderRequested` after the script. `None` in the
    /// Redis Streams mode, where the purchase script appends it itself.
    pub producer: Option<EventProducer>,
    pub topics: Topics,
    pub sold_out: SoldOutCache,
    /// The front door's answer, rendered once, and its request metrics
    /// (it answers before the metrics middleware runs; see `front_door`).
    pub sold_out_answer: SoldOutAnswer,
    /// What the front door needs to answer reads from the read cache.
    pub cached_reads: CachedReads,
    pub limits: Arc<Limits>,
    pub inventory: InventoryClient,
    /// The read path: sales and the list, cached in front of Redis and
    /// inventory-service.
    pub catalog: Arc<Catalog>,
    pub orders: OrderClient,
    pub metrics: Metrics,
    /// Redis, inventory-service, order-service: fail fast while one is down.
    pub breakers: Breakers,
    pub purchase_tokens: PurchaseTokens,
    /// Purchases past their script, undos and produces being resolved run
    /// here, so that shutdown waits for them (`seckill_common::tasks`).
    pub tasks: Tasks,
    /// Bound on one Redis call made while serving a request.
    pub redis_timeout: Duration,
    /// How long an order of unknown outcome is produced again (`enqueue`).
    pub unknown_outcome_resolve: Duration,
    /// The whole-request deadline (also bounds the front door's body read).
    pub request_timeout: Duration,
    pub max_body_bytes: usize,
    /// The storefront's and the console's files, answered at the front door.
    pub storefront: Storefront,
}

impl AppState {
    /// The Redis Streams mode: the purchase script appends the order itself.
    pub fn script_enqueues(&self) -> bool {
        self.producer.is_none()
    }

    /// One Redis call made while serving a request: bounded by
    /// `redis_timeout`, and refused at once while the Redis breaker is open.
    pub async fn redis_call<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, seckill_common::http::ApiError> {
        let bounded = seckill_common::redis_conn::within(self.redis_timeout, call);
        self.breakers
            .redis
            .call(bounded, |_| true)
            .await?
            .map_err(stock_store_down)
    }
}

/// The answer when Redis failed a request's call: 503, worth a retry.
pub fn stock_store_down(error: redis::RedisError) -> seckill_common::http::ApiError {
    tracing::warn!(%error, "redis unavailable");
    seckill_common::http::ApiError::unavailable("stock store unavailable")
}
