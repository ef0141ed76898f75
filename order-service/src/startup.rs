//! Wires the service together: database, topics, consumer, HTTP server, and
//! the one shutdown signal they all watch.
use std::future::Future;
use std::net::TcpListener;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;

use seckill_common::consumer::BatchConsumer;
use seckill_common::kafka::{self, EventProducer};
use seckill_common::retry::Backoff;
use seckill_common::shutdown::Shutdown;
use seckill_common::{db, http};

use crate::configuration::Settings;
use crate::consumer::OrderHandler;
use crate::persistence;
use crate::routes::{self, AppState};

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
        let db = until_shutdown(&shutdown, connect(&settings)).await?;
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
        let state = AppState {
            db: db.clone(),
            producer: producer.clone(),
            db_timeout: Duration::from_millis(
                settings.database.connect_timeout_ms + settings.database.statement_timeout_ms,
            ),
        };
        let server = run_server(listener, state, &settings)?;

        let topics = settings.kafka.topics();
        let consumer = kafka::consumer(&settings.kafka, &settings.consumer_group)
            .context("cannot create the Kafka consumer")?;
        rdkafka::consumer::Consumer::subscribe(&consumer, &[topics.inventory_events.as_str()])
            .context("cannot subscribe to the inventory events")?;
        let batch_consumer = BatchConsumer {
            consumer,
            handler: OrderHandler {
                db,
                producer: producer.clone(),
                topic: topics.order_events,
            },
            producer: producer.clone(),
            settings: settings.kafka.clone(),
            observer: (),
        };
        let consumer = tokio::spawn(batch_consumer.run(shutdown.clone()));

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
) -> anyhow::Result<Server> {
    let state = web::Data::new(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(http::path_config())
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
