//! Reading sales: the list and one sale, both through the read cache
//! (`crate::catalog`); and the purchase token of a sale.
use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use redis::AsyncCommands;

use seckill_common::domain::SaleId;
use seckill_common::http::{ApiError, ErrorBody};
use seckill_common::stock::{field, SaleKeys};

use crate::api::{PurchaseToken, SaleView};
use crate::auth::AuthenticatedUser;
use crate::catalog::{sale_not_found, Page, PageQuery};
use crate::state::AppState;

/// The sales a shopper can see: upcoming and active, then those ended
/// within `read_cache.ended_visible_secs`, by start time, each with its live
/// stock (at most `read_cache.fresh_ms` behind).
#[utoipa::path(
    get,
    path = "/api/v1/sales",
    tag = "shop",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of sales", body = Page),
        (status = "4XX", description = "Refused: `error.code` says why", body = ErrorBody),
        (status = 503, description = "A backing service is unavailable; retry", body = ErrorBody),
    )
)]
pub async fn list_sales(
    query: web::Query<PageQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let page = state.catalog.page(query.into_inner().parse()?).await?;
    Ok(aged(page.stale_age_ms).json(page))
}

/// A sale, from the gateway's read cache (`crate::catalog`). While Redis or
/// inventory-service is unavailable, the last good copy, marked stale.
#[utoipa::path(
    get,
    path = "/api/v1/sales/{sale_id}",
    tag = "shop",
    params(("sale_id" = String, Path, description = "The sale's id")),
    responses(
        (status = 200, description = "The sale; `stale_age_ms` and the `Age` header when it is the last good copy", body = SaleView),
        (status = "4XX", description = "Refused: `error.code` says why", body = ErrorBody),
        (status = 503, description = "A backing service is unavailable; retry", body = ErrorBody),
    )
)]
pub async fn get_sale(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // Malformed ids never leave the gateway.
    let sale = SaleId::parse(&path).map_err(|_| sale_not_found())?;
    let view = state.catalog.sale(&sale).await?;
    Ok(aged(view.stale_age_ms).json(view))
}

/// A 200, with `Age` (whole seconds) when the answer is a stale copy.
fn aged(stale_age_ms: Option<u64>) -> actix_web::HttpResponseBuilder {
    let mut answer = HttpResponse::Ok();
    if let Some(age) = stale_age_ms {
        answer.insert_header((header::AGE, age / 1_000));
    }
    answer
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
    let (starts_at, ends_at): (Option<i64>, Option<i64>) = state.redis_call(window).await?;
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
