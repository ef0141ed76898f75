//! Fault injection for the fault tests (`tests/tests/faults.rs`). TEST-ONLY.
//!
//! Compiled in always, so the tests exercise the real binary, but inert unless
//! the environment asks for it. Never set these variables in a deployment.
//!
//! * `SECKILL_FAULT__CRASH_AFTER_RESERVE=1`: the gateway aborts the process
//!   right after the purchase script accepted and before producing the
//!   order: the window in which only reconciliation can return the stock.
use std::sync::LazyLock;

static CRASH_AFTER_RESERVE: LazyLock<bool> =
    LazyLock::new(|| std::env::var("SECKILL_FAULT__CRASH_AFTER_RESERVE").is_ok_and(|v| v == "1"));

/// Dies like a `kill -9` between the Lua step and the produce, if enabled.
pub fn crash_after_reserve() {
    if *CRASH_AFTER_RESERVE {
        tracing::error!(
            "fault hook SECKILL_FAULT__CRASH_AFTER_RESERVE: aborting after the reservation"
        );
        std::process::abort();
    }
}
