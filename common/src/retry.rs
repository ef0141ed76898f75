//! Capped exponential backoff with jitter, for every call across a process
//! boundary. The schedule and the retry loop are `backon`'s; this module
//! only names the project's policies and keeps one meaning for their fields.
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder, Retryable};

/// A retry policy: the first delay, the cap, and how many attempts in all
/// (`u32::MAX` for loops that retry until shut down).
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
    /// While a dependency is down: from 100 ms up to 5 s apart, for as long
    /// as the loop runs (consumers, the outbox relay).
    pub const OUTAGE: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(5),
        attempts: u32::MAX,
    };

    /// The delays between attempts, doubling and capped. backon's jitter adds
    /// up to 100 %, so the schedule is built on half the bounds: each delay
    /// lies between half and all of `initial · 2ⁿ` capped at `max`, and many
    /// clients do not retry in lock-step.
    pub fn delays(&self) -> ExponentialBackoff {
        let builder = ExponentialBuilder::default()
            .with_min_delay(self.initial / 2)
            .with_max_delay(self.max / 2)
            .with_factor(2.0)
            .with_jitter();
        let builder = match self.attempts {
            u32::MAX => builder.without_max_times(),
            n => builder.with_max_times(n.saturating_sub(1) as usize),
        };
        builder.build()
    }

    /// Delay before retry number `attempt` (0-based), for loops that count
    /// their own failures and start again from zero after a success.
    pub fn delay(&self, attempt: u32) -> Duration {
        Backoff {
            attempts: u32::MAX,
            ..*self
        }
        .delays()
        .nth(attempt.min(32) as usize)
        .unwrap_or(self.max)
    }

    /// Runs `op` until it succeeds, `retryable` says no, or the attempts run out.
    pub async fn retry<T, E, F, Fut>(&self, op: F, retryable: impl Fn(&E) -> bool) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        op.retry(*self)
            .sleep(tokio::time::sleep)
            .when(retryable)
            .await
    }
}

impl BackoffBuilder for Backoff {
    type Backoff = ExponentialBackoff;

    fn build(self) -> Self::Backoff {
        self.delays()
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
        for _ in 0..100 {
            assert!(b.delay(0) <= Duration::from_millis(100));
            assert!(b.delay(0) >= Duration::from_millis(50));
            assert!(b.delay(10) <= Duration::from_millis(400));
            assert!(b.delay(10) >= Duration::from_millis(200));
        }
    }

    #[test]
    fn a_bounded_policy_yields_one_delay_fewer_than_its_attempts() {
        assert_eq!(Backoff::default().delays().count(), 3);
        assert!(Backoff::OUTAGE.delays().nth(1_000).is_some());
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

    #[tokio::test]
    async fn stops_at_an_error_that_is_not_retryable() {
        let mut calls = 0;
        let r: Result<(), &str> = Backoff::default()
            .retry(
                || {
                    calls += 1;
                    async { Err("fatal") }
                },
                |e| *e != "fatal",
            )
            .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }
}
