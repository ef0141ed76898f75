//! What the storefront needs besides the shop's API: the server's clock, and
//! (on a development machine only) a sign-in.
use actix_web::http::header;
use actix_web::{web, HttpResponse};
use serde::Deserialize;

use seckill_common::domain::UserId;
use seckill_common::http::{ApiError, ErrorBody};

use crate::api::ServerTime;
use crate::auth::JwtKeys;

/// The server's clock. The storefront counts down to a sale's start from it
/// (a browser's clock may be minutes off), correcting for the round trip.
#[utoipa::path(
    get,
    path = "/api/v1/time",
    tag = "shop",
    responses(
        (status = 200, description = "The server's clock", body = ServerTime),
        (status = "4XX", description = "Refused: `error.code` says why", body = ErrorBody),
    )
)]
pub async fn server_time() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(ServerTime {
            now_ms: chrono::Utc::now().timestamp_millis(),
        })
}

#[derive(Deserialize)]
pub struct SignIn {
    user: String,
}

/// How long a development token lives: a working day.
const DEV_TOKEN_SECS: u64 = 12 * 3600;

/// `POST /api/v1/dev/sign-in {"user": NAME}`: a user JWT for any name, with
/// no password. Routed only when `dev_sign_in` is on, which the settings
/// allow only in `dev_mode` (and the production overlays refuse): in
/// production the shop's own identity provider issues the token (README,
/// "Storefront and console").
pub async fn dev_sign_in(
    keys: web::Data<JwtKeys>,
    body: web::Json<SignIn>,
) -> Result<HttpResponse, ApiError> {
    let user = UserId::parse(body.user.trim())
        .map_err(|e| ApiError::bad_request("invalid_user", e.to_string()))?;
    let token = keys.mint(&user, DEV_TOKEN_SECS).map_err(|e| {
        tracing::error!(error = %e, "minting a development token failed");
        ApiError::internal()
    })?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "token": token, "user_id": user.as_str() })))
}
