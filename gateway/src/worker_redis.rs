//! One Redis connection per HTTP worker thread, for the purchase path.
//!
//! Why: a `Conn` runs its I/O in a task on the runtime that
//! created it. The shared one lives on the main runtime, so every purchase
//! crossed threads twice (worker -> connection task -> worker), which the
//! gateway's profile showed as scheduler and futex time in the kernel. A
//! connection made on first use inside a worker's own runtime keeps that
//! round trip on the worker's thread. If it cannot be made, the shared
//! connection serves, so a purchase never waits for more than one attempt.
use std::cell::RefCell;

use seckill_common::redis_conn::Conn;

use seckill_common::redis_conn;

use crate::state::AppState;

thread_local! {
    static CONNECTION: RefCell<Option<Conn>> = const { RefCell::new(None) };
}

/// This worker's connection, made now if it has none yet.
pub async fn connection(state: &AppState) -> Conn {
    if let Some(mine) = CONNECTION.with(|c| c.borrow().clone()) {
        return mine;
    }
    let made = tokio::time::timeout(
        state.redis_timeout,
        redis_conn::connect(&state.redis_settings),
    )
    .await;
    match made {
        Ok(Ok(mine)) => {
            CONNECTION.with(|c| *c.borrow_mut() = Some(mine.clone()));
            mine
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "cannot open this worker's Redis connection; using the shared one");
            state.redis.clone()
        }
        Err(_) => state.redis.clone(),
    }
}
