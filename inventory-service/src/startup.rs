//! Wiring: connect everything, then run the Kafka consumers, the
//! reconciliation and sweep jobs and the HTTP server side by side until
//! shutdown. What every service shares is in `seckill_common::service`.
use std::sync::Arc;

use actix_web::web;
use anyhow::Context;

use seckill_common::consumer::BatchConsumer;
use seckill_common::metrics::ConsumerMetrics;
use seckill_common::service::{Core, Probes, Running};
use seckill_common::shutdown::Shutdown;
use seckill_common::transport::StreamNames;

use crate::compensation::CompensationHandler;
use crate::configuration::Settings;
use crate::consumer::InventoryHandler;
use crate::persistence::{Migrator, MIGRATION_LOCK_KEY};
use crate::reconcile::{ReconcileMetrics, Reconciler};
use crate::routes::{self, AppState};
use crate::sale_streams::SaleStreams;
use crate::stock_gauge::StockGauge;
use crate::sweep::Sweeper;

/// Admin requests are small; anything bigger is a mistake or an attack.
const MAX_BODY_BYTES: usize = 16 * 1024;

pub struct Application(Running);

impl Application {
    /// Connects to every dependency (retrying while they start) and starts serving.
    pub async fn build(settings: Settings, shutdown: Shutdown) -> anyhow::Result<Self> {
        settings.check_secrets()?;
        let core = Core::start(settings.bus(), shutdown).await?;
        let db = core
            .database::<Migrator>(&settings.database, MIGRATION_LOCK_KEY)
            .await?;
        let redis = core.redis(&settings.redis).await?;

        let (bus, topics) = (settings.bus(), settings.kafka.topics());
        // Streams mode: one order stream per sale (`sale_streams`).
        let sale_streams: Arc<dyn StreamNames> = Arc::new(SaleStreams {
            db: db.clone(),
            after_end: settings.reconcile.after_end,
        });
        let mut consumer = core
            .subscribe(
                bus,
                &settings.consumer_group,
                &topics.order_requested,
                Some(sale_streams.clone()),
            )
            .await?;
        let mut compensation_consumer = core
            .subscribe(
                bus,
                &settings.compensation_group,
                &topics.order_events,
                None,
            )
            .await?;
        let reconcile_metrics = ReconcileMetrics::new()?;
        reconcile_metrics.register(&core.registry)?;
        let reconciler = Arc::new(Reconciler::new(
            db.clone(),
            redis.clone(),
            core.catch_up(
                bus,
                &settings.consumer_group,
                &topics.order_requested,
                Some(sale_streams),
            )?,
            settings.reconcile.clone(),
            reconcile_metrics,
        ));

        let state = web::Data::new(AppState {
            db: db.clone(),
            redis: redis.clone(),
            reconciler: reconciler.clone(),
        });
        let probes = Probes::new(core.producer.clone())
            .with_db(db.clone())
            .with_redis(redis.clone());
        let server = core.serve_internal(
            &settings.http,
            &settings.internal_token,
            probes,
            MAX_BODY_BYTES,
            state,
            routes::configure,
        )?;

        let consumer_metrics = ConsumerMetrics::new(&core.registry)?;
        consumer_metrics.watch(&mut consumer);
        consumer_metrics.watch(&mut compensation_consumer);
        let gauge = StockGauge::new(&core.registry)?;
        core.tasks
            .spawn("stock-gauge", gauge.run(db.clone(), core.shutdown.clone()));
        let seen = [
            core.catch_up(
                bus,
                &settings.sweep.order_service_group,
                &topics.inventory_events,
                None,
            )?,
            core.catch_up(
                bus,
                &settings.compensation_group,
                &topics.order_events,
                None,
            )?,
        ];
        let sweeper = Sweeper::new(
            db.clone(),
            redis.clone(),
            core.producer.clone(),
            topics.clone(),
            seen,
            settings.sweep.clone(),
            &core.registry,
        )?;
        core.tasks
            .spawn("sweeper", sweeper.run(core.shutdown.clone()));
        let reservations = BatchConsumer {
            source: consumer,
            handler: InventoryHandler {
                db: db.clone(),
                redis: redis.clone(),
                producer: core.producer.clone(),
                topics,
            },
            producer: core.producer.clone(),
            settings: settings.kafka.clone(),
            observer: consumer_metrics.clone(),
        };
        core.tasks.spawn_essential(
            "consumer",
            &core.shutdown,
            reservations.run(core.shutdown.clone()),
        );
        let compensation = BatchConsumer {
            source: compensation_consumer,
            handler: CompensationHandler { db, redis },
            producer: core.producer.clone(),
            settings: settings.kafka.clone(),
            observer: consumer_metrics,
        };
        core.tasks.spawn_essential(
            "compensation",
            &core.shutdown,
            compensation.run(core.shutdown.clone()),
        );
        // A sale missing from Redis at start is warmed by the same guarded
        // path as one lost later (`Reconciler::rewarm_missing`): a restart,
        // rollout or scale-up while Redis is empty and orders are still in
        // Kafka must not warm from a database that has not counted them yet.
        if let Err(error) = reconciler.rewarm_missing().await {
            tracing::warn!(%error, "cannot check for sales missing from Redis yet; the periodic check retries");
        }
        core.tasks
            .spawn("reconciler", reconciler.run(core.shutdown.clone()));
        Ok(Self(core.running("inventory-service", server)))
    }

    /// Serves until shutdown; returns once HTTP has drained, both consumers
    /// have committed their last batch, the periodic jobs have ended their
    /// round, and the producer has flushed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.0.until_stopped().await.context("HTTP server failed")
    }
}
