//! Builds the gateway from its settings (zero2prod's `Application`), so that
//! `main` and the tests start exactly the same thing, on any port.
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::{Server, Service};
use actix_web::{web, App, HttpServer, ResponseError};
use anyhow::Context;
use futures::future::{ready, Either};
use redis::aio::ConnectionManager;

use actix_web::http::StatusCode;
use seckill_common::http::{json_config, path_config, ApiError};
use seckill_common::internal_auth::InternalToken;
use seckill_common::kafka::{ensure_topics, EventProducer};
use seckill_common::metrics::HttpMetrics;
use seckill_common::retry::Backoff;
use seckill_common::settings::Topics;
use seckill_common::shutdown::Shutdown;

use crate::auth::{AdminToken, JwtKeys};
use crate::configuration::Settings;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::purchase_token::PurchaseTokens;
use crate::sold_out::SoldOutCache;
use crate::upstream::Upstream;

/// Everything a request handler may touch; one per process, shared by all workers.
pub struct AppState {
    /// Shared by every worker; the purchase script uses `worker_redis`.
    pub redis: ConnectionManager,
    /// For the per-worker connections (see `worker_redis`).
    pub redis_settings: seckill_common::settings::RedisSettings,
    pub producer: EventProducer,
    pub topics: Topics,
    pub sold_out: SoldOutCache,
    pub limits: Arc<Limits>,
    pub upstream: Upstream,
    pub inventory_url: String,
    pub order_url: String,
    pub metrics: Metrics,
    pub purchase_tokens: PurchaseTokens,
    /// Bound on one Redis call made while serving a request.
    pub redis_timeout: Duration,
    /// How long an order of unknown outcome is produced again (`enqueue`).
    pub unknown_outcome_resolve: Duration,
    /// The whole-request deadline (also bounds the front door's body read).
    pub request_timeout: Duration,
    /// The front door's answer, rendered once, and its request metrics
    /// (it answers before the metrics middleware runs; see `front_door`).
    pub sold_out_answer: crate::front_door::SoldOutAnswer,
    pub max_body_bytes: usize,
    /// Whose `X-Forwarded-For` names the client (see `client_ip`).
    pub trusted_proxies: crate::client_ip::TrustedProxies,
}

/// Health, readiness and metrics: for the platform, not for the crowd.
fn is_operational(path: &str) -> bool {
    use seckill_common::http::{HEALTH_PATH, METRICS_PATH, READY_PATH};
    [HEALTH_PATH, READY_PATH, METRICS_PATH].contains(&path)
}

pub struct Application {
    port: u16,
    server: Server,
    producer: EventProducer,
    shutdown: Shutdown,
}

impl Application {
    pub async fn build(settings: Settings, shutdown: Shutdown) -> anyhow::Result<Self> {
        settings.check_secrets()?;
        let startup = Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(3),
            attempts: 10,
        };
        let redis = startup
            .retry(
                || seckill_common::redis_conn::connect(&settings.redis),
                |_| true,
            )
            .await
            .context("cannot connect to Redis")?;
        let producer =
            EventProducer::new(&settings.kafka).context("cannot create the Kafka producer")?;
        startup
            .retry(|| ensure_topics(&settings.kafka), |_| true)
            .await
            .context("cannot create the Kafka topics")?;

        let limits = Arc::new(Limits::new(&settings.rate_limit, settings.max_in_flight));
        limits.spawn_housekeeping(shutdown.clone());
        let metrics = Metrics::new()?;
        let registry = metrics.registry.clone();
        let http_metrics = HttpMetrics::new(&registry)?;
        let state = web::Data::new(AppState {
            redis,
            redis_settings: settings.redis.clone(),
            producer: producer.clone(),
            topics: settings.kafka.topics(),
            sold_out: SoldOutCache::new(Duration::from_millis(settings.sold_out_cache_ms)),
            limits,
            upstream: Upstream::new(
                Duration::from_millis(settings.upstream_timeout_ms),
                &InternalToken::new(&settings.internal_token),
            )?,
            inventory_url: settings.inventory_url.trim_end_matches('/').to_owned(),
            order_url: settings.order_url.trim_end_matches('/').to_owned(),
            metrics,
            redis_timeout: Duration::from_millis(settings.redis.response_timeout_ms),
            unknown_outcome_resolve: Duration::from_millis(settings.unknown_outcome_resolve_ms),
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
            purchase_tokens: PurchaseTokens::new(
                settings.jwt_secret.clone(),
                settings.purchase_token_ttl_secs,
                settings.purchase_token_lead_secs,
            ),
            sold_out_answer: crate::front_door::SoldOutAnswer::new(&http_metrics)?,
            max_body_bytes: settings.max_body_bytes,
            trusted_proxies: crate::client_ip::TrustedProxies::parse(
                &settings.rate_limit.trusted_proxies,
            )
            .map_err(anyhow::Error::msg)?,
        });
        let jwt = web::Data::new(JwtKeys::new(
            &settings.jwt_secret,
            settings.jwt_leeway_secs,
        )?);
        let admin = web::Data::new(AdminToken(settings.admin_token.clone()));

        let listener = TcpListener::bind((settings.http.host.as_str(), settings.http.port))
            .with_context(|| {
                format!("cannot bind {}:{}", settings.http.host, settings.http.port)
            })?;
        let port = listener.local_addr()?.port();
        let metrics_apart =
            seckill_common::metrics::serve_apart(&settings.http, &registry, &shutdown)
                .context("cannot serve metrics on their port")?;
        let max_body = settings.max_body_bytes;
        let request_timeout = Duration::from_millis(settings.request_timeout_ms);
        let server = HttpServer::new(move || {
            App::new()
                .wrap_fn(move |req, srv| {
                    // Admission before any work: global and per-IP rate, and
                    // the in-flight bound. The permit lives as long as the request.
                    // Probes and scrapes are never shed: a liveness probe refused
                    // in a burst would have Kubernetes restart a busy gateway.
                    let state = req
                        .app_data::<web::Data<AppState>>()
                        .cloned()
                        .filter(|_| !is_operational(req.path()));
                    let peer = req.peer_addr().map(|a| a.ip());
                    let admitted = state.map(|s| {
                        s.limits
                            .admit(s.trusted_proxies.client(peer, req.headers()))
                    });
                    match admitted {
                        Some(Err(e)) => {
                            Either::Left(ready(Ok(req.into_response(e.error_response()))))
                        }
                        Some(Ok(permit)) => {
                            let fut = srv.call(req);
                            Either::Right(Box::pin(async move {
                                // A purchase past the Lua step runs in a task of
                                // its own (see `orders::place_order`), so this
                                // deadline never strands a reservation.
                                let res = match tokio::time::timeout(request_timeout, fut).await {
                                    Ok(res) => res,
                                    Err(_) => Err(ApiError::new(
                                        StatusCode::SERVICE_UNAVAILABLE,
                                        "request_timeout",
                                        "the request took too long",
                                    )
                                    .with_retry_after(1)
                                    .into()),
                                };
                                drop(permit);
                                res
                            })
                                as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>)
                        }
                        None => Either::Right(Box::pin(srv.call(req))
                            as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>),
                    }
                })
                .wrap(seckill_common::request_span::middleware())
                .wrap(http_metrics.clone())
                // Outermost: a known sold-out sale is answered before anything else.
                .wrap(actix_web::middleware::from_fn(
                    crate::front_door::answer_sold_out,
                ))
                .app_data(state.clone())
                .app_data(jwt.clone())
                .app_data(admin.clone())
                .app_data(json_config(max_body))
                .app_data(path_config())
                .configure(crate::routes::configure)
                .configure(seckill_common::metrics::endpoint_unless(
                    metrics_apart,
                    &registry,
                ))
                .default_service(web::to(seckill_common::http::not_found))
        })
        .listen(listener)?
        .workers(settings.http.workers())
        .disable_signals()
        .shutdown_timeout(settings.http.shutdown_timeout_secs)
        .run();

        Ok(Self {
            port,
            server,
            producer,
            shutdown,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until shutdown fires; then stops accepting, finishes requests
    /// in flight, and flushes the producer so nothing acknowledged is lost.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            shutdown.wait().await;
            handle.stop(true).await;
        });
        let served = self.server.await;
        self.shutdown.trigger();
        let producer = self.producer.clone();
        tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await??;
        tracing::info!("gateway stopped");
        served.context("http server failed")
    }
}
