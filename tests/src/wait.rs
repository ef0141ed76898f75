//! Polling with a deadline: tests never sleep a guessed time.
use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns `Some`, or panics after `limit`.
pub async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let every = Duration::from_millis(50);
    poll_until(limit, every, || {
        let next = check();
        async move { next.await.ok_or(()) }
    })
    .await
    .unwrap_or_else(|()| panic!("timed out after {limit:?} waiting for {what}"))
}

/// Polls `check` every `every` until it returns `Ok`; after `limit`, returns
/// its last `Err`, so the caller can fail with what it saw. The one place
/// tests wait: every other wait is built on this.
pub async fn poll_until<T, E, F, Fut>(
    limit: Duration,
    every: Duration,
    mut check: F,
) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// Runs blocking work (stopping a process, running a tool) from an async
/// test without stalling the runtime's other tasks.
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Asserts an API answer is the documented error: `status` and
/// `{"error":{"code": code}}`, printing the body when it is not.
#[track_caller]
pub fn assert_error(status: u16, body: &serde_json::Value, expected_status: u16, code: &str) {
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (expected_status, Some(code)),
        "{body}"
    );
}
