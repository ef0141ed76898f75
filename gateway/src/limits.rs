//! Admission control: governor rate limits (global, per client IP, per user)
//! and a bound on requests in flight, so a burst is refused fast (429/503)
//! instead of queueing unbounded work; and the whole-request deadline.
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::{web, Error, ResponseError};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use seckill_common::domain::UserId;
use seckill_common::http::{ApiError, HEALTH_PATH, METRICS_PATH, READY_PATH};

use crate::client_ip::TrustedProxies;
use crate::configuration::RateLimitSettings;

/// What the admission middleware needs, as its own app data.
pub struct Admission {
    pub limits: Arc<Limits>,
    /// Whose `X-Forwarded-For` names the client (see `client_ip`).
    pub trusted_proxies: TrustedProxies,
    pub request_timeout: Duration,
}

/// Health, readiness and metrics: for the platform, not for the crowd.
/// Never shed: a liveness probe refused in a burst would have Kubernetes
/// restart a busy gateway.
fn is_operational(path: &str) -> bool {
    [HEALTH_PATH, READY_PATH, METRICS_PATH].contains(&path)
}

/// Admission before any work: the global and per-IP rates, and the
/// in-flight bound, whose permit lives as long as the request. Then the
/// request's deadline: a purchase past its script runs in a task of its own
/// (see `orders::place_order`), so the deadline never strands a reservation.
pub async fn admit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let admission = match req.app_data::<web::Data<Admission>>() {
        Some(admission) if !is_operational(req.path()) => admission.clone(),
        _ => {
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
    };
    let peer = req.peer_addr().map(|a| a.ip());
    let client = admission.trusted_proxies.client(peer, req.headers());
    let permit = match admission.limits.admit(client) {
        Ok(permit) => permit,
        Err(refused) => {
            let response = refused.error_response();
            return Ok(req.into_response(response).map_into_right_body());
        }
    };
    let answered = tokio::time::timeout(admission.request_timeout, next.call(req)).await;
    drop(permit);
    match answered {
        Ok(response) => response.map(ServiceResponse::map_into_left_body),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            "the request took too long",
        )
        .with_retry_after(1)
        .into()),
    }
}

type Direct = RateLimiter<NotKeyed, InMemoryState, DefaultClock>;
type Keyed<K> = RateLimiter<K, DefaultKeyedStateStore<K>, DefaultClock>;

pub struct Limits {
    global: Direct,
    per_ip: Keyed<IpAddr>,
    per_user: Keyed<UserId>,
    in_flight: Arc<Semaphore>,
    clock: DefaultClock,
}

fn quota(per_second: u32) -> Quota {
    Quota::per_second(NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN))
}

impl Limits {
    pub fn new(rates: &RateLimitSettings, max_in_flight: usize) -> Self {
        Self {
            global: RateLimiter::direct(quota(rates.global_per_second)),
            per_ip: RateLimiter::keyed(quota(rates.per_ip_per_second)),
            per_user: RateLimiter::keyed(quota(rates.per_user_per_second)),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            clock: DefaultClock::default(),
        }
    }

    fn too_many(
        &self,
        scope: &str,
        not_until: NotUntil<<DefaultClock as Clock>::Instant>,
    ) -> ApiError {
        let wait = not_until.wait_time_from(self.clock.now());
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("{scope} rate limit exceeded"),
        )
        .with_retry_after(wait.as_secs_f64().ceil() as u64)
    }

    /// Checked for every request before any work is done.
    pub fn admit(&self, ip: Option<IpAddr>) -> Result<OwnedSemaphorePermit, ApiError> {
        self.global
            .check()
            .map_err(|n| self.too_many("global", n))?;
        if let Some(ip) = ip {
            self.per_ip
                .check_key(&ip)
                .map_err(|n| self.too_many("per-client", n))?;
        }
        self.in_flight.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "too many requests in flight",
            )
            .with_retry_after(1)
        })
    }

    /// Checked once the user is known.
    pub fn check_user(&self, user: &UserId) -> Result<(), ApiError> {
        self.per_user
            .check_key(user)
            .map_err(|n| self.too_many("per-user", n))
    }

    /// Forgets idle keys, so the per-IP and per-user maps do not grow forever.
    pub async fn housekeeping(self: Arc<Self>, shutdown: seckill_common::shutdown::Shutdown) {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tick.tick() => {
                    self.per_ip.retain_recent();
                    self.per_user.retain_recent();
                    self.per_ip.shrink_to_fit();
                    self.per_user.shrink_to_fit();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_user_limit_answers_429_with_retry_after() {
        let limits = Limits::new(
            &RateLimitSettings {
                global_per_second: 1000,
                per_user_per_second: 2,
                per_ip_per_second: 1000,
                ..Default::default()
            },
            10,
        );
        let user = UserId::parse("u").unwrap();
        assert!(limits.check_user(&user).is_ok());
        assert!(limits.check_user(&user).is_ok());
        let err = limits.check_user(&user).unwrap_err();
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(err.retry_after.unwrap() >= 1);
        assert!(limits.check_user(&UserId::parse("other").unwrap()).is_ok());
    }

    #[test]
    fn in_flight_is_bounded() {
        let limits = Limits::new(&RateLimitSettings::default(), 1);
        let first = limits.admit(None).unwrap();
        assert_eq!(limits.admit(None).unwrap_err().code, "overloaded");
        drop(first);
        assert!(limits.admit(None).is_ok());
    }
}
