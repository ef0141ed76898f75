//! What every service's HTTP surface shares: the JSON error shape
//! `{"error":{"code","message"}}` and the health endpoints.
use std::fmt;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// Liveness probe path (served by [`healthz`]); the Kubernetes manifests'
/// probes are checked against these constants.
pub const HEALTH_PATH: &str = "/healthz";
/// Readiness probe path: 200 only when the service's dependencies answer.
pub const READY_PATH: &str = "/readyz";
/// Prometheus scrape path, on each service's HTTP port.
pub const METRICS_PATH: &str = "/metrics";

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds, sent as `Retry-After` (429 and 503).
    pub retry_after: Option<u64>,
    /// The order an answer is about, when the client needs it to look the
    /// order up (an outcome not yet known): `error.order_id` in the body.
    pub order_id: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            order_id: None,
        }
    }

    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    pub fn with_order_id(mut self, order_id: impl Into<String>) -> Self {
        self.order_id = Some(order_id.into());
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// A dependency is down or slow. The details go to the log, not the client.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            message,
        )
        .with_retry_after(1)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "internal error",
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(secs) = self.retry_after {
            response.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        response.json(self.body())
    }
}

/// The JSON body every error answer carries: `{"error":{"code","message"}}`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable, for programs: `sold_out`, `rate_limited`, ...
    pub code: String,
    /// For people.
    pub message: String,
    /// The order the answer is about, when the client must look it up
    /// (`order_outcome_unknown`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
}

impl ApiError {
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
                order_id: self.order_id.clone(),
            },
        }
    }
}

/// Maps actix's own extractor failures (bad JSON, bad path) to the JSON shape.
pub fn json_config(limit: usize) -> actix_web::web::JsonConfig {
    use actix_web::error::JsonPayloadError;
    actix_web::web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _| {
            let api = match &err {
                JsonPayloadError::Overflow { .. }
                | JsonPayloadError::OverflowKnownLength { .. } => ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    err.to_string(),
                ),
                JsonPayloadError::Deserialize(e) if e.is_data() => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    e.to_string(),
                ),
                _ => ApiError::bad_request("malformed_body", err.to_string()),
            };
            api.into()
        })
}

pub fn path_config() -> actix_web::web::PathConfig {
    actix_web::web::PathConfig::default()
        .error_handler(|err, _| ApiError::not_found("not_found", err.to_string()).into())
}

/// A query string that does not fit its type answers 400 in the JSON shape.
pub fn query_config() -> actix_web::web::QueryConfig {
    actix_web::web::QueryConfig::default()
        .error_handler(|err, _| ApiError::bad_request("invalid_query", err.to_string()).into())
}

/// Unknown routes answer in the same JSON shape.
pub async fn not_found() -> HttpResponse {
    ApiError::not_found("not_found", "no such route").error_response()
}

/// Liveness: the process serves HTTP. Deliberately checks nothing else, so a
/// dependency outage never makes Kubernetes restart healthy pods.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Readiness from named checks: 200 when all pass, 503 listing each otherwise.
pub fn readiness(checks: &[(&str, bool)]) -> HttpResponse {
    let ready = checks.iter().all(|(_, ok)| *ok);
    let detail: serde_json::Map<String, serde_json::Value> = checks
        .iter()
        .map(|(name, ok)| ((*name).to_owned(), json!(if *ok { "up" } else { "down" })))
        .collect();
    let body = json!({"status": if ready { "ready" } else { "unavailable" }, "checks": detail});
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}
