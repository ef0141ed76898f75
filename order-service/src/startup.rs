//! Wires the service together: database, topics, consumer, outbox relay,
//! expiry worker and HTTP server, and the one shutdown signal they all watch.
//! What every service shares is in `seckill_common::service`.
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::web;
use anyhow::Context;

use seckill_common::consumer::BatchConsumer;
use seckill_common::internal_auth::InternalToken;
use seckill_common::kafka::{self, EventProducer};
use seckill_common::metrics::{self, ConsumerMetrics, DbMetrics, HttpMetrics};
use seckill_common::service::{self, InternalApi, Probes};
use seckill_common::shutdown::Shutdown;
use seckill_common::tasks::Tasks;

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

pub struct Application {
    server: Server,
    tasks: Tasks,
    producer: EventProducer,
    shutdown: Shutdown,
}

impl Application {
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
        let producer =
            EventProducer::new(&settings.kafka).context("cannot create the Kafka producer")?;
        service::dependency(
            &shutdown,
            "cannot create the Kafka topics",
            || kafka::ensure_topics(&settings.kafka),
            |_| true,
        )
        .await?;

        let listener = service::bind(&settings.http)?;
        let port = listener.local_addr()?.port();
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
        let api = InternalApi {
            token: InternalToken::new(&settings.internal_token),
            metrics: HttpMetrics::new(&registry)?,
            metrics_here: metrics::serve_apart(&settings.http, &registry, &tasks, &shutdown)
                .context("cannot serve metrics on their port")?,
            probes: Probes::new(producer.clone()).with_db(db.clone()),
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
        tasks.spawn_essential("consumer", &shutdown, batch_consumer.run(shutdown.clone()));
        // Both stop at shutdown between two rounds; whatever they had not
        // done yet is in PostgreSQL, for the next start or another replica.
        let relay = Relay {
            db: lifecycle.db.clone(),
            producer: producer.clone(),
            wake: outbox_wake,
            interval: settings.outbox.interval,
            batch: settings.outbox.batch,
        };
        tasks.spawn("outbox-relay", relay.run(shutdown.clone()));
        let expiry = ExpiryWorker {
            lifecycle,
            interval: settings.expiry.interval,
            batch: settings.expiry.batch,
            resolve_payments_after: settings.payment.resolve_after,
        };
        tasks.spawn("expiry", expiry.run(shutdown.clone()));
        tracing::info!(port, "order-service started");
        Ok(Self {
            server,
            tasks,
            producer,
            shutdown,
        })
    }

    /// Serves until shutdown; returns once HTTP has drained, the consumer
    /// has committed its last batch, the relay and the expiry worker have
    /// ended their round, and the producer has flushed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        service::run_until_stopped(
            "order-service",
            self.server,
            self.tasks,
            self.shutdown,
            self.producer,
        )
        .await
        .context("HTTP server failed")
    }
}
