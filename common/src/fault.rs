//! Fault injection for the consumer loop's tests. TEST-ONLY.
//!
//! Compiled in always, so the tests exercise the real binaries, but inert
//! unless the environment asks for it. Never set these in a deployment.
//!
//! * `SECKILL_FAULT__BATCH_DELAY_MS=N`: every batch waits N ms after it was
//!   read and before it is handled, so a test can `kill -9` the process
//!   while the batch is delivered and not acknowledged.
//! * `SECKILL_FAULT__ABORT_ON_USER=U`: the process aborts when a batch holds
//!   an `OrderRequested` of user `U`: a poison message that kills its consumer.
//! * `SECKILL_FAULT__MARK_WARM_DELAY_MS=N`: inventory-service waits N ms
//!   between finding every sale in Redis and marking Redis warm, so a test
//!   can empty Redis in between.
//! * `SECKILL_FAULT__FENCE_DELAY_MS=N`: inventory-service waits N ms after
//!   the first deletion of a fence (see `reconcile::fence`), so a test can
//!   buy while a fence is half done.
use std::sync::LazyLock;
use std::time::Duration;

use crate::events::Event;

/// A delay hook's setting: `var` as milliseconds, when set.
fn delay_from(var: &str) -> Option<Duration> {
    std::env::var(var)
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
}

/// Sleeps `delay`, if the hook is enabled, saying so in the log.
async fn hold(delay: Option<Duration>, hook: &str, what: &str) {
    if let Some(delay) = delay {
        tracing::warn!(?delay, hook, "fault hook: {what}");
        tokio::time::sleep(delay).await;
    }
}

static BATCH_DELAY: LazyLock<Option<Duration>> =
    LazyLock::new(|| delay_from("SECKILL_FAULT__BATCH_DELAY_MS"));

static ABORT_ON_USER: LazyLock<Option<String>> =
    LazyLock::new(|| std::env::var("SECKILL_FAULT__ABORT_ON_USER").ok());

static MARK_WARM_DELAY: LazyLock<Option<Duration>> =
    LazyLock::new(|| delay_from("SECKILL_FAULT__MARK_WARM_DELAY_MS"));

static FENCE_DELAY: LazyLock<Option<Duration>> =
    LazyLock::new(|| delay_from("SECKILL_FAULT__FENCE_DELAY_MS"));

/// Between the two deletions of a fence, if enabled.
pub async fn inside_fence() {
    hold(
        *FENCE_DELAY,
        "SECKILL_FAULT__FENCE_DELAY_MS",
        "holding a fence half done",
    )
    .await;
}

/// Before the warm marker is set, if enabled.
pub async fn before_mark_warm() {
    hold(
        *MARK_WARM_DELAY,
        "SECKILL_FAULT__MARK_WARM_DELAY_MS",
        "holding the warm marker",
    )
    .await;
}

/// Runs the enabled hooks for a batch (its events) about to be handled.
pub async fn before_batch<'a>(mut events: impl Iterator<Item = &'a Event>) {
    if let Some(user) = ABORT_ON_USER.as_deref() {
        let poison = events.any(
            |event| matches!(event, Event::OrderRequested(r) if r.order.user_id.as_str() == user),
        );
        if poison {
            tracing::error!(user, "fault hook SECKILL_FAULT__ABORT_ON_USER: aborting");
            std::process::abort();
        }
    }
    hold(
        *BATCH_DELAY,
        "SECKILL_FAULT__BATCH_DELAY_MS",
        "holding the batch",
    )
    .await;
}
