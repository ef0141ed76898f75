//! Capped exponential backoff with jitter, for every call across a process boundary.
use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub attempts: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
            attempts: 4,
        }
    }
}

impl Backoff {
    /// Delay before retry number `attempt` (0-based): doubles each time, capped,
    /// with up to 50% jitter so that many clients do not retry in lock-step.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.initial.saturating_mul(1u32 << attempt.min(16));
        let capped = exp.min(self.max);
        let jitter = rand::thread_rng().gen_range(0.5..=1.0);
        capped.mul_f64(jitter)
    }

    /// Runs `op` until it succeeds, `retryable` says no, or the attempts run out.
    pub async fn retry<T, E, F, Fut>(
        &self,
        mut op: F,
        retryable: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt + 1 < self.attempts && retryable(&e) => {
                    tokio::time::sleep(self.delay(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_grows_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
            attempts: 5,
        };
        assert!(b.delay(0) <= Duration::from_millis(100));
        assert!(b.delay(10) <= Duration::from_millis(400));
        assert!(b.delay(10) >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn retries_a_bounded_number_of_times() {
        let b = Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(1),
            attempts: 3,
        };
        let mut calls = 0;
        let r: Result<(), &str> = b
            .retry(
                || {
                    calls += 1;
                    async { Err("x") }
                },
                |_| true,
            )
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 3);
    }
}
