//! The gateway's typed settings: defaults, then `SECKILL_CONFIG` file, then
//! `SECKILL_*` environment variables; validated before anything starts.
use crate::breaker::BreakerSettings;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use seckill_common::settings::{
    self, invalid, HttpSettings, KafkaSettings, RedisSettings, Secret, SettingsError,
};
use seckill_common::transport::{Bus, StreamsSettings, Transport};

use crate::client_ip::TrustedProxies;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct Settings {
    pub http: HttpSettings,
    pub redis: RedisSettings,
    /// `kafka` (the default) or `redis-streams` (`SECKILL_TRANSPORT`).
    pub transport: Transport,
    /// Topic names, batching and attempts (both transports); the broker
    /// (Kafka only).
    pub kafka: KafkaSettings,
    /// The Redis Streams mode's knobs.
    pub streams: StreamsSettings,
    /// HS256 secret for user JWTs (`SECKILL_JWT_SECRET`).
    pub jwt_secret: Secret,
    /// Bearer token for `/api/v1/admin/*` (`SECKILL_ADMIN_TOKEN`).
    pub admin_token: Secret,
    /// Presented to inventory-service and order-service on `/internal/...`
    /// (at least 16 bytes; no default: see `seckill_common::internal_auth`).
    pub internal_token: Secret,
    /// Allowed clock skew for `exp`/`nbf`, in seconds.
    pub jwt_leeway_secs: u64,
    /// Base URL of inventory-service's internal API (sale creation).
    pub inventory_url: String,
    /// Base URL of order-service's internal API (order status).
    pub order_url: String,
    /// Timeout of one internal HTTP call; retried with backoff.
    #[serde(
        rename = "upstream_timeout_ms",
        with = "seckill_common::settings::millis"
    )]
    pub upstream_timeout: Duration,
    pub rate_limit: RateLimitSettings,
    /// Largest accepted request body, in bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Requests in flight across the process; beyond it, 503 at once.
    pub max_in_flight: usize,
    /// How long a sold-out answer is served from memory without asking Redis.
    /// Short, so stock that comes back is sold again quickly.
    #[serde(
        rename = "sold_out_cache_ms",
        with = "seckill_common::settings::millis"
    )]
    pub sold_out_cache: Duration,
    /// Whole-request deadline, body read included (actix's own
    /// `client_request_timeout` covers only the head): a slow or stuck
    /// request answers 503 instead of holding an in-flight slot. Above the
    /// produce timeout, so it never cuts a purchase between Redis and Kafka.
    #[serde(
        rename = "request_timeout_ms",
        with = "seckill_common::settings::millis"
    )]
    pub request_timeout: Duration,
    /// Lifetime of a purchase token (anti-bot step), in seconds.
    pub purchase_token_ttl_secs: u64,
    /// How long before a sale starts its purchase tokens are handed out.
    pub purchase_token_lead_secs: u64,
    /// How long the gateway keeps producing an order whose first produce
    /// had no answer (outcome unknown, 504 `order_outcome_unknown`), until
    /// the broker acknowledges it. This plus `kafka.produce_timeout_ms` is
    /// inventory-service's `reconcile.gateway_produce_window`, which its
    /// re-warm delay and orphan grace period must cover.
    #[serde(
        rename = "unknown_outcome_resolve_ms",
        with = "seckill_common::settings::millis"
    )]
    pub unknown_outcome_resolve: Duration,
    /// Accept the published development secrets (the defaults of
    /// `jwt_secret` and `admin_token`). Off unless set: a deployment that
    /// forgot its secrets fails to start instead of running on public ones.
    pub dev_mode: bool,
    /// `POST /api/v1/dev/sign-in`: a user token for any name, no password,
    /// for the storefront on a development machine. Only with `dev_mode`;
    /// in production the shop's identity provider issues the tokens.
    pub dev_sign_in: bool,
    /// The read path's cache (`crate::catalog`).
    pub read_cache: ReadCacheSettings,
    /// The circuit breakers on Redis, inventory-service and order-service.
    pub breaker: BreakerSettings,
}

/// The read path's cache in each gateway (`crate::catalog`). `fresh_ms` is
/// the documented bound on how far a sale's answer (its `stock_remaining`
/// above all) may lag Redis.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct ReadCacheSettings {
    /// A sale's answer lives at most this long, less a random part of up to
    /// `jitter_percent`, so entries filled together expire apart.
    #[serde(rename = "fresh_ms", with = "seckill_common::settings::millis")]
    pub fresh: Duration,
    pub jitter_percent: u8,
    /// How long an unknown sale id is answered 404 without asking again.
    #[serde(rename = "negative_ms", with = "seckill_common::settings::millis")]
    pub negative: Duration,
    /// How long a sale's last good answer is kept to serve, marked stale,
    /// while Redis or inventory-service is unavailable.
    #[serde(rename = "stale_for_ms", with = "seckill_common::settings::millis")]
    pub stale_for: Duration,
    /// How long the list of sales lives, and how often the warmer refills it
    /// and every upcoming or active sale.
    #[serde(rename = "list_ms", with = "seckill_common::settings::millis")]
    pub list: Duration,
    /// How long an ended sale stays in the list.
    pub ended_visible_secs: u32,
    /// Sales starting within this many seconds (and active ones) are kept
    /// warm: refreshed before their entry expires.
    pub warm_ahead_secs: u32,
    /// Sales (and unknown ids) held at most.
    pub capacity: u64,
}

impl Default for ReadCacheSettings {
    fn default() -> Self {
        Self {
            fresh: Duration::from_millis(250),
            jitter_percent: 20,
            negative: Duration::from_millis(5_000),
            stale_for: Duration::from_secs(600),
            list: Duration::from_millis(1_000),
            ended_visible_secs: 3_600,
            warm_ahead_secs: 900,
            capacity: 100_000,
        }
    }
}

impl ReadCacheSettings {
    /// `base` less a random part of up to `jitter_percent`.
    pub fn jittered(&self, base: Duration) -> Duration {
        let cut = f64::from(self.jitter_percent) / 100.0 * rand::random::<f64>();
        base.mul_f64(1.0 - cut)
    }

    pub fn warm_ahead(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::from(self.warm_ahead_secs))
    }

    pub fn ended_visible(&self) -> chrono::Duration {
        chrono::Duration::seconds(i64::from(self.ended_visible_secs))
    }

    fn validate(&self) -> Result<(), String> {
        if self.fresh.is_zero() || self.fresh > Duration::from_secs(10) {
            return Err("read_cache.fresh_ms must be 1 to 10000".into());
        }
        if self.jitter_percent > 50 {
            return Err("read_cache.jitter_percent must be at most 50".into());
        }
        if self.negative.is_zero() || self.list.is_zero() || self.capacity == 0 {
            return Err("read_cache.negative_ms, list_ms and capacity must be above 0".into());
        }
        Ok(())
    }
}

/// The defaults of the two secrets: published in this repository, so valid
/// only with `dev_mode`.
pub const DEV_JWT_SECRET: &str = "dev-only-jwt-secret-change-me";
pub const DEV_ADMIN_TOKEN: &str = "dev-only-admin-token-change-me";

/// governor quotas. A burst allowance equals one second of the rate.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct RateLimitSettings {
    pub global_per_second: u32,
    pub per_user_per_second: u32,
    pub per_ip_per_second: u32,
    /// Comma-separated addresses or CIDR ranges of the proxies in front of
    /// the gateway (ingress controller, load balancer), whose
    /// `X-Forwarded-For` names the client. Empty: the TCP peer is the client.
    pub trusted_proxies: TrustedProxies,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            global_per_second: 50_000,
            per_user_per_second: 20,
            per_ip_per_second: 2_000,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            http: HttpSettings::with_port(8080),
            redis: RedisSettings::default(),
            transport: Transport::default(),
            kafka: KafkaSettings::default(),
            streams: StreamsSettings::default(),
            jwt_secret: Secret::from(DEV_JWT_SECRET),
            admin_token: Secret::from(DEV_ADMIN_TOKEN),
            internal_token: Secret::from(""),
            jwt_leeway_secs: 5,
            inventory_url: "http://127.0.0.1:8081".into(),
            order_url: "http://127.0.0.1:8082".into(),
            upstream_timeout: Duration::from_millis(2_000),
            rate_limit: RateLimitSettings::default(),
            max_body_bytes: 4 * 1024,
            max_in_flight: 4_096,
            sold_out_cache: Duration::from_millis(200),
            request_timeout: Duration::from_millis(10_000),
            purchase_token_ttl_secs: 30,
            purchase_token_lead_secs: 60,
            unknown_outcome_resolve: Duration::from_millis(10_000),
            dev_mode: false,
            dev_sign_in: false,
            read_cache: ReadCacheSettings::default(),
            breaker: BreakerSettings::default(),
        }
    }
}

impl Settings {
    pub fn load() -> Result<Self, SettingsError> {
        let s: Self = settings::load()?;
        s.validate()?;
        Ok(s)
    }

    /// The transport, as `seckill_common::service::Core` takes it.
    pub fn bus(&self) -> Bus<'_> {
        Bus {
            transport: self.transport,
            kafka: &self.kafka,
            streams: &self.streams,
            redis: &self.redis,
        }
    }

    pub fn validate(&self) -> Result<(), SettingsError> {
        self.kafka.validate()?;
        self.bus().validate()?;
        self.read_cache.validate().map_err(invalid)?;
        self.breaker.validate().map_err(invalid)?;
        if self.jwt_secret.expose().len() < 16 {
            return Err(invalid("jwt_secret must be at least 16 bytes"));
        }
        if self.admin_token.expose().len() < 16 {
            return Err(invalid("admin_token must be at least 16 bytes"));
        }
        let r = &self.rate_limit;
        if r.global_per_second == 0 || r.per_user_per_second == 0 || r.per_ip_per_second == 0 {
            return Err(invalid("rate limits must be positive"));
        }
        if self.max_body_bytes == 0 || self.max_in_flight == 0 {
            return Err(invalid("max_body_bytes and max_in_flight must be positive"));
        }
        if self.request_timeout <= self.kafka.produce_timeout {
            return Err(invalid(
                "request_timeout_ms must exceed kafka.produce_timeout_ms",
            ));
        }
        if self.unknown_outcome_resolve < self.kafka.produce_timeout {
            return Err(invalid(
                "unknown_outcome_resolve_ms must be at least kafka.produce_timeout_ms",
            ));
        }
        if self.purchase_token_ttl_secs == 0 {
            return Err(invalid("purchase_token_ttl_secs must be positive"));
        }
        for url in [&self.inventory_url, &self.order_url] {
            if !url.starts_with("http://") && !url.starts_with("https://") {
                return Err(invalid(format!("{url} is not an http(s) URL")));
            }
        }
        Ok(())
    }

    /// What serving needs besides valid settings (not `migrate`-like
    /// subcommands): the internal token, and no published secret outside
    /// dev mode.
    pub fn check_secrets(&self) -> Result<(), SettingsError> {
        settings::require_secret("internal_token", &self.internal_token)?;
        let published = self.jwt_secret.expose() == DEV_JWT_SECRET
            || self.admin_token.expose() == DEV_ADMIN_TOKEN;
        if self.dev_sign_in && !self.dev_mode {
            return Err(invalid(
                "dev_sign_in hands a token to anyone who asks: it needs SECKILL_DEV_MODE=true, \
                 which is for development machines only",
            ));
        }
        if published && !self.dev_mode {
            return Err(invalid(
                "jwt_secret and admin_token must be set: the development defaults are \
                 published (set SECKILL_DEV_MODE=true to use them on a development machine)",
            ));
        }
        Ok(())
    }
}

/// The `SECKILL_*` variables the gateway reads.
pub fn env_var_names() -> Vec<String> {
    settings::env_var_names(&Settings::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_secrets_are_refused_outside_dev_mode() {
        let with_internal = || Settings {
            internal_token: Secret::from("an-internal-token-of-length"),
            ..Settings::default()
        };
        let published = with_internal();
        assert!(published.validate().is_ok());
        assert!(published.check_secrets().is_err());
        assert!(
            Settings::default().check_secrets().is_err(),
            "no internal token"
        );
        let dev = Settings {
            dev_mode: true,
            ..with_internal()
        };
        assert!(dev.check_secrets().is_ok());
        let sign_in = Settings {
            dev_sign_in: true,
            ..with_internal()
        };
        let refused = sign_in
            .check_secrets()
            .expect_err("dev_sign_in without dev_mode");
        assert!(refused.to_string().contains("dev_sign_in"), "{refused}");
        assert!(Settings {
            dev_mode: true,
            ..sign_in
        }
        .check_secrets()
        .is_ok());
        let real = Settings {
            jwt_secret: Secret::from("a-real-secret-of-some-length"),
            admin_token: Secret::from("a-real-admin-token-of-length"),
            ..with_internal()
        };
        assert!(real.check_secrets().is_ok());
    }
}
