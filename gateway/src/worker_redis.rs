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
use std::time::Duration;

use seckill_common::redis_conn::{self, Conn};
use seckill_common::settings::RedisSettings;

use crate::state::AppState;

thread_local! {
    static CONNECTION: RefCell<Option<Conn>> = const { RefCell::new(None) };
}

/// This worker's connection, made now if it has none yet; the shared one if
/// it cannot be made.
pub async fn connection(state: &AppState) -> Conn {
    match this_thread(&state.redis_settings, state.redis_timeout).await {
        Ok(mine) => mine,
        Err(error) => {
            tracing::warn!(%error, "cannot open this worker's Redis connection; using the shared one");
            state.redis.clone()
        }
    }
}

/// This thread's connection to `settings`, made now (within `timeout`) if it
/// has none yet. Also serves the benchmark's purchase floor, which must pay
/// exactly what the purchase path pays.
pub async fn this_thread(settings: &RedisSettings, timeout: Duration) -> redis::RedisResult<Conn> {
    if let Some(mine) = CONNECTION.with(|c| c.borrow().clone()) {
        return Ok(mine);
    }
    let mine = redis_conn::within(timeout, redis_conn::connect(settings)).await?;
    CONNECTION.with(|c| *c.borrow_mut() = Some(mine.clone()));
    Ok(mine)
}
