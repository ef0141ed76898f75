use std::time::Duration;

use actix_web::{web, HttpResponse};

use crate::startup::AppState;

/// Ready when Redis answers and the broker answers a metadata request.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let timeout = Duration::from_millis(500);
    let redis = seckill_common::redis_conn::is_reachable(&state.redis, timeout);
    let producer = state.producer.clone();
    let broker = tokio::task::spawn_blocking(move || producer.is_reachable(timeout));
    let (redis, broker) = tokio::join!(redis, broker);
    seckill_common::http::readiness(&[("redis", redis), ("kafka", broker.unwrap_or(false))])
}
