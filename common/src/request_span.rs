//! The root span of every HTTP request, and which answers are worth a log line.
//!
//! tracing-actix-web's default logs every 4xx at WARN. In a flash sale almost
//! every answer is a 4xx by design (`410 sold_out`, `409 already_purchased`,
//! `429 rate_limited`): a WARN line per request would be the gateway's
//! largest cost in a burst and bury the lines that matter. So a client error
//! is recorded on the span (status code, error message, kept in the trace)
//! and logged at DEBUG. Server errors are logged: a 503 (a dependency is
//! down or a deadline passed; the request may be retried) at WARN, any other
//! 5xx at ERROR. Requests shed by admission control never reach here as
//! errors, so an overload does not turn into a flood of log lines.
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::Error;
use tracing::Span;
use tracing_actix_web::{DefaultRootSpanBuilder, RootSpanBuilder, TracingLogger};

use crate::sampling::{self, Decision};

pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    /// The sampler decides first, on the caller's `traceparent` if it sent
    /// one. A sampled request gets tracing-actix-web's root span (which
    /// continues that `traceparent`); a dropped one gets a bare span that
    /// OpenTelemetry never sees, nor anything under it (`sampling`), while
    /// its trace id still travels with the work it causes.
    fn on_request_start(request: &ServiceRequest) -> Span {
        let parent = opentelemetry::global::get_text_map_propagator(|p| {
            p.extract(&Headers(request.headers()))
        });
        match sampling::decide(&parent, "HTTP request") {
            Decision::Sampled => {
                sampling::sampled(|| DefaultRootSpanBuilder::on_request_start(request))
            }
            Decision::Dropped(ids) => {
                sampling::within_dropped(ids, || tracing::info_span!("HTTP request"))
            }
            Decision::Unknown => {
                let span = DefaultRootSpanBuilder::on_request_start(request);
                sampling::follow(&span);
                span
            }
        }
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let failure = match outcome {
            Ok(response) => response
                .response()
                .error()
                .map(|e| (response.status(), e.as_response_error())),
            Err(error) => {
                let e = error.as_response_error();
                Some((e.status_code(), e))
            }
        };
        if let Some((status, error)) = failure {
            log_failure(&span, status, error);
        }
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

fn log_failure(span: &Span, status: StatusCode, error: &dyn actix_web::ResponseError) {
    if status == StatusCode::SERVICE_UNAVAILABLE {
        tracing::warn!(parent: span, status = status.as_u16(), "request failed: {error:?}");
    } else if status.is_server_error() {
        tracing::error!(parent: span, status = status.as_u16(), "request failed: {error:?}");
    } else {
        tracing::debug!(parent: span, status = status.as_u16(), "request refused: {error:?}");
    }
}

/// A request's headers, for the propagator to read `traceparent` from.
struct Headers<'a>(&'a actix_web::http::header::HeaderMap);

impl opentelemetry::propagation::Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The tracing middleware every service wraps its app in.
pub fn middleware() -> TracingLogger<RequestSpan> {
    TracingLogger::new()
}
