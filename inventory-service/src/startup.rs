//! Wiring: connect everything, then run the Kafka consumers, the
//! reconciliation and sweep jobs and the HTTP server side by side until
//! shutdown. What every service shares is in `seckill_common::service`.
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::web;
use anyhow::Context;
use rdkafka::consumer::Consumer;

use seckill_common::consumer::BatchConsumer;
use seckill_common::internal_auth::InternalToken;
use seckill_common::kafka::{self, EventProducer};
use seckill_common::metrics::{self, ConsumerMetrics, DbMetrics, HttpMetrics};
use seckill_common::redis_conn;
use seckill_common::service::{self, InternalApi, Probes};
use seckill_common::shutdown::Shutdown;
use seckill_common::tasks::Tasks;

use crate::compensation::CompensationHandler;
use crate::configuration::Settings;
use crate::consumer::InventoryHandler;
use crate::persistence::{Migrator, MIGRATION_LOCK_KEY};
use crate::reconcile::{ReconcileMetrics, Reconciler};
use crate::routes::{self, AppState};
use crate::stock_gauge::StockGauge;
use crate::sweep::Sweeper;

/// Admin requests are small; anything bigger is a mistake or an attack.
const MAX_BODY_BYTES: usize = 16 * 1024;

pub struct Application {
    server: Server,
    tasks: Tasks,
    producer: EventProducer,
    shutdown: Shutdown,
}

impl Application {
    /// Connects to every dependency (retrying while they start) and starts serving.
    pub async fn build(settings: Settings, shutdown: Shutdown) -> anyhow::Result<Self> {
        settings.check_secrets()?;
        let tasks = Tasks::new();
        let registry = metrics::registry()?;
        let mut db = service::database::<Migrator>(
            &settings.database,
            settings.database.migrate_on_start,
            MIGRATION_LOCK_KEY,
            &shutdown,
        )
        .await?;
        DbMetrics::new(&registry)?.instrument(&mut db);
        let redis = service::dependency(
            &shutdown,
            "cannot connect to Redis",
            || redis_conn::connect(&settings.redis),
            |_| true,
        )
        .await?;
        let producer =
            EventProducer::new(&settings.kafka).context("cannot create the Kafka producer")?;
        service::dependency(
            &shutdown,
            "cannot create the Kafka topics",
            || kafka::ensure_topics(&settings.kafka),
            |_| true,
        )
        .await?;

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

        let listener = service::bind(&settings.http)?;
        let port = listener.local_addr()?.port();
        let state = web::Data::new(AppState {
            db: db.clone(),
            redis: redis.clone(),
            reconciler: reconciler.clone(),
        });
        let api = InternalApi {
            token: InternalToken::new(&settings.internal_token),
            metrics: HttpMetrics::new(&registry)?,
            metrics_here: metrics::serve_apart(&settings.http, &registry, &tasks, &shutdown)
                .context("cannot serve metrics on their port")?,
            probes: Probes::new(producer.clone())
                .with_db(db.clone())
                .with_redis(redis.clone()),
            max_body_bytes: MAX_BODY_BYTES,
        };
        let server = service::serve_internal(
            listener,
            &settings.http,
            api,
            &tasks,
            &shutdown,
            move |cfg| {
                cfg.app_data(state.clone());
                routes::configure(cfg);
            },
        )?;

        let consumer_metrics = ConsumerMetrics::new(&registry)?;
        consumer_metrics.watch_lag(&consumer);
        consumer_metrics.watch_lag(&compensation_consumer);
        let gauge = StockGauge::new(&registry)?;
        tasks.spawn("stock-gauge", gauge.run(db.clone(), shutdown.clone()));
        let sweeper = Sweeper::new(
            db.clone(),
            redis.clone(),
            producer.clone(),
            &settings.kafka,
            &settings.compensation_group,
            settings.sweep.clone(),
            &registry,
        )?;
        tasks.spawn("sweeper", sweeper.run(shutdown.clone()));
        let reservations = BatchConsumer {
            consumer,
            handler: InventoryHandler {
                db: db.clone(),
                redis: redis.clone(),
                producer: producer.clone(),
                topics,
            },
            producer: producer.clone(),
            settings: settings.kafka.clone(),
            observer: consumer_metrics.clone(),
        };
        tasks.spawn_essential("consumer", &shutdown, reservations.run(shutdown.clone()));
        let compensation = BatchConsumer {
            consumer: compensation_consumer,
            handler: CompensationHandler { db, redis },
            producer: producer.clone(),
            settings: settings.kafka.clone(),
            observer: consumer_metrics,
        };
        tasks.spawn_essential(
            "compensation",
            &shutdown,
            compensation.run(shutdown.clone()),
        );
        // A sale missing from Redis at start is warmed by the same guarded
        // path as one lost later (`Reconciler::rewarm_missing`): a restart,
        // rollout or scale-up while Redis is empty and orders are still in
        // Kafka must not warm from a database that has not counted them yet.
        if let Err(error) = reconciler.rewarm_missing().await {
            tracing::warn!(%error, "cannot check for sales missing from Redis yet; the periodic check retries");
        }
        tasks.spawn("reconciler", reconciler.run(shutdown.clone()));
        tracing::info!(port, "inventory-service started");
        Ok(Self {
            server,
            tasks,
            producer,
            shutdown,
        })
    }

    /// Serves until shutdown; returns once HTTP has drained, both consumers
    /// have committed their last batch, the periodic jobs have ended their
    /// round, and the producer has flushed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        service::run_until_stopped(
            "inventory-service",
            self.server,
            self.tasks,
            self.shutdown,
            self.producer,
        )
        .await
        .context("HTTP server failed")
    }
}
