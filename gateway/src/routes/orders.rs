//! The flash-sale endpoint and order status.
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use tracing::Instrument;

use seckill_common::domain::{OrderId, Quantity, SaleId, UserId};
use seckill_common::http::{ApiError, ErrorBody};
use seckill_common::kafka::trace_fields;
use seckill_common::redis_conn;
use seckill_common::sampling;
use seckill_common::stock::{self, SaleKeys};
use seckill_common::transport::streams::publish_span;

use crate::api::{Accepted, OrderState, OrderView};
use crate::auth::AuthenticatedUser;
use crate::catalog::sale_not_found;
use crate::enqueue::{enqueue, Order};
use crate::purchase::{self, Decision, StreamEntry};
use crate::state::{stock_store_down, AppState};

/// `{}` or `{"quantity": n}`. Unknown fields are refused, not ignored: a
/// client that sends `{"qty": 5}` must learn it bought one unit, not five.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseBody {
    /// Units to buy: 1 when absent, at most the sale's per-user limit.
    #[schema(minimum = 1, maximum = 100)]
    quantity: Option<i64>,
}

impl PurchaseBody {
    /// Only a JSON object is a body; serde alone would also read `[1]` as a struct.
    fn parse(raw: serde_json::Value) -> Result<Self, ApiError> {
        let invalid =
            |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_body", m);
        if !raw.is_object() {
            return Err(invalid("the body must be a JSON object".into()));
        }
        serde_json::from_value(raw).map_err(|e| invalid(e.to_string()))
    }
}

/// A sale Redis does not know is unknown, unless Redis lost its data and
/// inventory-service is still restoring it: then it is a 503 worth retrying.
/// Only this rare path pays the extra round trip.
async fn missing_sale(state: &AppState) -> ApiError {
    let mut redis = state.redis.clone();
    match state.redis_call(stock::is_warm(&mut redis)).await {
        Ok(true) => sale_not_found(),
        Ok(false) => ApiError::unavailable("the sale's stock is being restored; retry shortly"),
        Err(error) => error,
    }
}

/// The header that carries a purchase token (anti-bot step, see `purchase_token`).
pub const PURCHASE_TOKEN_HEADER: &str = "x-purchase-token";

/// `Ok(true)` with a valid purchase token, `Ok(false)` without one; a token
/// that is present but invalid is refused before Redis is asked anything.
fn purchase_token(
    req: &HttpRequest,
    state: &AppState,
    sale: &SaleId,
    user: &UserId,
) -> Result<bool, ApiError> {
    let Some(raw) = req.headers().get(PURCHASE_TOKEN_HEADER) else {
        return Ok(false);
    };
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    let token = raw.to_str().unwrap_or_default();
    state
        .purchase_tokens
        .verify(token, sale, user, now)
        .map(|()| true)
        .map_err(|why| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_purchase_token",
                format!("the purchase token is not valid for this user and sale ({why:?})"),
            )
        })
}

#[utoipa::path(
    post,
    path = "/api/v1/sales/{sale_id}/orders",
    tag = "shop",
    security(("user" = [])),
    params(
        ("sale_id" = String, Path, description = "The sale's id"),
        ("X-Purchase-Token" = Option<String>, Header, description = "Required by sales that ask for a purchase token"),
    ),
    request_body = PurchaseBody,
    responses(
        (status = 202, description = "Reserved and queued: the order will be created", body = Accepted),
        (status = "4XX", description = "Refused: `error.code` says why (409 `already_purchased`, 410 `sold_out`, 429 `rate_limited`, ...)", body = ErrorBody),
        (status = 503, description = "Nothing was reserved; retry", body = ErrorBody),
        (status = 504, description = "`order_outcome_unknown`: follow `error.order_id`, do not buy again", body = ErrorBody),
    )
)]
pub async fn place_order(
    req: HttpRequest,
    path: web::Path<String>,
    AuthenticatedUser(user): AuthenticatedUser,
    body: web::Json<serde_json::Value>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.limits.check_user(&user)?;
    let sale = SaleId::parse(&path).map_err(|_| sale_not_found())?;
    let body = PurchaseBody::parse(body.into_inner())?;
    let has_token = purchase_token(&req, &state, &sale, &user)?;
    let quantity = match body.quantity {
        None => Quantity::ONE,
        Some(raw) => Quantity::parse(raw).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_quantity",
                e.to_string(),
            )
        })?,
    };
    // A sale this gateway already knows is sold out never gets here: the
    // front door (`crate::front_door`) answered it.
    let order_id = OrderId::new(&sale);
    // From the script on, the work must finish even if this request is
    // dropped (client gone, request deadline): a script whose answer is lost
    // must be undone, and stock once taken must be enqueued or returned. So
    // it runs in a task of its own, which shutdown waits for, and this
    // handler only awaits it.
    let task_state = state.clone();
    let order = order_id.clone();
    let decided = state
        .tasks
        // Boxed: the purchase's state machine is large, and a task moves its
        // future several times (spawn, schedule, output); a box moves once.
        .track(Box::pin(async move {
            let decision = reserve(&task_state, &sale, &user, quantity, &order, has_token).await?;
            if let Decision::Accepted { remaining } = decision {
                if remaining <= 0 {
                    task_state.sold_out.mark(&sale);
                }
                crate::fault::crash_after_reserve();
                let order = Order {
                    sale: &sale,
                    user: &user,
                    quantity,
                    id: &order,
                };
                enqueue(&task_state, order).await?;
            }
            Ok::<_, ApiError>((decision, sale))
        }))
        .await
        .map_err(|error| {
            tracing::error!(%error, "purchase task failed");
            ApiError::internal()
        })?;
    let (decision, sale) = decided?;

    match decision {
        Decision::Accepted { .. } => {
            tracing::info!(order_id = %order_id, "purchase accepted and queued");
            Ok(HttpResponse::Accepted().json(Accepted {
                order_id: order_id.to_string(),
                status: OrderState::Queued,
            }))
        }
        Decision::SoldOut => {
            state.sold_out.mark(&sale);
            Err(crate::sold_out::answer())
        }
        Decision::AlreadyPurchased => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_purchased",
            "you already bought in this sale",
        )),
        Decision::NotStarted => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "sale_not_started",
            "the sale has not started",
        )),
        Decision::Ended => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "sale_ended",
            "the sale has ended",
        )),
        Decision::NotFound => Err(missing_sale(&state).await),
        Decision::Voided => Err(ApiError::unavailable(
            "this purchase attempt was abandoned; try again",
        )),
        Decision::OverLimit => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "quantity_over_limit",
            "quantity exceeds this sale's per-user limit",
        )),
        Decision::NotEnough { remaining } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "insufficient_stock",
            format!("only {remaining} units remain: ask for fewer"),
        )),
        Decision::TokenRequired => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "purchase_token_required",
            "this sale requires a purchase token: GET /api/v1/sales/{id}/purchase-token first",
        )),
    }
}

/// Runs the purchase script. When its answer does not come (Redis timeout,
/// connection lost) the script may still have run: the order id is voided
/// and its units returned if they were taken (`enqueue::undo`), so the
/// buyer is neither charged a unit nobody will order nor locked out by 409.
async fn reserve(
    state: &AppState,
    sale: &SaleId,
    user: &UserId,
    quantity: Quantity,
    order: &OrderId,
    has_token: bool,
) -> Result<Decision, ApiError> {
    let span = sampling::child(
        &tracing::Span::current(),
        || tracing::info_span!("redis.purchase_script", otel.kind = "client", db.system = "redis", db.operation = "EVALSHA", sale_id = %sale, outcome = tracing::field::Empty),
    );
    let started = std::time::Instant::now();
    let held = Order {
        sale,
        user,
        quantity,
        id: order,
    };
    // Streams mode: the script appends the order, with this span's context
    // (the consumers' spans continue the trace from it).
    let entry = state.script_enqueues().then(|| {
        let envelope = crate::enqueue::order_requested(&held);
        let key = order.to_string();
        let publish =
            span.in_scope(|| publish_span(&state.topics.order_requested, &key, &envelope));
        (envelope.to_json(), trace_fields(&publish))
    });
    let script = async {
        let mut redis = crate::worker_redis::connection(state).await;
        let entry = entry
            .as_ref()
            .map(|(payload, trace)| StreamEntry { payload, trace });
        let script = purchase::reserve_and_enqueue(
            &mut redis, sale, user, quantity, order, has_token, entry,
        );
        redis_conn::within(state.redis_timeout, script).await
    };
    // An open breaker refuses before the script is sent: nothing to undo,
    // and no wait for a connection to a Redis known to be down. Half-open,
    // a PING is the trial, not this purchase: a purchase that is refused
    // was certainly not taken, where a lost script answer is unknown.
    let probe = async {
        let mut redis = crate::worker_redis::connection(state).await;
        let ping = redis::cmd("PING");
        redis_conn::within(state.redis_timeout, ping.query_async::<()>(&mut redis)).await
    };
    let answer = state
        .breakers
        .redis
        .call_probed(script, Some(probe), |_| true)
        .instrument(span.clone())
        .await
        .inspect_err(|_| {
            span.record("outcome", "circuit_open");
            state.metrics.outcome("circuit_open");
        })?;
    state.metrics.script(started.elapsed(), answer.is_ok());
    match answer {
        Ok(decision) => {
            span.record("outcome", decision.label());
            state.metrics.outcome(decision.label());
            Ok(decision)
        }
        Err(error) => {
            span.record("outcome", "unknown");
            state.metrics.outcome("unknown");
            if state.script_enqueues() {
                tracing::warn!(%error, order_id = %order, "the purchase script's answer was lost; settling it");
                crate::enqueue::settle(state, &held).await?;
                // Queued after all. `remaining` is unknown: not sold out.
                return Ok(Decision::Accepted { remaining: 1 });
            }
            tracing::warn!(%error, order_id = %order, "the purchase script's answer was lost; undoing it");
            crate::enqueue::undo(state, &held).await;
            Err(stock_store_down(error))
        }
    }
}

/// Owner only. An order no service has persisted yet is `queued` while its
/// reservation sits in the sale's buyers hash.
#[utoipa::path(
    get,
    path = "/api/v1/orders/{order_id}",
    tag = "shop",
    security(("user" = [])),
    params(("order_id" = String, Path, description = "The order's id")),
    responses(
        (status = 200, description = "The order (`queued` until order-service has it)", body = OrderView),
        (status = "4XX", description = "Refused: `error.code` says why", body = ErrorBody),
        (status = 503, description = "A backing service is unavailable; retry", body = ErrorBody),
    )
)]
pub async fn get_order(
    path: web::Path<String>,
    AuthenticatedUser(user): AuthenticatedUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.limits.check_user(&user)?;
    let not_found = || ApiError::not_found("order_not_found", "no such order");
    let order_id = OrderId::parse(&path).map_err(|_| not_found())?;
    let persisted = state.orders.order(&order_id).await?;
    if let Some(order) = persisted {
        // Someone else's order is indistinguishable from no order.
        if order.user_id != user.as_str() {
            return Err(not_found());
        }
        return Ok(HttpResponse::Ok().json(order));
    }
    let mut redis = state.redis.clone();
    // Queued while the buyer entry names it; failed if the gateway undid it
    // (its script's answer was lost, or the broker refused it), so a buyer
    // told the outcome was unknown learns it. Both in one round trip.
    let keys = SaleKeys::new(order_id.sale_id());
    let id = order_id.to_string();
    let (holder, void): (Option<String>, bool) = state
        .redis_call(
            redis::pipe()
                .hget(&keys.buyers, user.as_str())
                .hexists(&keys.void, &id)
                .query_async(&mut redis),
        )
        .await?;
    let (status, reason) = match (holder.as_deref() == Some(id.as_str()), void) {
        (true, _) => (OrderState::Queued, None),
        (false, true) => (OrderState::Failed, Some("not_enqueued".to_owned())),
        (false, false) => return Err(not_found()),
    };
    Ok(HttpResponse::Ok().json(OrderView {
        order_id: id,
        sale_id: order_id.sale_id().to_string(),
        user_id: user.to_string(),
        status,
        reason,
        quantity: None,
        created_at: None,
        updated_at: None,
        expires_at: None,
        amount_cents: None,
        payment_ref: None,
        paid_at: None,
    }))
}
