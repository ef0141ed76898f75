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

pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    /// tracing-actix-web continues the caller's `traceparent` and starts
    /// the span (the sampler decides there); if it dropped the trace, the
    /// request's spans skip OpenTelemetry (`sampling`).
    fn on_request_start(request: &ServiceRequest) -> Span {
        let span = DefaultRootSpanBuilder::on_request_start(request);
        crate::sampling::follow(&span);
        span
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

/// The tracing middleware every service wraps its app in.
pub fn middleware() -> TracingLogger<RequestSpan> {
    TracingLogger::new()
}
