//! Wiring: connect everything, then run the Kafka consumer and the HTTP
//! server side by side until shutdown.
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};
use anyhow::Context;
use rdkafka::consumer::Consumer;
use sea_orm::DatabaseConnection;
use tokio::task::JoinHandle;

use seckill_common::consumer::BatchConsumer;
use seckill_common::internal_auth::{self, InternalToken};
use seckill_common::kafka::{self, EventProducer};
use seckill_common::metrics::{self, ConsumerMetrics, DbMetrics, HttpMetrics, Registry};
use seckill_common::retry::Backoff;
use seckill_common::settings::{HttpSettings, KafkaSettings};
use seckill_common::shutdown::Shutdown;
use seckill_common::{db, http, redis_conn};

use crate::compensation::CompensationHandler;
use crate::configuration::Settings;
use crate::consumer::InventoryHandler;
use crate::persistence;
use crate::reconcile::{ReconcileMetrics, Reconciler};
use crate::routes::{self, AppState};
use crate::stock_gauge::StockGauge;
use crate::sweep::Sweeper;

/// Admin requests are small; anything bigger is a mistake or an attack.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// How long shutdown waits for the producer's last acknowledgements.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Application {
    port: u16,
    server: Server,
    consumer: JoinHandle<()>,
    /// The order-events consumer that returns stock (see `compensation`).
    compensation: JoinHandle<()>,
    producer: EventProducer,
    shutdown: Shutdown,
}

impl Application {
    /// Connects to every dependency and starts serving; fails fast if one is missing.
    pub async fn build(settings: Settings, shutdown: Shutdown) -> anyhow::Result<Self> {
        settings.check_secrets()?;
        let registry = Registry::new();
        let mut db = db::connect(&settings.database)
            .await
            .context("cannot connect to PostgreSQL")?;
        DbMetrics::new(&registry)?.instrument(&mut db);
        if settings.database.migrate_on_start {
            migrate(&db).await?;
        }
        let redis = redis_conn::connect(&settings.redis)
            .await
            .context("cannot connect to Redis")?;

        let producer =
            EventProducer::new(&settings.kafka).context("cannot create the Kafka producer")?;
        ensure_topics(&settings.kafka).await?;
        let topics = settings.kafka.topics();
        let consumer = kafka::consumer(&settings.kafka, &settings.consumer_group)
            .context("cannot create the Kafka consumer")?;
        consumer
            .subscribe(&[&topics.order_requested])
            .context("cannot subscribe")?;
        let compensation_consumer = kafka::consumer(&settings.kafka, &settings.compensation_group)
            .context("cannot create the compensation consumer")?;
        compensation_consumer
            .subscribe(&[&topics.order_events])
            .context("cannot subscribe to the order events")?;
        let reconcile_metrics = ReconcileMetrics::new()?;
        reconcile_metrics.register(&registry)?;
        let reconciler = Arc::new(
            Reconciler::new(
                db.clone(),
                redis.clone(),
                &settings.kafka,
                &settings.consumer_group,
                settings.reconcile.clone(),
                reconcile_metrics,
            )
            .context("cannot create the reconciliation job")?,
        );

        let listener = TcpListener::bind((settings.http.host.as_str(), settings.http.port))
            .with_context(|| {
                format!("cannot bind {}:{}", settings.http.host, settings.http.port)
            })?;
        let port = listener.local_addr()?.port();
        let state = AppState {
            db: db.clone(),
            redis: redis.clone(),
            producer: producer.clone(),
            reconciler: reconciler.clone(),
        };
        let token = InternalToken::new(&settings.internal_token);
        let metrics_apart = metrics::serve_apart(&settings.http, &registry, &shutdown)
            .context("cannot serve metrics on their port")?;
        let server = http_server(
            listener,
            state,
            &settings.http,
            token,
            &registry,
            metrics_apart,
        )?;
        let handle = server.handle();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            stop.wait().await;
            handle.stop(true).await;
        });

        let consumer_metrics = ConsumerMetrics::new(&registry)?;
        consumer_metrics.watch_lag(&consumer);
        consumer_metrics.watch_lag(&compensation_consumer);
        let consumer_metrics_for_compensation = consumer_metrics.clone();
        let (db_for_compensation, redis_for_compensation) = (db.clone(), redis.clone());
        StockGauge::new(&registry)?.spawn(db.clone(), shutdown.clone());
        let sweeper = Sweeper::new(
            db.clone(),
            redis.clone(),
            producer.clone(),
            &settings.kafka,
            &settings.compensation_group,
            settings.sweep.clone(),
            &registry,
        )?;
        tokio::spawn(sweeper.run(shutdown.clone()));
        let batch = BatchConsumer {
            consumer,
            handler: InventoryHandler {
                db,
                redis,
                producer: producer.clone(),
                topics,
            },
            producer: producer.clone(),
            settings: settings.kafka.clone(),
            observer: consumer_metrics,
        };
        let consumer = tokio::spawn(batch.run(shutdown.clone()));
        let compensation = tokio::spawn(
            BatchConsumer {
                consumer: compensation_consumer,
                handler: CompensationHandler {
                    db: db_for_compensation,
                    redis: redis_for_compensation,
                },
                producer: producer.clone(),
                settings: settings.kafka.clone(),
                observer: consumer_metrics_for_compensation,
            }
            .run(shutdown.clone()),
        );
        // A sale missing from Redis at start is warmed by the same guarded
        // path as one lost later (`Reconciler::rewarm_missing`): a restart,
        // rollout or scale-up while Redis is empty and orders are still in
        // Kafka must not warm from a database that has not counted them yet.
        if let Err(error) = reconciler.rewarm_missing().await {
            tracing::warn!(%error, "cannot check for sales missing from Redis yet; the periodic check retries");
        }
        tokio::spawn(reconciler.run(shutdown.clone()));
        tracing::info!(port, "inventory-service started");
        Ok(Self {
            port,
            server,
            consumer,
            compensation,
            producer,
            shutdown,
        })
    }

    /// The port actually bound (useful when configured as 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs until shutdown fires (or either half stops on its own, which then
    /// stops the other), then flushes the producer.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            mut server,
            mut consumer,
            compensation,
            producer,
            shutdown,
            ..
        } = self;
        let (served, consumed) = tokio::select! {
            served = &mut server => {
                shutdown.trigger();
                (served, consumer.await)
            }
            consumed = &mut consumer => {
                shutdown.trigger();
                (server.await, consumed)
            }
        };
        // Shutdown has fired: the compensation consumer finishes its batch and commits.
        if let Err(error) = compensation.await {
            tracing::error!(%error, "compensation consumer task failed");
        }
        let flushed = tokio::task::spawn_blocking(move || producer.flush(FLUSH_TIMEOUT)).await;
        if let Ok(Err(error)) = &flushed {
            tracing::warn!(%error, "producer flush incomplete");
        }
        served.context("HTTP server failed")?;
        consumed.context("consumer task failed")?;
        tracing::info!("inventory-service stopped");
        Ok(())
    }
}

fn http_server(
    listener: TcpListener,
    state: AppState,
    settings: &HttpSettings,
    token: InternalToken,
    registry: &Registry,
    metrics_apart: bool,
) -> anyhow::Result<Server> {
    let state = web::Data::new(state);
    let token = web::Data::new(token);
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
            .app_data(http::json_config(MAX_BODY_BYTES))
            .app_data(http::path_config())
            .configure(routes::configure)
            .default_service(web::to(http::not_found))
    })
    .workers(settings.workers())
    // Shutdown is ours to decide (see `Shutdown`), not actix's signal handler's.
    .disable_signals()
    .shutdown_timeout(settings.shutdown_timeout_secs)
    .listen(listener)?
    .run();
    Ok(server)
}

/// Applies migrations, retrying while the database is still starting.
pub async fn migrate(db: &DatabaseConnection) -> anyhow::Result<()> {
    let backoff = Backoff {
        initial: Duration::from_millis(200),
        max: Duration::from_secs(5),
        attempts: 10,
    };
    backoff
        .retry(|| persistence::migrate(db), db::is_transient)
        .await
        .context("migrations failed")
}

/// Creates the topics, retrying for a while: the broker may still be starting.
async fn ensure_topics(settings: &KafkaSettings) -> anyhow::Result<()> {
    let backoff = Backoff {
        initial: Duration::from_millis(250),
        max: Duration::from_secs(5),
        attempts: 10,
    };
    backoff
        .retry(
            || async {
                kafka::ensure_topics(settings)
                    .await
                    .inspect_err(|error| tracing::warn!(%error, "cannot create topics yet"))
            },
            |_| true,
        )
        .await
        .context("cannot create Kafka topics")
}
