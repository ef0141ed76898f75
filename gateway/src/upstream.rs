//! Calls to the internal APIs of inventory-service (sales) and order-service
//! (order status). Each call has a timeout and bounded retries with backoff;
//! only idempotent requests are retried, so a retry never does a thing twice.
//! Every request carries the current span's W3C trace context, so the called
//! service's request span is a child of the gateway's.
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Client, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use seckill_common::http::ApiError;

use crate::breaker::{Breaker, Open};
use seckill_common::internal_auth::InternalToken;
use seckill_common::retry::Backoff;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{service} unreachable: {source}")]
    Unreachable {
        service: &'static str,
        source: reqwest::Error,
    },
    #[error("invalid upstream URL: {0}")]
    BadUrl(String),
    #[error(transparent)]
    Open(#[from] Open),
    #[error("{service} answered {status}")]
    Status {
        service: &'static str,
        status: StatusCode,
        body: serde_json::Value,
        /// The error codes of that service the client may see.
        passes: &'static [&'static str],
    },
}

impl UpstreamError {
    fn retryable(&self) -> bool {
        match self {
            UpstreamError::Unreachable { .. } => true,
            UpstreamError::Status { status, .. } => status.is_server_error(),
            UpstreamError::BadUrl(_) | UpstreamError::Open(_) => false,
        }
    }

    /// Whether it counts against the service's breaker: the service did not
    /// answer, or failed. A payment timeout is the provider's, not its.
    fn breaks(&self) -> bool {
        match self {
            UpstreamError::Status { status, body, .. } => {
                status.is_server_error() && body["error"]["code"] != "payment_timeout"
            }
            other => other.retryable(),
        }
    }
}

impl From<UpstreamError> for ApiError {
    fn from(e: UpstreamError) -> Self {
        match e {
            // The one server error a client acts on: the payment's outcome is
            // unknown, and repeating with the same Idempotency-Key resolves it.
            UpstreamError::Status { status, body, .. }
                if status == StatusCode::GATEWAY_TIMEOUT
                    && body["error"]["code"] == "payment_timeout" =>
            {
                ApiError::new(
                    actix_web::http::StatusCode::GATEWAY_TIMEOUT,
                    "payment_timeout",
                    "the payment provider did not answer in time; retry with the same Idempotency-Key",
                )
            }
            UpstreamError::Status {
                status,
                body,
                passes,
                ..
            } if status.is_client_error() => {
                // Pass the service's own JSON error through (409 sale_conflict, ...),
                // if it is one the client may see.
                let sent = body["error"]["code"].as_str().unwrap_or_default();
                let code = passes
                    .iter()
                    .find(|known| **known == sent)
                    .copied()
                    .unwrap_or("upstream_rejected");
                let message = body["error"]["message"]
                    .as_str()
                    .unwrap_or("rejected")
                    .to_owned();
                let status = actix_web::http::StatusCode::from_u16(status.as_u16())
                    .unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
                ApiError::new(status, code, message)
            }
            UpstreamError::Open(open) => open.into(),
            other => {
                tracing::warn!(error = %other, "upstream call failed");
                ApiError::unavailable("a backing service is unavailable")
            }
        }
    }
}

/// One internal service: its name (for logs and errors), its base URL, and
/// the error codes of its own that are passed on to the client.
#[derive(Clone)]
pub struct Target {
    pub name: &'static str,
    pub base: String,
    pub passes: &'static [&'static str],
    /// Wraps every call, its retries included.
    pub breaker: Arc<Breaker>,
}

impl Target {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

#[derive(Clone)]
pub struct Upstream {
    client: Client,
    backoff: Backoff,
}

impl Upstream {
    /// Every call presents `token` (see `seckill_common::internal_auth`).
    pub fn new(timeout: Duration, token: &InternalToken) -> Result<Self, reqwest::Error> {
        let mut bearer = reqwest::header::HeaderValue::from_str(token.bearer())
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static(""));
        bearer.set_sensitive(true);
        let headers =
            reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, bearer)]);
        let client = Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(32)
            .build()?;
        Ok(Self {
            client,
            backoff: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_millis(500),
                attempts: 3,
            },
        })
    }

    /// Sends an idempotent request (GET, or a PUT-like POST keyed by an id the
    /// caller chose) and decodes the JSON answer. Returns `Ok(None)` on 404.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        target: &Target,
        method: Method,
        url: &str,
        body: Option<&B>,
    ) -> Result<Option<T>, UpstreamError> {
        self.call_with(self.backoff, target, method, url, body)
            .await
    }

    /// Sends once, without retrying: for calls whose repeat is the client's
    /// decision (a payment that timed out, an operator's reconciliation).
    pub async fn call_once<B: Serialize, T: DeserializeOwned>(
        &self,
        target: &Target,
        method: Method,
        url: &str,
        body: Option<&B>,
    ) -> Result<Option<T>, UpstreamError> {
        let once = Backoff {
            attempts: 1,
            ..self.backoff
        };
        self.call_with(once, target, method, url, body).await
    }

    async fn call_with<B: Serialize, T: DeserializeOwned>(
        &self,
        backoff: Backoff,
        target: &Target,
        method: Method,
        url: &str,
        body: Option<&B>,
    ) -> Result<Option<T>, UpstreamError> {
        let (service, passes) = (target.name, target.passes);
        // The current span's W3C context (`traceparent`, `tracestate`).
        let trace = seckill_common::kafka::trace_fields(&tracing::Span::current());
        let attempt = || async {
            let mut request = self.client.request(method.clone(), url);
            for (name, value) in &trace {
                request = request.header(name.as_str(), value.as_str());
            }
            if let Some(body) = body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|source| UpstreamError::Unreachable { service, source })?;
            let status = response.status();
            if status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            if !status.is_success() {
                let body = response.json().await.unwrap_or(serde_json::Value::Null);
                return Err(UpstreamError::Status {
                    service,
                    status,
                    body,
                    passes,
                });
            }
            response
                .json::<T>()
                .await
                .map(Some)
                .map_err(|source| UpstreamError::Unreachable { service, source })
        };
        let retried = backoff.retry(attempt, UpstreamError::retryable);
        target.breaker.call(retried, UpstreamError::breaks).await?
    }
}
