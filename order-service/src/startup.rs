//! Wires the service together: database, topics, consumer, HTTP server, and
//! the one shutdown signal they all watch.
use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;

use seckill_common::consumer::BatchConsumer;
use seckill_common::internal_auth::{self, InternalToken};
use seckill_common::kafka::{self, EventProducer};
use seckill_common::metrics::{self, ConsumerMetrics, DbMetrics, HttpMetrics, Registry};
use seckill_common::retry::Backoff;
use seckill_common::shutdown::Shutdown;
use seckill_common::{db, http};

use crate::configuration::Settings;
use crate::consumer::OrderHandler;
use crate::expiry::ExpiryWorker;
use crate::lifecycle::Lifecycle;
use crate::outbox::Relay;
use crate::payment::{FakePaymentProvider, Payments};
use crate::persistence;
use crate::routes::{self, AppState};

/// Internal requests are tiny JSON objects.
const MAX_BODY_BYTES: usize = 4 * 1024;
/// How long the producer may take to deliver what is still queued at exit.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Dependencies may still be starting when we do (compose, Kubernetes):
/// retry ten times (a minute or two, as each attempt has its own timeout),
/// then fail and let the supervisor restart us.
const STARTUP_RETRY: Backoff = Backoff {
    initial: Duration::from_millis(250),
    max: Duration::from_secs(4),
    attempts: 10,
};

pub struct Application {
    port: u16,
    server: Server,
    consumer: JoinHandle<()>,
    producer: EventProducer,
    shutdown: Shutdown,
}

impl Application {
    pub async fn build(settings: Settings, shutdown: Shutdown) -> anyhow::Result<Self> {
        settings.check_secrets()?;
        let registry = Registry::new();
        let mut db = until_shutdown(&shutdown, connect(&settings)).await?;
        DbMetrics::new(&registry)?.instrument(&mut db);
        if settings.database.migrate_on_start {
            persistence::migrate(&db)
                .await
                .context("cannot migrate the orders database")?;
        }
        let producer =
            EventProducer::new(&settings.kafka).context("cannot create the Kafka producer")?;
        let topics_ready = STARTUP_RETRY.retry(
            || async {
                kafka::ensure_topics(&settings.kafka).await.inspect_err(
                    |error| tracing::warn!(%error, "cannot ensure topics yet; retrying"),
                )
            },
            |_| true,
        );
        until_shutdown(&shutdown, async {
            topics_ready.await.context("cannot create the Kafka topics")
        })
        .await?;

        // Bind first: a taken port fails start-up before the consumer joins its group.
        let listener = TcpListener::bind((settings.http.host.as_str(), settings.http.port))
            .with_context(|| {
                format!("cannot bind {}:{}", settings.http.host, settings.http.port)
            })?;
        let port = listener.local_addr()?.port();
        let outbox_wake = Arc::new(tokio::sync::Notify::new());
        let lifecycle = Arc::new(Lifecycle {
            db: db.clone(),
            payments: Payments::new(
                Box::new(FakePaymentProvider::from_settings(&settings.payment)),
                Duration::from_millis(settings.payment.timeout_ms),
            ),
            topic: settings.kafka.topics().order_events,
            wake: outbox_wake.clone(),
        });
        let state = AppState {
            db: db.clone(),
            producer: producer.clone(),
            db_timeout: Duration::from_millis(
                settings.database.connect_timeout_ms + settings.database.statement_timeout_ms,
            ),
            lifecycle: lifecycle.clone(),
        };
        let metrics_apart = metrics::serve_apart(&settings.http, &registry, &shutdown)
            .context("cannot serve metrics on their port")?;
        let server = run_server(listener, state, &settings, &registry, metrics_apart)?;

        let topics = settings.kafka.topics();
        let consumer = kafka::consumer(&settings.kafka, &settings.consumer_group)
            .context("cannot create the Kafka consumer")?;
        rdkafka::consumer::Consumer::subscribe(&consumer, &[topics.inventory_events.as_str()])
            .context("cannot subscribe to the inventory events")?;
        let consumer_metrics = ConsumerMetrics::new(&registry)?;
        consumer_metrics.watch_lag(&consumer);
        let batch_consumer = BatchConsumer {
            consumer,
            handler: OrderHandler {
                db,
                producer: producer.clone(),
                topic: topics.order_events,
            },
            producer: producer.clone(),
            settings: settings.kafka.clone(),
            observer: consumer_metrics,
        };
        let consumer = tokio::spawn(batch_consumer.run(shutdown.clone()));
        // Both stop at shutdown between two rounds; whatever they had not
        // done yet is in PostgreSQL, for the next start or another replica.
        tokio::spawn(
            Relay {
                db: lifecycle.db.clone(),
                producer: producer.clone(),
                wake: outbox_wake,
                interval: Duration::from_millis(settings.outbox.interval_ms),
                batch: settings.outbox.batch,
            }
            .run(shutdown.clone()),
        );
        tokio::spawn(
            ExpiryWorker {
                lifecycle,
                interval: Duration::from_millis(settings.expiry.interval_ms),
                batch: settings.expiry.batch,
                resolve_payments_after: Duration::from_millis(settings.payment.resolve_after_ms),
            }
            .run(shutdown.clone()),
        );

        let handle = server.handle();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            stop.wait().await;
            handle.stop(true).await;
        });
        tracing::info!(port, "order-service started");
        Ok(Self {
            port,
            server,
            consumer,
            producer,
            shutdown,
        })
    }

    /// The bound port (the real one when the settings asked for port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until shutdown: then HTTP drains, the consumer finishes its
    /// batch and commits, and the producer flushes. If either half stops on
    /// its own, the other is stopped too, so the process never runs half-alive.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            server,
            consumer,
            producer,
            shutdown,
            ..
        } = self;
        let server = async {
            let result = server.await;
            shutdown.trigger();
            result
        };
        let consumer = async {
            let result = consumer.await;
            shutdown.trigger();
            result
        };
        let (served, consumed) = tokio::join!(server, consumer);
        let flushed = tokio::task::spawn_blocking(move || producer.flush(FLUSH_TIMEOUT)).await;
        served.context("HTTP server failed")?;
        consumed.context("consumer task failed")?;
        flushed
            .context("producer flush task failed")?
            .context("producer flush failed")?;
        tracing::info!("order-service stopped");
        Ok(())
    }
}

/// A SIGTERM while a dependency is still missing ends start-up at once,
/// instead of after the remaining retries.
async fn until_shutdown<T>(
    shutdown: &Shutdown,
    step: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        result = step => result,
        _ = shutdown.wait() => anyhow::bail!("shutdown requested during start-up"),
    }
}

async fn connect(settings: &Settings) -> anyhow::Result<DatabaseConnection> {
    STARTUP_RETRY
        .retry(
            || async {
                db::connect(&settings.database).await.inspect_err(
                    |error| tracing::warn!(%error, "cannot connect to the orders database yet"),
                )
            },
            db::is_transient,
        )
        .await
        .context("cannot connect to the orders database")
}

fn run_server(
    listener: TcpListener,
    state: AppState,
    settings: &Settings,
    registry: &Registry,
    metrics_apart: bool,
) -> anyhow::Result<Server> {
    let state = web::Data::new(state);
    let token = web::Data::new(InternalToken::new(&settings.internal_token));
    let http_metrics = HttpMetrics::new(registry)?;
    let registry = registry.clone();
    let server = HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(internal_auth::require))
            .wrap(seckill_common::request_span::middleware())
            .wrap(http_metrics.clone())
            .configure(metrics::endpoint_unless(metrics_apart, &registry))
            .app_data(state.clone())
            .app_data(token.clone())
            .app_data(http::path_config())
            .app_data(http::json_config(MAX_BODY_BYTES))
            .configure(routes::configure)
            .default_service(web::to(http::not_found))
    })
    .workers(settings.http.workers())
    .shutdown_timeout(settings.http.shutdown_timeout_secs)
    // Shutdown is ours to decide (see `Shutdown`), not actix's.
    .disable_signals()
    .listen(listener)?
    .run();
    Ok(server)
}
