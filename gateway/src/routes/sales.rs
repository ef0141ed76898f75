//! Reading a sale. Served from Redis (where its stock lives during the sale),
//! with inventory-service as the fallback for a sale Redis does not hold.
use std::collections::HashMap;

use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use reqwest::Method;
use serde_json::json;

use seckill_common::domain::SaleId;
use seckill_common::http::ApiError;
use seckill_common::stock::{field, SaleKeys};

use crate::startup::AppState;

fn sale_not_found() -> ApiError {
    ApiError::not_found("sale_not_found", "no such sale")
}

pub async fn get_sale(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let sale = SaleId::parse(&path).map_err(|_| sale_not_found())?;
    let mut redis = state.redis.clone();
    let hash: HashMap<String, String> =
        redis
            .hgetall(SaleKeys::new(&sale).sale)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "redis unavailable");
                ApiError::unavailable("stock store unavailable")
            })?;
    if let Some(body) = from_redis(&sale, &hash) {
        return Ok(HttpResponse::Ok().json(body));
    }
    let url = format!("{}/internal/sales/{}", state.inventory_url, sale);
    let body: serde_json::Value = state
        .upstream
        .call::<(), _>("inventory-service", Method::GET, &url, None)
        .await?
        .ok_or_else(sale_not_found)?;
    Ok(HttpResponse::Ok().json(body))
}

fn from_redis(sale: &SaleId, hash: &HashMap<String, String>) -> Option<serde_json::Value> {
    let int = |k: &str| hash.get(k).and_then(|v| v.parse::<i64>().ok());
    let time = |k: &str| int(k).and_then(DateTime::<Utc>::from_timestamp_millis);
    let (starts_at, ends_at) = (time(field::STARTS_AT)?, time(field::ENDS_AT)?);
    let now = Utc::now();
    let status = if now < starts_at {
        "upcoming"
    } else if now >= ends_at {
        "ended"
    } else {
        "active"
    };
    Some(json!({
        "sale_id": sale,
        "name": hash.get(field::NAME),
        "stock": int(field::TOTAL)?,
        "stock_remaining": int(field::STOCK)?.max(0),
        "starts_at": starts_at,
        "ends_at": ends_at,
        "per_user_limit": int(field::PER_USER_LIMIT)?,
        "status": status,
    }))
}
