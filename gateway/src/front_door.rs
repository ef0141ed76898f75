//! The front door: what this gateway can answer from memory is answered
//! here, before anything else runs: a purchase of a sale it knows is sold
//! out, and a read its read cache holds fresh (below).
//!
//! Why first, before authentication, rate limits and the request's span:
//! after the last unit the crowd keeps coming, and every one of them gets the
//! same answer. It holds nothing private (a sale's remaining stock is public,
//! `GET /api/v1/sales/{id}`) and costs nothing downstream, so there is
//! nothing to protect. Verifying a JWT, three rate limiters, a traced root
//! span, the router's regex and a JSON parse for it cost more than twice the
//! answer itself (docs/benchmarks.md). The answer is still counted in the
//! HTTP and outcome metrics, and the body is still read (bounded), so the
//! client's keep-alive connection stays open.
//!
//! Only the memory of [`crate::sold_out`] is consulted; a sale not known to
//! be sold out takes the full path, where Redis decides.
//!
//! The storefront's and the console's files ([`crate::storefront`]) are
//! answered here too: public, in memory, and asked for by the whole crowd.
//!
//! Reads of a sale this gateway holds fresh in its read cache
//! ([`crate::catalog`]), and of an id it knows to be no sale, are answered
//! here too, for the same reasons: the crowd refreshing a sale page (or a
//! bot flooding made-up ids) gets a public answer that costs nothing behind
//! the gateway. A read the cache cannot answer (a miss, a stale or
//! missing entry) takes the full path, rate limits included, so what does
//! reach Redis or PostgreSQL is still limited.
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::ContentType;
use actix_web::http::{header, ConnectionType, Method};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpMessage, HttpResponse};
use futures::StreamExt;

use seckill_common::domain::SaleId;

use crate::catalog::Cached;
use crate::state::AppState;

/// The sale id of a purchase path, found without the router's regex (and
/// without allocating: this runs for every request).
fn purchased_sale(path: &str) -> Option<&str> {
    let raw = path
        .strip_prefix("/api/v1/sales/")?
        .strip_suffix("/orders")?;
    SaleId::is_valid(raw).then_some(raw)
}

/// The sale id of `GET /api/v1/sales/{sale_id}`, the same way.
fn read_sale(path: &str) -> Option<&str> {
    let raw = path.strip_prefix("/api/v1/sales/")?;
    SaleId::is_valid(raw).then_some(raw)
}

/// A bodiless GET of a sale the read cache holds fresh: its answer.
async fn cached_read(req: &ServiceRequest) -> Option<(web::Data<AppState>, Cached)> {
    if req.method() != Method::GET
        || req.headers().contains_key(header::CONTENT_LENGTH)
        || req.headers().contains_key(header::TRANSFER_ENCODING)
    {
        return None;
    }
    let sale = read_sale(req.path())?;
    let state = req.app_data::<web::Data<AppState>>()?;
    let body = state.catalog.cached(sale).await?;
    Some((state.clone(), body))
}

pub async fn answer_from_memory(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let page = crate::storefront::may_serve(&req)
        .then(|| req.app_data::<web::Data<AppState>>())
        .flatten()
        .and_then(|state| state.storefront.answer(&req));
    if let Some(page) = page {
        return Ok(req.into_response(page).map_into_right_body());
    }
    if let Some((state, cached)) = cached_read(&req).await {
        let started = Instant::now();
        let answers = &state.cached_reads;
        let (mut response, metrics, body) = match cached {
            Cached::Sale(body) => (HttpResponse::Ok(), &answers.found, body),
            Cached::Missing => (
                HttpResponse::NotFound(),
                &answers.missing,
                answers.not_found.clone(),
            ),
        };
        let response = response.content_type(ContentType::json()).body(body);
        metrics.observe(started.elapsed());
        return Ok(req.into_response(response).map_into_right_body());
    }
    sold_out(req, next).await
}

async fn sold_out(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let known_sold_out = req.method() == Method::POST
        && purchased_sale(req.path()).is_some_and(|sale| {
            req.app_data::<web::Data<AppState>>()
                .is_some_and(|state| state.sold_out.is_sold_out(sale))
        });
    let state = match req.app_data::<web::Data<AppState>>() {
        Some(state) if known_sold_out => state.clone(),
        _ => {
            return next
                .call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
    };
    let started = Instant::now();
    // Read the body (it is small, and bounded) so the connection can be reused.
    let mut payload = req.take_payload();
    let mut read = 0usize;
    let mut keep_alive = true;
    // A body that never arrives must not hold the connection: the same
    // deadline as every other request, then the connection is closed.
    let drained = tokio::time::timeout(state.request_timeout, async {
        while let Some(chunk) = payload.next().await {
            read = read.saturating_add(chunk.map(|c| c.len()).unwrap_or(usize::MAX));
            if read > state.max_body_bytes {
                return false;
            }
        }
        true
    })
    .await;
    if drained != Ok(true) {
        keep_alive = false;
    }
    let answer = &state.sold_out_answer;
    let mut response = HttpResponse::Gone()
        .content_type(ContentType::json())
        .body(answer.body.clone());
    if !keep_alive {
        response
            .head_mut()
            .set_connection_type(ConnectionType::Close);
    }
    state.metrics.sold_out();
    answer.requests.observe(started.elapsed());
    Ok(req.into_response(response).map_into_right_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sale_of_a_purchase_path_only() {
        assert_eq!(
            purchased_sale("/api/v1/sales/s-1/orders").map(|s| s.to_string()),
            Some("s-1".to_owned())
        );
        for other in [
            "/api/v1/sales/s-1",
            "/api/v1/sales//orders",
            "/api/v1/sales/a/b/orders",
            "/api/v1/sales/s-1/orders/",
            "/api/v1/sales/s%2D1/orders",
            "/api/v2/sales/s-1/orders",
        ] {
            assert!(purchased_sale(other).is_none(), "{other}");
        }
    }

    #[test]
    fn finds_the_sale_of_a_read_path_only() {
        assert_eq!(read_sale("/api/v1/sales/s-1"), Some("s-1"));
        for other in [
            "/api/v1/sales/",
            "/api/v1/sales",
            "/api/v1/sales/s-1/orders",
            "/api/v1/sales/s-1/purchase-token",
            "/api/v1/sales/s-1/",
            "/api/v1/sales/s%2D1",
        ] {
            assert!(read_sale(other).is_none(), "{other}");
        }
    }
}
