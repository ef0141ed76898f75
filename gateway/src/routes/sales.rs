//! Reading a sale. Served from Redis (where its stock lives during the sale),
//! with inventory-service as the fallback for a sale Redis does not hold.
use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use redis::AsyncCommands;

use seckill_common::domain::SaleId;
use seckill_common::http::{ApiError, ErrorBody};
use seckill_common::redis_conn;
use seckill_common::stock::{field, SaleKeys};

use crate::api::{PurchaseToken, SaleStatus, SaleView};
use crate::auth::AuthenticatedUser;
use crate::state::AppState;

fn sale_not_found() -> ApiError {
    ApiError::not_found("sale_not_found", "no such sale")
}

/// A sale: from Redis while it is there (its stock is live), else from
/// inventory-service.
#[utoipa::path(
    get,
    path = "/api/v1/sales/{sale_id}",
    tag = "shop",
    params(("sale_id" = String, Path, description = "The sale's id")),
    responses(
        (status = 200, description = "The sale", body = SaleView),
        (status = "4XX", description = "Refused: `error.code` says why", body = ErrorBody),
        (status = 503, description = "A backing service is unavailable; retry", body = ErrorBody),
    )
)]
pub async fn get_sale(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let sale = SaleId::parse(&path).map_err(|_| sale_not_found())?;
    let mut redis = state.redis.clone();
    let hash: HashMap<String, String> = redis_conn::within(
        state.redis_timeout,
        redis.hgetall(SaleKeys::new(&sale).sale),
    )
    .await
    .map_err(|e| {
        tracing::warn!(error = %e, "redis unavailable");
        ApiError::unavailable("stock store unavailable")
    })?;
    if let Some(view) = from_redis(&sale, &hash) {
        return Ok(HttpResponse::Ok().json(view));
    }
    let record = state
        .inventory
        .sale(&sale)
        .await?
        .ok_or_else(sale_not_found)?;
    Ok(HttpResponse::Ok().json(record.view(Utc::now())))
}

fn from_redis(sale: &SaleId, hash: &HashMap<String, String>) -> Option<SaleView> {
    let int = |k: &str| hash.get(k).and_then(|v| v.parse::<i64>().ok());
    let time = |k: &str| int(k).and_then(DateTime::<Utc>::from_timestamp_millis);
    let (starts_at, ends_at) = (time(field::STARTS_AT)?, time(field::ENDS_AT)?);
    Some(SaleView {
        sale_id: sale.to_string(),
        name: hash.get(field::NAME).cloned().unwrap_or_default(),
        stock: int(field::TOTAL)?,
        stock_remaining: int(field::STOCK)?.max(0),
        starts_at,
        ends_at,
        per_user_limit: int(field::PER_USER_LIMIT)?,
        require_purchase_token: hash.get(field::REQUIRE_PURCHASE_TOKEN).map(String::as_str)
            == Some("1"),
        status: SaleStatus::at(Utc::now(), starts_at, ends_at),
    })
}

/// `GET /api/v1/sales/{id}/purchase-token`: the anti-bot step. A short-lived
/// token bound to this user and sale, handed out only from
/// `purchase_token_lead_secs` before the start until the end, so a bot
/// cannot stock up on tokens ahead of time. See `crate::purchase_token`.
#[utoipa::path(
    get,
    path = "/api/v1/sales/{sale_id}/purchase-token",
    tag = "shop",
    security(("user" = [])),
    params(("sale_id" = String, Path, description = "The sale's id")),
    responses(
        (status = 200, description = "A token for this user and sale", body = PurchaseToken),
        (status = "4XX", description = "Refused: `error.code` says why", body = ErrorBody),
        (status = 503, description = "The stock store is unavailable; retry", body = ErrorBody),
    )
)]
pub async fn purchase_token(
    path: web::Path<String>,
    AuthenticatedUser(user): AuthenticatedUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.limits.check_user(&user)?;
    let sale = SaleId::parse(&path).map_err(|_| sale_not_found())?;
    let mut redis = state.redis.clone();
    let window = redis.hmget(
        SaleKeys::new(&sale).sale,
        &[field::STARTS_AT, field::ENDS_AT],
    );
    let (starts_at, ends_at): (Option<i64>, Option<i64>) =
        redis_conn::within(state.redis_timeout, window)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "redis unavailable");
                ApiError::unavailable("stock store unavailable")
            })?;
    let (Some(starts_at), Some(ends_at)) = (starts_at, ends_at) else {
        return Err(sale_not_found());
    };
    let now = Utc::now();
    let now_ms = now.timestamp_millis();
    let lead_ms =
        i64::try_from(state.purchase_tokens.lead_secs.saturating_mul(1_000)).unwrap_or(i64::MAX);
    if now_ms < starts_at.saturating_sub(lead_ms) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "sale_not_started",
            "purchase tokens are handed out shortly before the sale starts",
        ));
    }
    if now_ms >= ends_at {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "sale_ended",
            "the sale has ended",
        ));
    }
    let now_secs = u64::try_from(now.timestamp()).unwrap_or(0);
    let (token, expires) = state.purchase_tokens.issue(&sale, &user, now_secs);
    let expires_at = i64::try_from(expires)
        .ok()
        .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0));
    Ok(HttpResponse::Ok().json(PurchaseToken {
        sale_id: sale.to_string(),
        purchase_token: token,
        expires_at,
        header: "X-Purchase-Token".to_owned(),
    }))
}
