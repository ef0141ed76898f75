//! Operator routes. Sales are created here and persisted by inventory-service,
//! which also warms their stock into Redis before answering.
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};

use seckill_common::domain::{Quantity, SaleId};
use seckill_common::http::ApiError;

use crate::auth::Admin;
use crate::startup::AppState;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSaleBody {
    name: String,
    stock: i64,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    #[serde(default = "one")]
    per_user_limit: i64,
    /// Anti-bot step: buyers must first fetch a purchase token (README).
    #[serde(default)]
    require_purchase_token: bool,
    /// Seconds a buyer has to pay before the order expires (default 900).
    #[serde(default = "fifteen_minutes")]
    payment_window_secs: i64,
    /// Price of one unit in the smallest currency unit (default 0).
    #[serde(default)]
    unit_price_cents: i64,
}

fn fifteen_minutes() -> i64 {
    i64::from(seckill_common::events::DEFAULT_PAYMENT_WINDOW_SECS)
}

fn one() -> i64 {
    1
}

/// A sale that passed validation, ready for inventory-service.
#[derive(Serialize)]
pub struct NewSale {
    sale_id: SaleId,
    name: String,
    stock: i64,
    starts_at: DateTime<Utc>,
    ends_at: DateTime<Utc>,
    per_user_limit: i64,
    require_purchase_token: bool,
    payment_window_secs: i64,
    unit_price_cents: i64,
}

impl NewSale {
    pub const MAX_STOCK: i64 = 10_000_000;

    fn parse(body: NewSaleBody) -> Result<Self, ApiError> {
        let invalid = |m: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_sale", m);
        let name = body.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(invalid("name must be 1-200 characters"));
        }
        if !(1..=Self::MAX_STOCK).contains(&body.stock) {
            return Err(invalid("stock must be between 1 and 10000000"));
        }
        if body.ends_at <= body.starts_at {
            return Err(invalid("ends_at must be after starts_at"));
        }
        if !(1..=i64::from(Quantity::MAX)).contains(&body.per_user_limit) {
            return Err(invalid("per_user_limit must be between 1 and 100"));
        }
        if !(1..=86_400).contains(&body.payment_window_secs) {
            return Err(invalid("payment_window_secs must be between 1 and 86400"));
        }
        if !(0..=1_000_000_000).contains(&body.unit_price_cents) {
            return Err(invalid("unit_price_cents must be between 0 and 1000000000"));
        }
        Ok(Self {
            sale_id: SaleId::generate(),
            name: name.to_owned(),
            stock: body.stock,
            starts_at: body.starts_at,
            ends_at: body.ends_at,
            per_user_limit: body.per_user_limit,
            require_purchase_token: body.require_purchase_token,
            payment_window_secs: body.payment_window_secs,
            unit_price_cents: body.unit_price_cents,
        })
    }
}

pub async fn create_sale(
    _: Admin,
    state: web::Data<AppState>,
    body: web::Json<NewSaleBody>,
) -> Result<HttpResponse, ApiError> {
    let sale = NewSale::parse(body.into_inner())?;
    let url = format!("{}/internal/sales", state.inventory_url);
    // Safe to retry: inventory-service upserts by the sale id chosen here.
    let created: serde_json::Value = state
        .upstream
        .call("inventory-service", Method::POST, &url, Some(&sale))
        .await?
        .ok_or_else(|| ApiError::unavailable("inventory-service did not accept the sale"))?;
    tracing::info!(sale_id = %sale.sale_id, stock = sale.stock, "sale created");
    Ok(HttpResponse::Created().json(created))
}

/// Runs reconciliation now on inventory-service and answers its report
/// (what it found and repaired; README, "Reconciliation").
pub async fn reconcile(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let url = format!("{}/internal/reconcile", state.inventory_url);
    // Not retried: a run is cheap to ask for again, and the operator decides.
    let report: serde_json::Value = state
        .upstream
        .call_once::<(), _>("inventory-service", Method::POST, &url, None)
        .await?
        .ok_or_else(|| ApiError::unavailable("inventory-service cannot reconcile"))?;
    Ok(HttpResponse::Ok().json(report))
}
