//! The services' internal API (`/internal/...`) answers only the gateway.
//!
//! Those routes take the user id from the request and act on it (cancel an
//! order, create a sale), so anything that reaches the port must not be
//! able to call them. Two locks, both required: the network policy admits
//! only the gateway's pods to the HTTP port (metrics have a port of their
//! own, see `metrics::serve`), and every internal call carries a shared
//! secret, `SECKILL_INTERNAL_TOKEN`, as `Authorization: Bearer ...`.
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, Error, ResponseError};

use crate::http::ApiError;
use crate::settings::Secret;

/// The path prefix the token guards.
pub const INTERNAL_PREFIX: &str = "/internal/";

/// The shared secret, as app data of the services that check it, held as
/// the `Authorization` value that carries it (built once, not per request).
#[derive(Clone)]
pub struct InternalToken {
    bearer: Secret,
}

impl InternalToken {
    pub fn new(secret: &Secret) -> Self {
        Self {
            bearer: Secret::from(format!("Bearer {}", secret.expose()).as_str()),
        }
    }

    /// The `Authorization` header value that carries it.
    pub fn bearer(&self) -> &str {
        self.bearer.expose()
    }

    fn admits(&self, presented: &[u8]) -> bool {
        let expected = self.bearer().as_bytes();
        // Compared in time independent of where the two differ.
        presented.len() == expected.len()
            && presented
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Middleware: a request under [`INTERNAL_PREFIX`] without the token gets
/// 401 `unauthorized`; everything else passes.
pub async fn require(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    if !req.path().starts_with(INTERNAL_PREFIX) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let admitted = match req.app_data::<web::Data<InternalToken>>() {
        Some(token) => req
            .headers()
            .get(header::AUTHORIZATION)
            .is_some_and(|v| token.admits(v.as_bytes())),
        None => false,
    };
    if admitted {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let refused = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "internal routes answer the gateway only",
    );
    Ok(req
        .into_response(refused.error_response())
        .map_into_right_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_is_admitted() {
        let token = InternalToken::new(&Secret::from("s3cret-internal-token"));
        assert!(token.admits(b"Bearer s3cret-internal-token"));
        for wrong in [
            &b"Bearer s3cret-internal-tokeN"[..],
            b"Bearer s3cret-internal-token ",
            b"s3cret-internal-token",
            b"",
        ] {
            assert!(!token.admits(wrong));
        }
    }
}
