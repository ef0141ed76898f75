//! The order's life after the purchase, for its owner only: pay, cancel, and
//! the list of one's orders. order-service owns the states; the gateway
//! authenticates the user and passes the id from the token, never from the request.
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use seckill_common::domain::{IdempotencyKey, OrderId};
use seckill_common::http::{ApiError, ErrorBody};

use crate::api::{OrderList, OrderView};
use crate::auth::AuthenticatedUser;
use crate::state::AppState;

/// The header that makes a payment request idempotent.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

fn not_found() -> ApiError {
    ApiError::not_found("order_not_found", "no such order")
}

/// 1-128 printable ASCII characters, required: without it a retried payment
/// could not be told from a second one.
fn idempotency_key(req: &HttpRequest) -> Result<IdempotencyKey, ApiError> {
    let raw = req.headers().get(IDEMPOTENCY_KEY_HEADER).ok_or_else(|| {
        ApiError::bad_request(
            "missing_idempotency_key",
            "an Idempotency-Key header is required to pay",
        )
    })?;
    raw.to_str()
        .ok()
        .and_then(|k| IdempotencyKey::parse(k).ok())
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
#[utoipa::path(
    post,
    path = "/api/v1/orders/{order_id}/pay",
    tag = "shop",
    security(("user" = [])),
    params(
        ("order_id" = String, Path, description = "The order's id"),
        ("Idempotency-Key" = String, Header, description = "1-128 printable ASCII characters; repeat it on retry", pattern = "^[!-~]{1,128}$"),
    ),
    responses(
        (status = 200, description = "The order, paid", body = OrderView),
        (status = "4XX", description = "Refused: `error.code` says why (402 `payment_declined`, 409 `order_not_payable`)", body = ErrorBody),
        (status = 503, description = "A backing service is unavailable; retry with the same key", body = ErrorBody),
        (status = 504, description = "`payment_timeout`: retry with the same key", body = ErrorBody),
    )
)]
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
    let paid = state.orders.pay(&order_id, &body).await?;
    Ok(HttpResponse::Ok().json(paid.ok_or_else(not_found)?))
}

/// `POST /api/v1/orders/{id}/cancel`: 200 with the cancelled order (also for
/// a repeat); 409 `order_not_cancellable` once it is paid, expired or failed.
#[utoipa::path(
    post,
    path = "/api/v1/orders/{order_id}/cancel",
    tag = "shop",
    security(("user" = [])),
    params(("order_id" = String, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order, cancelled", body = OrderView),
        (status = "4XX", description = "Refused: `error.code` says why (409 `order_not_cancellable`)", body = ErrorBody),
        (status = 503, description = "A backing service is unavailable; retry", body = ErrorBody),
    )
)]
pub async fn cancel_order(
    path: web::Path<String>,
    AuthenticatedUser(user): AuthenticatedUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.limits.check_user(&user)?;
    let order_id = OrderId::parse(&path).map_err(|_| not_found())?;
    let body = json!({"user_id": user});
    let cancelled = state.orders.cancel(&order_id, &body).await?;
    Ok(HttpResponse::Ok().json(cancelled.ok_or_else(not_found)?))
}

/// `GET /api/v1/users/me/orders`: `{"orders": [...]}`, newest first. Orders
/// still `queued` (not yet persisted) are not listed; `GET /orders/{id}` shows them.
#[utoipa::path(
    get,
    path = "/api/v1/users/me/orders",
    tag = "shop",
    security(("user" = [])),
    responses(
        (status = 200, description = "The user's orders, newest first", body = OrderList),
        (status = "4XX", description = "Refused: `error.code` says why", body = ErrorBody),
        (status = 503, description = "A backing service is unavailable; retry", body = ErrorBody),
    )
)]
pub async fn my_orders(
    AuthenticatedUser(user): AuthenticatedUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.limits.check_user(&user)?;
    let listed = state
        .orders
        .orders_of(&user)
        .await?
        .unwrap_or(OrderList { orders: Vec::new() });
    Ok(HttpResponse::Ok().json(listed))
}
