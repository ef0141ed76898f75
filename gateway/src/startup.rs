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

use seckill_common::http::{json_config, path_config};
use seckill_common::kafka::{ensure_topics, EventProducer};
use seckill_common::retry::Backoff;
use seckill_common::settings::Topics;
use seckill_common::shutdown::Shutdown;

use crate::auth::{AdminToken, JwtKeys};
use crate::configuration::Settings;
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::sold_out::SoldOutCache;
use crate::upstream::Upstream;

/// Everything a request handler may touch; one per process, shared by all workers.
pub struct AppState {
    pub redis: ConnectionManager,
    pub producer: EventProducer,
    pub topics: Topics,
    pub sold_out: SoldOutCache,
    pub limits: Arc<Limits>,
    pub upstream: Upstream,
    pub inventory_url: String,
    pub order_url: String,
    pub metrics: Metrics,
    pub undo_backoff: Backoff,
}

pub struct Application {
    port: u16,
    server: Server,
    producer: EventProducer,
    shutdown: Shutdown,
}

impl Application {
    pub async fn build(settings: Settings, shutdown: Shutdown) -> anyhow::Result<Self> {
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
        let state = web::Data::new(AppState {
            redis,
            producer: producer.clone(),
            topics: settings.kafka.topics(),
            sold_out: SoldOutCache::new(Duration::from_millis(settings.sold_out_cache_ms)),
            limits,
            upstream: Upstream::new(Duration::from_millis(settings.upstream_timeout_ms))?,
            inventory_url: settings.inventory_url.trim_end_matches('/').to_owned(),
            order_url: settings.order_url.trim_end_matches('/').to_owned(),
            metrics: Metrics::new()?,
            undo_backoff: Backoff {
                initial: Duration::from_millis(20),
                max: Duration::from_millis(200),
                attempts: 4,
            },
        });
        let jwt = web::Data::new(JwtKeys::new(&settings.jwt_secret, settings.jwt_leeway_secs));
        let admin = web::Data::new(AdminToken(settings.admin_token.clone()));

        let listener = TcpListener::bind((settings.http.host.as_str(), settings.http.port))
            .with_context(|| {
                format!("cannot bind {}:{}", settings.http.host, settings.http.port)
            })?;
        let port = listener.local_addr()?.port();
        let max_body = settings.max_body_bytes;
        let server = HttpServer::new(move || {
            App::new()
                .wrap_fn(|req, srv| {
                    // Admission before any work: global and per-IP rate, and
                    // the in-flight bound. The permit lives as long as the request.
                    let state = req.app_data::<web::Data<AppState>>().cloned();
                    let ip = req.peer_addr().map(|a| a.ip());
                    let admitted = state.map(|s| s.limits.admit(ip));
                    match admitted {
                        Some(Err(e)) => {
                            Either::Left(ready(Ok(req.into_response(e.error_response()))))
                        }
                        Some(Ok(permit)) => {
                            let fut = srv.call(req);
                            Either::Right(Box::pin(async move {
                                let res = fut.await;
                                drop(permit);
                                res
                            })
                                as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>)
                        }
                        None => Either::Right(Box::pin(srv.call(req))
                            as std::pin::Pin<Box<dyn std::future::Future<Output = _>>>),
                    }
                })
                .wrap(tracing_actix_web::TracingLogger::default())
                .app_data(state.clone())
                .app_data(jwt.clone())
                .app_data(admin.clone())
                .app_data(json_config(max_body))
                .app_data(path_config())
                .configure(crate::routes::configure)
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
