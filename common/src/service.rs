//! The wiring every service shares, written once (zero2prod's `Application`
//! shape): dependencies retried while they are still starting, the HTTP
//! server stopped by the shutdown signal, the readiness probes, and the
//! producer's last flush. Each service's `startup.rs` then says only what is
//! its own: which dependencies, which routes, which tasks.
use std::error::Error as StdError;
use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use crate::redis_conn::Conn;
use actix_service::IntoServiceFactory;
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Server, ServiceFactory};
use actix_web::{web, App, HttpResponse, HttpServer};
use sea_orm::DatabaseConnection;

use crate::http::{self, HEALTH_PATH, READY_PATH};
use crate::internal_auth::{self, InternalToken};
use crate::kafka::EventProducer;
use crate::metrics::{consumer_stats, HttpMetrics, StatsRegistry};
use crate::retry::Backoff;
use crate::settings::{DatabaseSettings, HttpSettings};
use crate::shutdown::Shutdown;
use crate::tasks::Tasks;
use crate::transport::streams::{topic_stream, Fixed, StreamNames};
use crate::transport::{
    Bus, CatchUp, KafkaSource, Publisher, Source, StreamsPublisher, StreamsSource, Transport,
};
use crate::{db, redis_conn};

/// Dependencies may still be starting when a service does (compose,
/// Kubernetes): ten attempts, a minute or so with each attempt's own
/// timeout, then the service fails and its supervisor restarts it.
pub const STARTUP_RETRY: Backoff = Backoff {
    initial: Duration::from_millis(250),
    max: Duration::from_secs(4),
    attempts: 10,
};

/// How long each readiness check may take: well within the probes' 2 s.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1_000);

/// How long, after the HTTP drain, the tasks may take to end their round.
/// With the preStop sleep (5 s), the drain (10 s) and the flush (5 s), this
/// fits the pods' 30 s termination grace.
pub const TASKS_GRACE: Duration = Duration::from_secs(10);

/// How long the producer may take, at exit, to deliver what is still queued.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("shutdown requested during start-up")]
    ShutdownRequested,
    #[error("{what}: {source}")]
    Dependency {
        what: &'static str,
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    #[error("cannot bind {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot serve HTTP: {0}")]
    Serve(#[from] std::io::Error),
}

/// What every service starts with, in the same order: the tracker of its
/// tasks, its metrics registry, and a publisher on its transport (Kafka
/// with its topics created, or Redis Streams). The service then adds what
/// is its own, and hands its server back to [`Core::running`].
pub struct Core {
    pub tasks: Tasks,
    pub registry: prometheus::Registry,
    pub producer: Publisher,
    pub shutdown: Shutdown,
    /// Streams mode: the Redis the streams live in.
    streams_redis: Option<Conn>,
}

impl Core {
    pub async fn start(bus: Bus<'_>, shutdown: Shutdown) -> Result<Self, StartupError> {
        let tasks = Tasks::new();
        let registry = crate::metrics::registry()?;
        let (producer, streams_redis) = match bus.transport {
            Transport::Kafka => {
                let producer =
                    EventProducer::new(bus.kafka).map_err(|e| StartupError::Dependency {
                        what: "cannot create the Kafka producer",
                        source: Box::new(e),
                    })?;
                dependency(
                    &shutdown,
                    "cannot create the Kafka topics",
                    || crate::kafka::ensure_topics(bus.kafka),
                    |_| true,
                )
                .await?;
                (Publisher::Kafka(producer), None)
            }
            Transport::RedisStreams => {
                let redis = dependency(
                    &shutdown,
                    "cannot connect to Redis (the streams)",
                    || redis_conn::connect(bus.redis),
                    |_| true,
                )
                .await?;
                let publisher = StreamsPublisher::new(
                    redis.clone(),
                    bus.redis.response_timeout,
                    bus.streams.dead_letter_max_len,
                );
                (Publisher::Streams(publisher), Some(redis))
            }
        };
        Ok(Self {
            tasks,
            registry,
            producer,
            shutdown,
            streams_redis,
        })
    }

    /// A consumer of `topic` in `group`. With Streams, `names` lists the
    /// streams to read when the topic has more than its one
    /// (`OrderRequested`: one per sale).
    pub async fn subscribe(
        &self,
        bus: Bus<'_>,
        group: &str,
        topic: &str,
        names: Option<Arc<dyn StreamNames>>,
    ) -> Result<Source, StartupError> {
        match bus.transport {
            Transport::Kafka => KafkaSource::subscribe(bus.kafka, group, topic)
                .map(Source::Kafka)
                .map_err(|e| StartupError::Dependency {
                    what: "cannot create the Kafka consumer",
                    source: Box::new(e),
                }),
            Transport::RedisStreams => {
                let names = names_or_topic(names, topic);
                dependency(
                    &self.shutdown,
                    "cannot connect the stream consumer",
                    || StreamsSource::connect(bus.redis, bus.streams, group, topic, names.clone()),
                    |_| true,
                )
                .await
                .map(|source| Source::Streams(Box::new(source)))
            }
        }
    }

    /// The check that `group` has applied everything on `topic` (see
    /// [`CatchUp`]); `names` as for [`Core::subscribe`].
    pub fn catch_up(
        &self,
        bus: Bus<'_>,
        group: &str,
        topic: &str,
        names: Option<Arc<dyn StreamNames>>,
    ) -> Result<CatchUp, StartupError> {
        match &self.streams_redis {
            Some(redis) => Ok(CatchUp::streams(
                redis.clone(),
                group,
                names_or_topic(names, topic),
            )),
            None => CatchUp::kafka(bus.kafka, group, topic).map_err(|e| StartupError::Dependency {
                what: "cannot create the Kafka catch-up check",
                source: Box::new(e),
            }),
        }
    }

    /// The service's database ([`database`]), its statements timed in the
    /// registry.
    pub async fn database<M: sea_orm_migration::MigratorTrait>(
        &self,
        settings: &DatabaseSettings,
        lock_key: i64,
    ) -> Result<DatabaseConnection, StartupError> {
        let mut db = database::<M>(
            settings,
            settings.migrate_on_start,
            lock_key,
            &self.shutdown,
        )
        .await?;
        crate::metrics::DbMetrics::new(&self.registry)?.instrument(&mut db);
        Ok(db)
    }

    /// A Redis connection, retried while Redis starts.
    pub async fn redis(
        &self,
        settings: &crate::settings::RedisSettings,
    ) -> Result<Conn, StartupError> {
        dependency(
            &self.shutdown,
            "cannot connect to Redis",
            || redis_conn::connect(settings),
            |_| true,
        )
        .await
    }

    /// Serves an internal service: only the gateway (holding the internal
    /// token) reaches its routes, every request has a root span and is
    /// counted, `/metrics` is here unless served apart, errors have the JSON
    /// shape, the probes check `probes`, and `/internal/consumer` answers
    /// this process's consumer backlog and dead letters (the operators'
    /// console). `state` and `routes` are the
    /// service's own.
    pub fn serve_internal<T: Send + Sync + 'static>(
        &self,
        settings: &HttpSettings,
        token: &crate::settings::Secret,
        probes: Probes,
        max_body_bytes: usize,
        state: web::Data<T>,
        routes: fn(&mut web::ServiceConfig),
    ) -> Result<Server, StartupError> {
        let token = web::Data::new(InternalToken::new(token));
        let probes = web::Data::new(probes);
        let metrics = HttpMetrics::new(&self.registry)?;
        let here = self.metrics_here(settings)?;
        let stats = web::Data::new(StatsRegistry(self.registry.clone()));
        self.serve(settings, move || {
            App::new()
                .wrap(actix_web::middleware::from_fn(internal_auth::require))
                .wrap(crate::request_span::middleware())
                .wrap(metrics.clone())
                .configure(crate::metrics::endpoint_if(here.as_ref()))
                .app_data(token.clone())
                .app_data(probes.clone())
                .app_data(state.clone())
                .app_data(stats.clone())
                .app_data(http::json_config(max_body_bytes))
                .app_data(http::path_config())
                .app_data(http::query_config())
                .configure(health_routes)
                .route("/internal/consumer", web::get().to(consumer_stats))
                .configure(routes)
                .default_service(web::to(http::not_found))
        })
    }

    /// `/metrics` on its own port when the settings give one; else the
    /// registry the main server must serve (`metrics::endpoint_if`).
    pub fn metrics_here(
        &self,
        settings: &HttpSettings,
    ) -> Result<Option<prometheus::Registry>, StartupError> {
        Ok(crate::metrics::serve_apart(
            settings,
            &self.registry,
            &self.tasks,
            &self.shutdown,
        )?)
    }

    /// Binds the service's port and serves `app` there, with the settings'
    /// workers and grace. Shutdown is ours to decide (see [`Shutdown`]), not
    /// actix's signal handler's: when it fires, the server stops accepting
    /// and drains the requests in flight.
    pub fn serve<F, I, S, B>(&self, settings: &HttpSettings, app: F) -> Result<Server, StartupError>
    where
        F: Fn() -> I + Send + Clone + 'static,
        I: IntoServiceFactory<S, actix_http::Request>,
        S: ServiceFactory<actix_http::Request, Config = AppConfig> + 'static,
        S::Error: Into<actix_web::Error> + 'static,
        S::InitError: std::fmt::Debug,
        S::Response: Into<actix_http::Response<B>> + 'static,
        <S::Service as actix_web::dev::Service<actix_http::Request>>::Future: 'static,
        S::Service: 'static,
        B: MessageBody + 'static,
    {
        let listener = bind(settings)?;
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(app)
            .workers(settings.workers())
            .disable_signals()
            .shutdown_timeout(settings.shutdown_timeout_secs)
            .listen(listener)?
            .run();
        let (handle, stop) = (server.handle(), self.shutdown.clone());
        self.tasks.spawn("http-stop", async move {
            stop.wait().await;
            handle.stop(true).await;
        });
        tracing::info!(port, "serving");
        Ok(server)
    }

    /// The service, built: [`Running::until_stopped`] runs it.
    pub fn running(self, name: &'static str, server: Server) -> Running {
        tracing::info!(service = name, "started");
        Running {
            name,
            server,
            core: self,
        }
    }
}

/// A built service: its server and its [`Core`].
pub struct Running {
    name: &'static str,
    server: Server,
    core: Core,
}

impl Running {
    /// Serves until shutdown (or until the server fails, which then shuts
    /// the rest down too, so the process never runs half-alive). Then: the
    /// HTTP server has drained; every task ends its round (consumers commit,
    /// relays finish, purchases in flight are enqueued or undone); the
    /// producer delivers what they produced. Returns only once all that is done.
    pub async fn until_stopped(self) -> std::io::Result<()> {
        let Core {
            tasks,
            producer,
            shutdown,
            ..
        } = self.core;
        let served = self.server.await;
        shutdown.trigger();
        let all_finished = tasks.finished(TASKS_GRACE).await;
        producer.flush(FLUSH_TIMEOUT).await;
        tracing::info!(service = self.name, all_finished, "stopped");
        served
    }
}

/// The streams a consumer of `topic` reads: `names`, or the topic's one.
fn names_or_topic(names: Option<Arc<dyn StreamNames>>, topic: &str) -> Arc<dyn StreamNames> {
    names.unwrap_or_else(|| Arc::new(Fixed(vec![topic_stream(topic)])))
}

/// One start-up step on a dependency (connect, migrate, create topics):
/// retried with [`STARTUP_RETRY`] while `retryable` says so, each failure
/// logged, and abandoned at once when shutdown is requested meanwhile.
pub async fn dependency<T, E, F, Fut>(
    shutdown: &Shutdown,
    what: &'static str,
    mut step: F,
    retryable: impl Fn(&E) -> bool,
) -> Result<T, StartupError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: StdError + Send + Sync + 'static,
{
    let logged = || {
        let attempt = step();
        async move {
            attempt
                .await
                .inspect_err(|error| tracing::warn!(%error, what, "not ready yet; retrying"))
        }
    };
    tokio::select! {
        result = STARTUP_RETRY.retry(logged, retryable) => result.map_err(|e| StartupError::Dependency {
            what,
            source: Box::new(e),
        }),
        _ = shutdown.wait() => Err(StartupError::ShutdownRequested),
    }
}

/// The service's database: connected (retried while PostgreSQL starts),
/// then, when `migrate`, brought up to date under `M`'s advisory lock
/// ([`db::migrate_locked`]). The `migrate` subcommand is this with `true`.
pub async fn database<M: sea_orm_migration::MigratorTrait>(
    settings: &DatabaseSettings,
    migrate: bool,
    lock_key: i64,
    shutdown: &Shutdown,
) -> Result<DatabaseConnection, StartupError> {
    let connected = dependency(
        shutdown,
        "cannot connect to PostgreSQL",
        || db::connect(settings),
        db::is_transient,
    )
    .await?;
    if migrate {
        dependency(
            shutdown,
            "cannot migrate the database",
            || db::migrate_locked::<M>(&connected, lock_key),
            db::is_transient,
        )
        .await?;
    }
    Ok(connected)
}

/// Binds the service's port first: a taken port fails start-up before any
/// consumer joins its group.
fn bind(settings: &HttpSettings) -> Result<TcpListener, StartupError> {
    TcpListener::bind((settings.host.as_str(), settings.port)).map_err(|source| {
        StartupError::Bind {
            address: format!("{}:{}", settings.host, settings.port),
            source,
        }
    })
}

/// Liveness and readiness, at the paths the manifests' probes use.
pub fn health_routes(cfg: &mut web::ServiceConfig) {
    cfg.route(HEALTH_PATH, web::get().to(http::healthz))
        .route(READY_PATH, web::get().to(readyz));
}

async fn readyz(probes: web::Data<Probes>) -> HttpResponse {
    probes.check().await
}

/// The dependencies a service is ready only with. Checked side by side,
/// each within [`PROBE_TIMEOUT`].
#[derive(Clone)]
pub struct Probes {
    producer: Publisher,
    db: Option<DatabaseConnection>,
    redis: Option<Conn>,
}

impl Probes {
    pub fn new(producer: Publisher) -> Self {
        Self {
            producer,
            db: None,
            redis: None,
        }
    }

    pub fn with_db(mut self, db: DatabaseConnection) -> Self {
        self.db = Some(db);
        self
    }

    pub fn with_redis(mut self, redis: Conn) -> Self {
        self.redis = Some(redis);
        self
    }

    pub async fn check(&self) -> HttpResponse {
        let database = async {
            match &self.db {
                Some(db) => Some(db::is_reachable(db, PROBE_TIMEOUT).await),
                None => None,
            }
        };
        let redis = async {
            match &self.redis {
                Some(redis) => Some(redis_conn::is_reachable(redis, PROBE_TIMEOUT).await),
                None => None,
            }
        };
        let transport = self.producer.is_reachable(PROBE_TIMEOUT);
        let (database, redis, transport) = tokio::join!(database, redis, transport);
        let checks: Vec<(&str, bool)> = [("database", database), ("redis", redis)]
            .into_iter()
            .filter_map(|(name, up)| up.map(|up| (name, up)))
            .chain([(self.producer.name(), transport)])
            .collect();
        http::readiness(&checks)
    }
}
