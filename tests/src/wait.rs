//! Polling with a deadline: tests never sleep a guessed time.
use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it returns `Some`, or panics after `limit`.
pub async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
