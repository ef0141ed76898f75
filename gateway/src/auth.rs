//! Who is calling: users by HS256 JWT, operators by a static admin token.
//!
//! The algorithm is pinned to HS256 (so `alg: none` or an RS256 confusion
//! never verifies), `exp` is required, `exp` and `nbf` are checked with a small
//! leeway for clock skew, and `sub` must parse as a [`UserId`].
use std::future::{ready, Ready};

use actix_web::http::{header, StatusCode};
use actix_web::{web, FromRequest, HttpRequest};
use jsonwebtoken::{decode, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use seckill_common::domain::UserId;
use seckill_common::http::ApiError;
use seckill_common::settings::Secret;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    pub iat: u64,
}

pub struct JwtKeys {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl JwtKeys {
    /// Fails only for an empty secret, which the settings refuse first.
    pub fn new(secret: &Secret, leeway_secs: u64) -> Result<Self, jsonwebtoken::errors::Error> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Ok(Self {
            decoding: DecodingKey::from_secret(secret.expose().as_bytes())?,
            encoding: EncodingKey::from_secret(secret.expose().as_bytes())?,
            validation,
        })
    }

    pub fn verify(&self, token: &str) -> Result<UserId, ApiError> {
        let data = decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| unauthorized(&format!("invalid token: {e}")))?;
        UserId::parse(&data.claims.sub).map_err(|e| unauthorized(&e.to_string()))
    }

    /// Mints a token for `user` valid for `ttl_secs` (dev and load tests).
    pub fn mint(
        &self,
        user: &UserId,
        ttl_secs: u64,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user.to_string(),
            exp: now + ttl_secs,
            nbf: None,
            iat: now,
        };
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
    }
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// Proof that the request carries a valid user token.
pub struct AuthenticatedUser(pub UserId);

impl FromRequest for AuthenticatedUser {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let result = match (req.app_data::<web::Data<JwtKeys>>(), bearer(req)) {
            (None, _) => Err(ApiError::internal()),
            (_, None) => Err(unauthorized("missing bearer token")),
            (Some(keys), Some(token)) => keys.verify(token).map(AuthenticatedUser),
        };
        ready(result)
    }
}

/// The admin token, compared in constant time.
pub struct AdminToken(pub Secret);

/// Proof that the request carries the admin token.
pub struct Admin;

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let result = match (req.app_data::<web::Data<AdminToken>>(), bearer(req)) {
            (None, _) => Err(ApiError::internal()),
            (_, None) => Err(unauthorized("missing bearer token")),
            (Some(expected), Some(token)) => {
                if bool::from(token.as_bytes().ct_eq(expected.0.expose().as_bytes())) {
                    Ok(Admin)
                } else {
                    Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "admin token required",
                    ))
                }
            }
        };
        ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> JwtKeys {
        JwtKeys::new(&Secret::from("0123456789abcdef-test"), 0).unwrap()
    }

    #[test]
    fn minted_token_verifies() {
        let user = UserId::parse("alice").unwrap();
        let token = keys().mint(&user, 60).unwrap();
        assert_eq!(keys().verify(&token).unwrap(), user);
    }

    #[test]
    fn rejects_other_secret_expired_and_alg_none() {
        let user = UserId::parse("alice").unwrap();
        let other = JwtKeys::new(&Secret::from("another-secret-of-16b"), 0)
            .unwrap()
            .mint(&user, 60)
            .unwrap();
        assert!(keys().verify(&other).is_err());

        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: "alice".into(),
            exp: now - 120,
            nbf: None,
            iat: now - 200,
        };
        let key = EncodingKey::from_secret(b"0123456789abcdef-test").unwrap();
        let expired = encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap();
        assert!(keys().verify(&expired).is_err());

        // {"alg":"none","typ":"JWT"} . {"sub":"alice","exp":9999999999} . (no signature)
        let none =
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.";
        assert!(keys().verify(none).is_err());

        let future = Claims {
            sub: "alice".into(),
            exp: now + 600,
            nbf: Some(now + 300),
            iat: now,
        };
        let not_yet = encode(&Header::new(Algorithm::HS256), &future, &key).unwrap();
        assert!(keys().verify(&not_yet).is_err());
    }
}
