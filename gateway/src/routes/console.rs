//! The operators' console's one route of its own: a live sale
//! (`crate::live`). Creating a sale and reconciling are the admin API's.
use actix_web::{web, HttpResponse};

use seckill_common::domain::SaleId;
use seckill_common::http::{ApiError, ErrorBody};

use crate::api::LiveSale;
use crate::auth::Admin;
use crate::catalog::sale_not_found;
use crate::live::Live;
use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/api/v1/admin/sales/{sale_id}/live",
    tag = "admin",
    security(("admin" = [])),
    params(("sale_id" = String, Path, description = "The sale's id")),
    responses(
        (status = 200, description = "The sale now: stock, this gateway's purchase counters, orders by state, consumer backlog", body = LiveSale),
        (status = "4XX", description = "Refused: `error.code` says why", body = ErrorBody),
        (status = 503, description = "The sale cannot be read; retry", body = ErrorBody),
    )
)]
pub async fn live_sale(
    _: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
    live: web::Data<Live>,
) -> Result<HttpResponse, ApiError> {
    let sale = SaleId::parse(&path).map_err(|_| sale_not_found())?;
    let snapshot = live.snapshot(&state, &sale).await?;
    Ok(HttpResponse::Ok().json(snapshot))
}
