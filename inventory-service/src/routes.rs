//! HTTP: the internal sale API the gateway's admin
//! endpoints call. Not exposed publicly: the gateway authenticates admins.
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use chrono::{DateTime, Utc};
use redis::RedisError;
use sea_orm::{DatabaseConnection, DbErr};
use seckill_common::redis_conn::Conn;

use seckill_common::db;
use seckill_common::domain::SaleId;
use seckill_common::http::ApiError;

use crate::reconcile::{ReconcileError, Reconciler};
use crate::sales::{self, Created, NewSale, SaleView};
use crate::warm::{self, WarmError};

/// Shared by every worker; each field is a cheap handle onto one pool or client.
pub struct AppState {
    pub db: DatabaseConnection,
    pub redis: Conn,
    pub reconciler: Arc<Reconciler>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/internal/sales", web::post().to(create_sale))
        .route("/internal/sales", web::get().to(list_sales))
        .route("/internal/sales/{sale_id}", web::get().to(get_sale))
        .route("/internal/reconcile", web::post().to(reconcile));
}

/// Idempotent on `sale_id`: 201 when created, 200 for an identical repeat,
/// 409 when the id is taken by different parameters. Either way the sale is
/// (re-)warmed, so a repeat also completes a previous attempt that failed at Redis.
#[tracing::instrument(name = "create_sale", skip_all, fields(sale_id = %body.id))]
async fn create_sale(
    state: web::Data<AppState>,
    body: web::Json<NewSale>,
) -> Result<HttpResponse, ApiError> {
    let new = body.into_inner();
    let (status, row) = match sales::create(&state.db, &new).await.map_err(db_failure)? {
        Created::New(row) => (StatusCode::CREATED, row),
        Created::Existing(row) => (StatusCode::OK, row),
        Created::Conflict(_) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "sale_conflict",
                "a sale with this id already exists with different parameters",
            ))
        }
    };
    warm::warm(&state.db, &state.redis, &new.id)
        .await
        .map_err(|e| match e {
            WarmError::Db(e) => db_failure(e),
            WarmError::Redis(e) => redis_failure(e),
        })?;
    if status == StatusCode::CREATED {
        tracing::info!(stock = row.total_stock, "sale created");
    }
    Ok(HttpResponse::build(status).json(SaleView::from(row)))
}

#[tracing::instrument(name = "get_sale", skip(state))]
async fn get_sale(
    state: web::Data<AppState>,
    sale_id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let missing = || ApiError::not_found("sale_not_found", "no such sale");
    // An id that cannot be valid cannot exist either.
    let id = SaleId::parse(&sale_id).map_err(|_| missing())?;
    let row = sales::find(&state.db, &id)
        .await
        .map_err(db_failure)?
        .ok_or_else(missing)?;
    Ok(HttpResponse::Ok().json(SaleView::from(row)))
}

#[derive(Debug, serde::Deserialize)]
struct ListQuery {
    /// Unix milliseconds: sales that end after it.
    ends_after_ms: i64,
}

/// The sales the gateways list, read once per gateway per `read_cache.list_ms`.
#[tracing::instrument(name = "list_sales", skip(state))]
async fn list_sales(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let since = DateTime::<Utc>::from_timestamp_millis(query.ends_after_ms)
        .ok_or_else(|| ApiError::bad_request("invalid_query", "ends_after_ms is out of range"))?;
    let rows = sales::ending_after(&state.db, since)
        .await
        .map_err(db_failure)?;
    Ok(HttpResponse::Ok().json(rows.into_iter().map(SaleView::from).collect::<Vec<_>>()))
}

/// Runs reconciliation now (waiting for a run in progress) and answers its report.
#[tracing::instrument(name = "reconcile", skip_all)]
async fn reconcile(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.reconciler.run_once(true).await {
        Ok(Some(report)) => Ok(HttpResponse::Ok().json(report)),
        Ok(None) | Err(ReconcileError::Busy) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "reconcile_busy",
            "another replica is reconciling; try again",
        )),
        Err(ReconcileError::Db(e)) => Err(db_failure(e)),
        Err(ReconcileError::Redis(e)) => Err(redis_failure(e)),
    }
}

fn db_failure(error: DbErr) -> ApiError {
    if db::is_transient(&error) {
        tracing::warn!(%error, "database unavailable");
        ApiError::unavailable("database unavailable")
    } else {
        tracing::error!(%error, "database error");
        ApiError::internal()
    }
}

fn redis_failure(error: RedisError) -> ApiError {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
    {
        tracing::warn!(%error, "redis unavailable");
        ApiError::unavailable("redis unavailable")
    } else {
        tracing::error!(%error, "redis error");
        ApiError::internal()
    }
}
