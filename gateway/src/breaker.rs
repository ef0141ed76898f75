//! Circuit breakers on the gateway's calls to Redis, inventory-service and
//! order-service, on failsafe's state machine.
//!
//! Why: while a dependency is down, every request would otherwise wait out
//! its full timeout and hold an in-flight slot, so an outage of one
//! dependency fills the gateway and takes the healthy routes down with it.
//! After `breaker.failures` consecutive failures or timeouts a breaker
//! opens: calls fail at once with 503 and `Retry-After`. After
//! `breaker.cool_down_ms` it is half-open and lets `breaker.trial_calls`
//! calls through at a time; one success closes it, one failure opens it
//! again. Each change is a log line and the `seckill_breaker_state` gauge.
//!
//! A call whose lost answer is costly (a purchase: in the Streams mode the
//! buyer hears 504 "outcome unknown") is not itself the trial: with
//! [`Breaker::call_probed`] a half-open breaker first sends a probe that
//! changes nothing (a Redis PING), and the call goes out only if it answers.
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use failsafe::backoff::{self, Constant};
use failsafe::failure_policy::{consecutive_failures, ConsecutiveFailures};
use failsafe::{Config, Instrument, StateMachine};
use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};

use seckill_common::http::ApiError;

/// `breaker.*` in the gateway's settings; one set for every dependency.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(default)]
pub struct BreakerSettings {
    /// Consecutive failures (errors or timeouts) that open a breaker.
    pub failures: u32,
    /// How long an open breaker refuses calls before it tries again.
    #[serde(rename = "cool_down_ms", with = "seckill_common::settings::millis")]
    pub cool_down: Duration,
    /// Calls let through at a time while half-open.
    pub trial_calls: usize,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures: 5,
            cool_down: Duration::from_millis(2_000),
            trial_calls: 2,
        }
    }
}

impl BreakerSettings {
    pub fn validate(&self) -> Result<(), String> {
        if self.failures == 0 || self.trial_calls == 0 || self.cool_down.is_zero() {
            return Err("breaker.failures, trial_calls and cool_down_ms must be above 0".into());
        }
        Ok(())
    }
}

/// A call refused because its dependency's breaker is open.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{dependency} is unavailable (circuit open)")]
pub struct Open {
    pub dependency: &'static str,
    pub retry_after: Duration,
}

impl From<Open> for ApiError {
    fn from(open: Open) -> Self {
        ApiError::unavailable(open.to_string())
            .with_retry_after(open.retry_after.as_secs_f64().ceil() as u64)
    }
}

/// The breaker's state as a gauge value.
const CLOSED: i64 = 0;
const HALF_OPEN: i64 = 1;
const OPEN: i64 = 2;

/// Metrics of every breaker, labelled by dependency.
#[derive(Clone)]
pub struct BreakerMetrics {
    state: IntGaugeVec,
    rejected: IntCounterVec,
    probes: IntCounterVec,
}

impl BreakerMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let state = IntGaugeVec::new(
            Opts::new(
                "seckill_breaker_state",
                "Circuit breaker state by dependency: 0 closed, 1 half-open, 2 open",
            ),
            &["dependency"],
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "seckill_breaker_rejected_total",
                "Calls refused at once because the dependency's breaker was open",
            ),
            &["dependency"],
        )?;
        let probes = IntCounterVec::new(
            Opts::new(
                "seckill_breaker_probes_total",
                "Probes a half-open breaker sent before letting a call through, by outcome (ok, failed)",
            ),
            &["dependency", "outcome"],
        )?;
        registry.register(Box::new(state.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(probes.clone()))?;
        Ok(Self {
            state,
            rejected,
            probes,
        })
    }
}

/// Tells the log and the metrics about every change of state.
struct Watch {
    dependency: &'static str,
    metrics: BreakerMetrics,
    half_open: Arc<AtomicBool>,
}

impl Watch {
    fn set(&self, state: i64) {
        self.half_open.store(state == HALF_OPEN, Ordering::Release);
        self.metrics
            .state
            .with_label_values(&[self.dependency])
            .set(state);
    }
}

impl Instrument for Watch {
    fn on_call_rejected(&self) {
        self.metrics
            .rejected
            .with_label_values(&[self.dependency])
            .inc();
    }

    fn on_open(&self) {
        self.set(OPEN);
        tracing::warn!(
            dependency = self.dependency,
            "circuit breaker opened: failing fast"
        );
    }

    fn on_half_open(&self) {
        self.set(HALF_OPEN);
        tracing::info!(
            dependency = self.dependency,
            "circuit breaker half-open: trying"
        );
    }

    fn on_closed(&self) {
        self.set(CLOSED);
        tracing::info!(dependency = self.dependency, "circuit breaker closed");
    }
}

pub struct Breaker {
    dependency: &'static str,
    machine: StateMachine<ConsecutiveFailures<Constant>, Watch>,
    half_open: Arc<AtomicBool>,
    trials: AtomicUsize,
    settings: BreakerSettings,
    metrics: BreakerMetrics,
}

impl Breaker {
    pub fn new(
        dependency: &'static str,
        settings: BreakerSettings,
        metrics: &BreakerMetrics,
    ) -> Arc<Self> {
        let half_open = Arc::new(AtomicBool::new(false));
        let watch = Watch {
            dependency,
            metrics: metrics.clone(),
            half_open: half_open.clone(),
        };
        watch.set(CLOSED);
        let machine = Config::new()
            .failure_policy(consecutive_failures(
                settings.failures,
                backoff::constant(settings.cool_down),
            ))
            .instrument(watch)
            .build();
        Arc::new(Self {
            dependency,
            machine,
            half_open,
            trials: AtomicUsize::new(0),
            settings,
            metrics: metrics.clone(),
        })
    }

    /// Runs `call` unless the breaker is open; `failed` says which errors
    /// count against the dependency (a 404 does not; a timeout does).
    pub async fn call<T, E>(
        &self,
        call: impl Future<Output = Result<T, E>>,
        failed: impl FnOnce(&E) -> bool,
    ) -> Result<Result<T, E>, Open> {
        let no_probe: Option<std::future::Ready<Result<(), ()>>> = None;
        self.call_probed(call, no_probe, failed).await
    }

    /// As [`Self::call`], but while half-open `probe` (if any) goes first:
    /// if it fails, the breaker opens again and `call` is refused unsent, as
    /// if the breaker had been open all along. Closed, no probe is sent.
    pub async fn call_probed<T, E, P>(
        &self,
        call: impl Future<Output = Result<T, E>>,
        probe: Option<impl Future<Output = Result<(), P>>>,
        failed: impl FnOnce(&E) -> bool,
    ) -> Result<Result<T, E>, Open> {
        if !self.machine.is_call_permitted() {
            return Err(self.open());
        }
        let _trial = match self.half_open.load(Ordering::Acquire) {
            true => {
                let trial = self.trial().ok_or_else(|| self.open())?;
                let Some(probe) = probe else {
                    return Ok(self.settle(call.await, failed));
                };
                let answered = probe.await.is_ok();
                self.metrics
                    .probes
                    .with_label_values(&[self.dependency, if answered { "ok" } else { "failed" }])
                    .inc();
                if !answered {
                    self.machine.on_error();
                    return Err(self.open());
                }
                Some(trial)
            }
            false => None,
        };
        Ok(self.settle(call.await, failed))
    }

    /// Tells the state machine how a call that went out ended.
    fn settle<T, E>(&self, result: Result<T, E>, failed: impl FnOnce(&E) -> bool) -> Result<T, E> {
        match &result {
            Err(e) if failed(e) => self.machine.on_error(),
            _ => self.machine.on_success(),
        }
        result
    }

    /// One of the `trial_calls` slots of the half-open state.
    fn trial(&self) -> Option<Trial<'_>> {
        let taken = self.trials.fetch_add(1, Ordering::AcqRel);
        let trial = Trial(&self.trials);
        (taken < self.settings.trial_calls).then_some(trial)
    }

    fn open(&self) -> Open {
        Open {
            dependency: self.dependency,
            retry_after: self.settings.cool_down,
        }
    }
}

/// Gives its half-open slot back when the trial call ends, however it ends.
struct Trial<'a>(&'a AtomicUsize);

impl Drop for Trial<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The gateway's three breakers.
#[derive(Clone)]
pub struct Breakers {
    pub redis: Arc<Breaker>,
    pub inventory: Arc<Breaker>,
    pub orders: Arc<Breaker>,
}

impl Breakers {
    pub fn new(settings: BreakerSettings, registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = BreakerMetrics::new(registry)?;
        Ok(Self {
            redis: Breaker::new("redis", settings, &metrics),
            inventory: Breaker::new("inventory-service", settings, &metrics),
            orders: Breaker::new("order-service", settings, &metrics),
        })
    }
}
