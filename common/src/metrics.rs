//! The Prometheus pieces every service shares: HTTP request metrics (an
//! actix middleware), the `/metrics` endpoint, the consumer loop's counters
//! and lag, and database statement latency.
//!
//! Each process keeps one [`Registry`] and serves it on its own HTTP port at
//! [`METRICS_PATH`]; the `prometheus` crate does the text exposition. Label
//! values are bounded sets (route patterns, not paths; known methods and SQL
//! verbs only), so a hostile client cannot blow up the number of series.
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::Method;
use actix_web::{web, HttpResponse};
use futures::future::{ready, LocalBoxFuture, Ready};
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, TextEncoder,
};
use rdkafka::statistics::Statistics;
use sea_orm::DatabaseConnection;

pub use prometheus::Registry;

use crate::consumer::ConsumerObserver;
use crate::http::METRICS_PATH;

/// Latency buckets (seconds) for requests and statements: a flash sale
/// answers in milliseconds, so the resolution is there.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Serves `/metrics` on its own port when `settings.metrics_port` is set
/// (one worker; stopped when `shutdown` fires). Returns whether it did, so
/// that the main server leaves `/metrics` out ([`endpoint_unless`]).
pub fn serve_apart(
    settings: &crate::settings::HttpSettings,
    registry: &Registry,
    shutdown: &crate::shutdown::Shutdown,
) -> std::io::Result<bool> {
    if settings.metrics_port == 0 {
        return Ok(false);
    }
    let listener = std::net::TcpListener::bind((settings.host.as_str(), settings.metrics_port))?;
    let registry = registry.clone();
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .service(endpoint(&registry))
            .default_service(web::to(crate::http::not_found))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    let handle = server.handle();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop.wait().await;
        handle.stop(true).await;
    });
    tokio::spawn(server);
    Ok(true)
}

/// `/metrics` on the main server, unless it is served apart.
pub fn endpoint_unless(apart: bool, registry: &Registry) -> impl FnOnce(&mut web::ServiceConfig) {
    let registry = registry.clone();
    move |cfg| {
        if !apart {
            cfg.service(endpoint(&registry));
        }
    }
}

/// `GET /metrics` for `registry`, to add to an `App` with `.service(...)`.
pub fn endpoint(registry: &Registry) -> actix_web::Resource {
    web::resource(METRICS_PATH)
        .app_data(web::Data::new(registry.clone()))
        .route(web::get().to(scrape))
}

async fn scrape(registry: web::Data<Registry>) -> HttpResponse {
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    match encoder.encode(&registry.gather(), &mut body) {
        Ok(()) => HttpResponse::Ok()
            .content_type(encoder.format_type())
            .body(body),
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            HttpResponse::InternalServerError().finish()
        }
    }
}

fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: &C,
) -> Result<(), prometheus::Error> {
    registry.register(Box::new(collector.clone()))
}

/// Requests by method, route pattern and status, and their latency.
/// `.wrap(http_metrics.clone())` outermost, so refusals (429, 503) count too.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: IntCounterVec,
    duration: HistogramVec,
}

impl HttpMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let labels = &["method", "route", "status"];
        let requests = IntCounterVec::new(
            Opts::new(
                "seckill_http_requests_total",
                "HTTP requests by method, route pattern and status",
            ),
            labels,
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "seckill_http_request_duration_seconds",
                "HTTP request latency by method, route pattern and status",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            labels,
        )?;
        register(registry, &requests)?;
        register(registry, &duration)?;
        Ok(Self { requests, duration })
    }

    /// The series of one route and status, resolved once, for an answer
    /// given before this middleware runs (the gateway's front door).
    pub fn route(
        &self,
        method: &Method,
        route: &str,
        status: u16,
    ) -> Result<RouteMetrics, prometheus::Error> {
        let status = status.to_string();
        let labels = [method_label(method), route, status.as_str()];
        Ok(RouteMetrics {
            requests: self.requests.get_metric_with_label_values(&labels)?,
            duration: self.duration.get_metric_with_label_values(&labels)?,
        })
    }

    fn observe(&self, method: &Method, route: &str, status: u16, took: Duration) {
        let status = status.to_string();
        let labels = [method_label(method), route, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.duration
            .with_label_values(&labels)
            .observe(took.as_secs_f64());
    }
}

/// One route's and status's series of [`HttpMetrics`].
#[derive(Clone)]
pub struct RouteMetrics {
    requests: prometheus::IntCounter,
    duration: prometheus::Histogram,
}

impl RouteMetrics {
    pub fn observe(&self, took: Duration) {
        self.requests.inc();
        self.duration.observe(took.as_secs_f64());
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

impl<S, B> Transform<S, ServiceRequest> for HttpMetrics
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = RecordRequests<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(RecordRequests {
            service,
            metrics: self.clone(),
        }))
    }
}

/// The middleware service [`HttpMetrics`] wraps around an app.
pub struct RecordRequests<S> {
    service: S,
    metrics: HttpMetrics,
}

impl<S, B> Service<ServiceRequest> for RecordRequests<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    S::Future: 'static,
    B: MessageBody + 'static,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self::Response, Self::Error>>;

    forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = Instant::now();
        let method = req.method().clone();
        let metrics = self.metrics.clone();
        let response = self.service.call(req);
        Box::pin(async move {
            let result = response.await;
            // The pattern is known only once routing happened; unmatched
            // paths share one label instead of one series each.
            let (route, status) = match &result {
                Ok(res) => (res.request().match_pattern(), res.status()),
                Err(error) => (None, error.as_response_error().status_code()),
            };
            let route = route.as_deref().unwrap_or("unmatched");
            metrics.observe(&method, route, status.as_u16(), started.elapsed());
            result
        })
    }
}

/// What the consumer loop did, by topic, and how far behind it is, by
/// partition. Create once per process; clone it into every `BatchConsumer`.
#[derive(Clone)]
pub struct ConsumerMetrics {
    processed: IntCounterVec,
    retried: IntCounterVec,
    dead_lettered: IntCounterVec,
    lag: IntGaugeVec,
}

impl ConsumerMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let counter =
            |name: &str, help: &str| IntCounterVec::new(Opts::new(name, help), &["topic"]);
        let processed = counter(
            "seckill_consumer_events_processed_total",
            "Events whose handling completed (their offsets may be stored)",
        )?;
        let retried = counter(
            "seckill_consumer_events_retried_total",
            "Handler attempts that failed and were retried",
        )?;
        let dead_lettered = counter(
            "seckill_consumer_events_dead_lettered_total",
            "Events sent to the dead-letter topic",
        )?;
        let lag = IntGaugeVec::new(
            Opts::new(
                "seckill_consumer_lag",
                "Messages between the partition's high watermark and the group's committed offset",
            ),
            &["topic", "partition"],
        )?;
        register(registry, &processed)?;
        register(registry, &retried)?;
        register(registry, &dead_lettered)?;
        register(registry, &lag)?;
        Ok(Self {
            processed,
            retried,
            dead_lettered,
            lag,
        })
    }

    /// Feeds the lag gauge from this consumer's librdkafka statistics.
    pub fn watch_lag(&self, consumer: &crate::kafka::EventConsumer) {
        rdkafka::consumer::Consumer::context(consumer).report_lag_to(self.lag.clone());
    }
}

impl ConsumerObserver for ConsumerMetrics {
    fn processed(&self, topic: &str, count: usize) {
        self.processed
            .with_label_values(&[topic])
            .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
    }
    fn retried(&self, topic: &str) {
        self.retried.with_label_values(&[topic]).inc();
    }
    fn dead_lettered(&self, topic: &str) {
        self.dead_lettered.with_label_values(&[topic]).inc();
    }
}

/// Where a consumer's statistics callback writes lag, once a service asked
/// for it (see [`ConsumerMetrics::watch_lag`]).
#[derive(Default)]
pub(crate) struct LagSink(OnceLock<IntGaugeVec>);

impl LagSink {
    pub(crate) fn set(&self, gauge: IntGaugeVec) {
        if self.0.set(gauge).is_err() {
            tracing::debug!("consumer lag is already reported");
        }
    }

    /// One series per partition this consumer owns; partitions it no longer
    /// owns (after a rebalance) are removed, so their last value does not linger.
    pub(crate) fn record(&self, stats: &Statistics) {
        let Some(gauge) = self.0.get() else { return };
        for (topic, t) in &stats.topics {
            for (id, p) in &t.partitions {
                if *id < 0 {
                    continue; // librdkafka's internal "unassigned" partition.
                }
                let partition = id.to_string();
                let labels = [topic.as_str(), partition.as_str()];
                if p.desired && p.consumer_lag >= 0 {
                    gauge.with_label_values(&labels).set(p.consumer_lag);
                } else {
                    let _ = gauge.remove_label_values(&labels);
                }
            }
        }
    }
}

/// Latency of every SQL statement the pool runs, transactions included, by
/// verb and outcome.
#[derive(Clone)]
pub struct DbMetrics {
    duration: HistogramVec,
}

impl DbMetrics {
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "seckill_db_query_duration_seconds",
                "PostgreSQL statement latency by operation (SQL verb) and outcome",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation", "outcome"],
        )?;
        register(registry, &duration)?;
        Ok(Self { duration })
    }

    /// Times every statement run through `db` and through connections cloned
    /// from it afterwards: call right after connecting.
    pub fn instrument(&self, db: &mut DatabaseConnection) {
        let duration = self.duration.clone();
        db.set_metric_callback(move |info| {
            let outcome = if info.failed { "error" } else { "ok" };
            duration
                .with_label_values(&[sql_operation(&info.statement.sql), outcome])
                .observe(info.elapsed.as_secs_f64());
        });
    }
}

/// The statement's verb, from a fixed set.
fn sql_operation(sql: &str) -> &'static str {
    let verb = sql.split_whitespace().next().unwrap_or_default();
    [
        "SELECT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "WITH",
        "BEGIN",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT",
        "RELEASE",
    ]
    .into_iter()
    .find(|known| verb.eq_ignore_ascii_case(known))
    .unwrap_or("OTHER")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_operations_are_a_fixed_set() {
        assert_eq!(sql_operation("  select 1"), "SELECT");
        assert_eq!(sql_operation("INSERT INTO t VALUES (1)"), "INSERT");
        assert_eq!(sql_operation("DROP TABLE x"), "OTHER");
        assert_eq!(sql_operation(""), "OTHER");
    }

    #[test]
    fn lag_is_reported_for_owned_partitions_only() {
        let registry = Registry::new();
        let metrics = ConsumerMetrics::new(&registry).unwrap();
        let sink = LagSink::default();
        sink.set(metrics.lag.clone());
        let partition = |id: i32, desired: bool, consumer_lag: i64| {
            let p = rdkafka::statistics::Partition {
                partition: id,
                desired,
                consumer_lag,
                ..Default::default()
            };
            (id, p)
        };
        let topic = rdkafka::statistics::Topic {
            topic: "t".into(),
            partitions: [
                partition(0, true, 7),
                partition(1, false, 3),
                partition(-1, false, -1),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        };
        let stats = Statistics {
            topics: [("t".to_owned(), topic)].into_iter().collect(),
            ..Default::default()
        };
        sink.record(&stats);
        assert_eq!(metrics.lag.with_label_values(&["t", "0"]).get(), 7);
        let families = registry.gather();
        let lag = families
            .iter()
            .find(|f| f.name() == "seckill_consumer_lag")
            .unwrap();
        assert_eq!(lag.get_metric().len(), 1);
    }

    #[actix_web::test]
    async fn requests_are_counted_by_route_pattern_and_the_endpoint_serves_text() {
        use actix_web::{test, App};
        let registry = Registry::new();
        let http = HttpMetrics::new(&registry).unwrap();
        let app = test::init_service(
            App::new()
                .wrap(http)
                .service(endpoint(&registry))
                .route("/items/{id}", web::get().to(HttpResponse::Ok)),
        )
        .await;
        for path in ["/items/1", "/items/2", "/nope"] {
            test::call_service(&app, test::TestRequest::get().uri(path).to_request()).await;
        }
        let res = test::call_service(
            &app,
            test::TestRequest::get().uri(METRICS_PATH).to_request(),
        )
        .await;
        assert!(res.status().is_success());
        let body = String::from_utf8(test::read_body(res).await.to_vec()).unwrap();
        assert!(
            body.contains(
                r#"seckill_http_requests_total{method="GET",route="/items/{id}",status="200"} 2"#
            ),
            "{body}"
        );
        assert!(
            body.contains(
                r#"seckill_http_requests_total{method="GET",route="unmatched",status="404"} 1"#
            ),
            "{body}"
        );
    }
}
