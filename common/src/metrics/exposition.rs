//! The registry and its exposition: `GET /metrics`, on the service's HTTP
//! port or on a port of its own.
use actix_web::{web, HttpResponse};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::http::METRICS_PATH;
use crate::settings::HttpSettings;
use crate::shutdown::Shutdown;
use crate::tasks::Tasks;

/// Latency buckets (seconds) for requests and statements: a flash sale
/// answers in milliseconds, so the resolution is there.
pub(crate) const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A process's registry, with the standard `process_*` metrics (CPU,
/// resident memory, open file descriptors, start time) already in it.
pub fn registry() -> Result<Registry, prometheus::Error> {
    let registry = Registry::new();
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(registry)
}

/// Serves `/metrics` on its own port when `settings.metrics_port` is set
/// (one worker; stopped when `shutdown` fires). Returns the registry the
/// main server must serve itself ([`endpoint_if`]): none when served apart.
pub fn serve_apart(
    settings: &HttpSettings,
    registry: &Registry,
    tasks: &Tasks,
    shutdown: &Shutdown,
) -> std::io::Result<Option<Registry>> {
    if settings.metrics_port == 0 {
        return Ok(Some(registry.clone()));
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
    tasks.spawn("metrics-stop", async move {
        stop.wait().await;
        handle.stop(true).await;
    });
    tasks.spawn("metrics-server", async move {
        if let Err(error) = server.await {
            tracing::error!(%error, "the metrics server failed");
        }
    });
    Ok(None)
}

/// `/metrics` on the main server, when given its registry.
pub fn endpoint_if(registry: Option<&Registry>) -> impl FnOnce(&mut web::ServiceConfig) {
    let registry = registry.cloned();
    move |cfg| {
        if let Some(registry) = registry {
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

pub(crate) fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    collector: &C,
) -> Result<(), prometheus::Error> {
    registry.register(Box::new(collector.clone()))
}
