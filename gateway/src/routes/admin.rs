//! Operator routes. Sales are created here and persisted by inventory-service,
//! which also warms their stock into Redis before answering.
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Serialize;

use seckill_common::domain::SaleId;
use seckill_common::http::{ApiError, ErrorBody};
use seckill_common::sale_terms::{SaleTerms, SaleTermsRequest};

use crate::api::{ReconcileReport, SaleRecord};
use crate::auth::Admin;
use crate::state::AppState;

/// A sale that passed validation, as sent to inventory-service: the id this
/// gateway chose, and the terms (flat, as the operator sent them).
#[derive(Serialize)]
pub struct NewSale {
    sale_id: SaleId,
    #[serde(flatten)]
    terms: SaleTerms,
}

#[utoipa::path(
    post,
    path = "/api/v1/admin/sales",
    tag = "admin",
    security(("admin" = [])),
    request_body = SaleTermsRequest,
    responses(
        (status = 201, description = "Created, with its stock in Redis", body = SaleRecord),
        (status = "4XX", description = "Refused: `error.code` says why (422 `invalid_sale`)", body = ErrorBody),
        (status = 503, description = "inventory-service is unavailable; retry", body = ErrorBody),
    )
)]
pub async fn create_sale(
    _: Admin,
    state: web::Data<AppState>,
    body: web::Json<SaleTermsRequest>,
) -> Result<HttpResponse, ApiError> {
    let terms = SaleTerms::parse(body.into_inner()).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_sale",
            e.to_string(),
        )
    })?;
    let sale = NewSale {
        sale_id: SaleId::generate(),
        terms,
    };
    let created = state
        .inventory
        .create_sale(&sale)
        .await?
        .ok_or_else(|| ApiError::unavailable("inventory-service did not accept the sale"))?;
    tracing::info!(sale_id = %sale.sale_id, stock = sale.terms.stock, "sale created");
    // The new sale is listed by this gateway at once; the others see it
    // within `read_cache.list_ms`.
    state.catalog.forget(&sale.sale_id).await;
    Ok(HttpResponse::Created().json(created))
}

/// Runs reconciliation now on inventory-service and answers its report
/// (what it found and repaired; README, "Reconciliation").
#[utoipa::path(
    post,
    path = "/api/v1/admin/reconcile",
    tag = "admin",
    security(("admin" = [])),
    responses(
        (status = 200, description = "What reconciliation found and repaired", body = ReconcileReport),
        (status = "4XX", description = "Refused: `error.code` says why (409 `reconcile_busy`)", body = ErrorBody),
        (status = 503, description = "inventory-service is unavailable; retry", body = ErrorBody),
    )
)]
pub async fn reconcile(_: Admin, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let report = state
        .inventory
        .reconcile()
        .await?
        .ok_or_else(|| ApiError::unavailable("inventory-service cannot reconcile"))?;
    Ok(HttpResponse::Ok().json(report))
}
