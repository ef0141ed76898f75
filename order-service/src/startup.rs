//! Wires the service together: database, topics, consumer, outbox relay,
//! expiry worker and HTTP server, and the one shutdown signal they all watch.
//! What every service shares is in `seckill_common::service`.
use std::sync::Arc;

use actix_web::web;
use anyhow::Context;

use seckill_common::consumer::BatchConsumer;
use seckill_common::metrics::ConsumerMetrics;
use seckill_common::service::{Core, Probes, Running};
use seckill_common::shutdown::Shutdown;

use crate::configuration::Settings;
use crate::consumer::OrderHandler;
use crate::expiry::ExpiryWorker;
use crate::lifecycle::Lifecycle;
use crate::outbox::Relay;
use crate::payment::{FakePaymentProvider, Payments};
use crate::persistence::{Migrator, MIGRATION_LOCK_KEY};
use crate::routes::{self, AppState};

/// Internal requests are tiny JSON objects.
const MAX_BODY_BYTES: usize = 4 * 1024;

pub struct Application(Running);

impl Application {
    pub async fn build(settings: Settings, shutdown: Shutdown) -> anyhow::Result<Self> {
        settings.check_secrets()?;
        let core = Core::start(settings.bus(), shutdown).await?;
        let db = core
            .database::<Migrator>(&settings.database, MIGRATION_LOCK_KEY)
            .await?;

        let outbox_wake = Arc::new(tokio::sync::Notify::new());
        let lifecycle = Arc::new(Lifecycle {
            db: db.clone(),
            payments: Payments::new(
                Box::new(FakePaymentProvider::from_settings(&settings.payment)),
                settings.payment.timeout,
            ),
            topic: settings.kafka.topics().order_events,
            wake: outbox_wake.clone(),
        });
        let state = web::Data::new(AppState {
            db: db.clone(),
            db_timeout: settings.database.connect_timeout + settings.database.statement_timeout,
            lifecycle: lifecycle.clone(),
        });
        let probes = Probes::new(core.producer.clone()).with_db(db.clone());
        let server = core.serve_internal(
            &settings.http,
            &settings.internal_token,
            probes,
            MAX_BODY_BYTES,
            state,
            routes::configure,
        )?;

        let topics = settings.kafka.topics();
        let mut consumer = core
            .subscribe(
                settings.bus(),
                &settings.consumer_group,
                &topics.inventory_events,
                None,
            )
            .await?;
        let consumer_metrics = ConsumerMetrics::new(&core.registry)?;
        consumer_metrics.watch(&mut consumer);
        let batch_consumer = BatchConsumer {
            source: consumer,
            handler: OrderHandler {
                db,
                producer: core.producer.clone(),
                topic: topics.order_events,
            },
            producer: core.producer.clone(),
            settings: settings.kafka.clone(),
            observer: consumer_metrics,
        };
        core.tasks.spawn_essential(
            "consumer",
            &core.shutdown,
            batch_consumer.run(core.shutdown.clone()),
        );
        // Both stop at shutdown between two rounds; whatever they had not
        // done yet is in PostgreSQL, for the next start or another replica.
        let relay = Relay {
            db: lifecycle.db.clone(),
            producer: core.producer.clone(),
            wake: outbox_wake,
            interval: settings.outbox.interval,
            batch: settings.outbox.batch,
        };
        core.tasks
            .spawn("outbox-relay", relay.run(core.shutdown.clone()));
        let expiry = ExpiryWorker {
            lifecycle,
            interval: settings.expiry.interval,
            batch: settings.expiry.batch,
            resolve_payments_after: settings.payment.resolve_after,
        };
        core.tasks
            .spawn("expiry", expiry.run(core.shutdown.clone()));
        Ok(Self(core.running("order-service", server)))
    }

    /// Serves until shutdown; returns once HTTP has drained, the consumer
    /// has committed its last batch, the relay and the expiry worker have
    /// ended their round, and the producer has flushed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.0.until_stopped().await.context("HTTP server failed")
    }
}
