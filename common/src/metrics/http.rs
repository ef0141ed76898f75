//! HTTP request metrics: an actix middleware counting requests by method,
//! route pattern and status, with their latency.
use std::time::{Duration, Instant};

use actix_web::body::MessageBody;
use actix_web::dev::{forward_ready, Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::http::Method;
use futures::future::{ready, LocalBoxFuture, Ready};
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use super::exposition::{register, LATENCY_BUCKETS};

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

#[cfg(test)]
mod tests {
    use actix_web::{web, HttpResponse};

    use super::*;
    use crate::http::METRICS_PATH;
    use crate::metrics::exposition::endpoint;

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
