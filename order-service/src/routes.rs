//! HTTP surface: the internal order API the gateway
//! proxies: lookup, the user's orders, pay and cancel. The gateway has
//! authenticated the user and passes its id; this service checks ownership.
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use sea_orm::{
    ColumnTrait, DatabaseConnection, DbErr, EntityTrait, FromQueryResult, QueryFilter, QuerySelect,
};
use serde::Deserialize;

use seckill_common::domain::{IdempotencyKey, OrderId, SaleId, UserId};
use seckill_common::http::ApiError;

use crate::lifecycle::{Answer, Lifecycle};
use crate::persistence::order;
use crate::view::OrderView;

/// Shared with every worker; cheap to clone (the pool is a handle).
#[derive(Clone)]
pub struct AppState {
    pub db: DatabaseConnection,
    /// Upper bound on one lookup, pool acquisition included.
    pub db_timeout: Duration,
    pub lifecycle: Arc<Lifecycle>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/internal/orders", web::get().to(list_orders))
        .route("/internal/orders/{order_id}", web::get().to(get_order))
        .route("/internal/orders/{order_id}/pay", web::post().to(pay))
        .route("/internal/orders/{order_id}/cancel", web::post().to(cancel))
        .route(
            "/internal/sales/{sale_id}/order-counts",
            web::get().to(order_counts),
        );
}

#[derive(Deserialize)]
pub struct PayBody {
    user_id: String,
    idempotency_key: String,
}

#[derive(Deserialize)]
pub struct UserBody {
    user_id: String,
}

fn answer(a: Answer) -> HttpResponse {
    HttpResponse::build(a.status).json(a.body)
}

fn parse_ids(order: &str, user: &str) -> Result<(OrderId, UserId), ApiError> {
    let not_found = || ApiError::not_found("order_not_found", "no such order");
    let order = OrderId::parse(order).map_err(|_| not_found())?;
    let user = UserId::parse(user).map_err(|_| not_found())?;
    Ok((order, user))
}

/// Pays an unpaid order (see `lifecycle::Lifecycle::pay`); the answer is the
/// order, paid, or the stored answer of an earlier attempt with the same key.
#[tracing::instrument(name = "pay_order", skip_all, fields(order_id = %path))]
async fn pay(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<PayBody>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let (order, user) = parse_ids(&path, &body.user_id)?;
    let key = IdempotencyKey::parse(&body.idempotency_key)
        .map_err(|e| ApiError::bad_request("invalid_idempotency_key", e.to_string()))?;
    let paid = state
        .lifecycle
        .pay(&order, &user, &key)
        .await
        .map_err(lookup_error)?;
    Ok(answer(paid))
}

#[tracing::instrument(name = "cancel_order", skip_all, fields(order_id = %path))]
async fn cancel(
    state: web::Data<AppState>,
    path: web::Path<String>,
    body: web::Json<UserBody>,
) -> Result<HttpResponse, ApiError> {
    let (order, user) = parse_ids(&path, &body.user_id)?;
    let cancelled = state
        .lifecycle
        .cancel(&order, &user)
        .await
        .map_err(lookup_error)?;
    Ok(answer(cancelled))
}

#[derive(Deserialize)]
pub struct ListQuery {
    user_id: String,
}

/// `GET /internal/orders?user_id=...`: the user's orders, newest first (at
/// most `lifecycle::LIST_LIMIT`). A query parameter rather than a path
/// segment: user ids may hold any printable character, `/` included.
async fn list_orders(
    state: web::Data<AppState>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let user = UserId::parse(&query.user_id)
        .map_err(|e| ApiError::bad_request("invalid_user_id", e.to_string()))?;
    let listed = tokio::time::timeout(state.db_timeout, state.lifecycle.list(&user))
        .await
        .map_err(|_| ApiError::unavailable("order store timed out"))?
        .map_err(lookup_error)?;
    let orders: Vec<OrderView> = listed.into_iter().map(OrderView::from).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "orders": orders })))
}

#[derive(FromQueryResult)]
struct StatusCount {
    status: String,
    orders: i64,
}

/// `GET /internal/sales/{sale_id}/order-counts`: the sale's orders by
/// status, `{"created": n, "paid": n, ...}`, for the operators' console.
/// Answered from the `(sale_id, status)` index.
async fn order_counts(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let sale = SaleId::parse(&path.into_inner())
        .map_err(|_| ApiError::not_found("sale_not_found", "no such sale"))?;
    let counting = order::Entity::find()
        .select_only()
        .column(order::Column::Status)
        .column_as(order::Column::OrderId.count(), "orders")
        .filter(order::Column::SaleId.eq(sale.as_str()))
        .group_by(order::Column::Status)
        .into_model::<StatusCount>()
        .all(&state.db);
    let counts = tokio::time::timeout(state.db_timeout, counting)
        .await
        .map_err(|_| ApiError::unavailable("order store timed out"))?
        .map_err(lookup_error)?;
    let by_status: std::collections::BTreeMap<String, i64> =
        counts.into_iter().map(|c| (c.status, c.orders)).collect();
    Ok(HttpResponse::Ok().json(by_status))
}

/// A malformed id cannot name an order, so it is "not found" rather than a
/// 400: callers need not tell the two apart.
async fn get_order(
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let not_found = || ApiError::not_found("order_not_found", "no such order");
    let order_id = OrderId::parse(&path.into_inner()).map_err(|_| not_found())?;
    let lookup = order::Entity::find_by_id(order_id.to_string()).one(&state.db);
    let found = tokio::time::timeout(state.db_timeout, lookup)
        .await
        .map_err(|_| ApiError::unavailable("order store timed out"))?
        .map_err(lookup_error)?;
    let model = found.ok_or_else(not_found)?;
    Ok(HttpResponse::Ok().json(OrderView::from(model)))
}

fn lookup_error(error: DbErr) -> ApiError {
    if seckill_common::db::is_transient(&error) {
        tracing::warn!(%error, "order lookup failed: database unavailable");
        ApiError::unavailable("order store unavailable")
    } else {
        tracing::error!(%error, "order lookup failed");
        ApiError::internal()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistence::OrderStatus;
    use chrono::Utc;

    fn model(status: OrderStatus, reason: Option<&str>) -> order::Model {
        let now = Utc::now();
        order::Model {
            order_id: "s1.0190".into(),
            sale_id: "s1".into(),
            user_id: "u1".into(),
            quantity: 1,
            status,
            reason: reason.map(str::to_owned),
            created_at: now,
            updated_at: now,
            expires_at: None,
            amount_cents: 0,
            payment_ref: None,
            paid_at: None,
        }
    }

    #[test]
    fn view_has_the_contract_fields_and_reason_only_when_failed() {
        let json = serde_json::to_value(OrderView::from(model(
            OrderStatus::Failed,
            Some("sold_out"),
        )))
        .unwrap();
        let mut keys: Vec<_> = json.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "amount_cents",
                "created_at",
                "expires_at",
                "order_id",
                "paid_at",
                "payment_ref",
                "quantity",
                "reason",
                "sale_id",
                "status",
                "updated_at",
                "user_id"
            ]
        );
        assert_eq!(json["status"], "failed");
        assert_eq!(json["reason"], "sold_out");
        let created =
            serde_json::to_value(OrderView::from(model(OrderStatus::Created, Some("stale"))))
                .unwrap();
        assert_eq!(created["status"], "created");
        assert!(created["reason"].is_null());
    }
}
