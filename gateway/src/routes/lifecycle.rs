//! The order's life after the purchase, for its owner only: pay, cancel, and
//! the list of one's orders. order-service owns the states; the gateway
//! authenticates the user and passes the id from the token, never from the request.
use actix_web::{web, HttpRequest, HttpResponse};
use reqwest::{Method, Url};
use serde_json::{json, Value};

use seckill_common::domain::OrderId;
use seckill_common::http::ApiError;

use crate::auth::AuthenticatedUser;
use crate::startup::AppState;

/// The header that makes a payment request idempotent.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

fn not_found() -> ApiError {
    ApiError::not_found("order_not_found", "no such order")
}

/// 1-128 printable ASCII characters, required: without it a retried payment
/// could not be told from a second one.
fn idempotency_key(req: &HttpRequest) -> Result<String, ApiError> {
    let raw = req.headers().get(IDEMPOTENCY_KEY_HEADER).ok_or_else(|| {
        ApiError::bad_request(
            "missing_idempotency_key",
            "an Idempotency-Key header is required to pay",
        )
    })?;
    raw.to_str()
        .ok()
        .filter(|k| (1..=128).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "the Idempotency-Key must be 1-128 printable ASCII characters",
            )
        })
}

/// `POST /api/v1/orders/{id}/pay`: 200 with the paid order; 402
/// `payment_declined` (still payable); 409 `order_not_payable`; 504
/// `payment_timeout` (repeat with the same key). A repeat with the same
/// Idempotency-Key gets the first final answer and is never charged again.
pub async fn pay_order(
    req: HttpRequest,
    path: web::Path<String>,
    AuthenticatedUser(user): AuthenticatedUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.limits.check_user(&user)?;
    let order_id = OrderId::parse(&path).map_err(|_| not_found())?;
    let key = idempotency_key(&req)?;
    let body = json!({"user_id": user, "idempotency_key": key});
    // Once: a repeat would be safe (same key), but stacking provider
    // timeouts here would only outlast the client's patience.
    order_action(&state, &order_id, "pay", &body, Retry::No).await
}

/// `POST /api/v1/orders/{id}/cancel`: 200 with the cancelled order (also for
/// a repeat); 409 `order_not_cancellable` once it is paid, expired or failed.
pub async fn cancel_order(
    path: web::Path<String>,
    AuthenticatedUser(user): AuthenticatedUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.limits.check_user(&user)?;
    let order_id = OrderId::parse(&path).map_err(|_| not_found())?;
    let body = json!({"user_id": user});
    // Idempotent, so retried like a read.
    order_action(&state, &order_id, "cancel", &body, Retry::Yes).await
}

enum Retry {
    Yes,
    No,
}

/// Posts `body` to order-service's `/internal/orders/{id}/{action}` and
/// passes its answer on (its own JSON errors included).
async fn order_action(
    state: &AppState,
    order_id: &OrderId,
    action: &str,
    body: &Value,
    retry: Retry,
) -> Result<HttpResponse, ApiError> {
    let url = format!("{}/internal/orders/{order_id}/{action}", state.order_url);
    let upstream = &state.upstream;
    let answer: Option<Value> = match retry {
        Retry::Yes => {
            upstream
                .call("order-service", Method::POST, &url, Some(body))
                .await?
        }
        Retry::No => {
            upstream
                .call_once("order-service", Method::POST, &url, Some(body))
                .await?
        }
    };
    Ok(HttpResponse::Ok().json(answer.ok_or_else(not_found)?))
}

/// `GET /api/v1/users/me/orders`: `{"orders": [...]}`, newest first. Orders
/// still `queued` (not yet persisted) are not listed; `GET /orders/{id}` shows them.
pub async fn my_orders(
    AuthenticatedUser(user): AuthenticatedUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.limits.check_user(&user)?;
    let mut url = Url::parse(&format!("{}/internal/orders", state.order_url)).map_err(|e| {
        tracing::error!(error = %e, "order_url is not a valid base URL");
        ApiError::internal()
    })?;
    url.query_pairs_mut().append_pair("user_id", user.as_str());
    let listed: Value = state
        .upstream
        .call::<(), _>("order-service", Method::GET, url.as_str(), None)
        .await?
        .unwrap_or_else(|| json!({"orders": []}));
    Ok(HttpResponse::Ok().json(listed))
}
