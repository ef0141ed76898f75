//! The flash sale under test: created through the gateway's admin API, and
//! bought by N users whose tokens are minted here with the gateway's secret.
use std::time::Duration;

use bytes::Bytes;
use chrono::{SecondsFormat, Utc};
use hyper::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::Method;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::json;

use crate::error::{usage, BenchError, Result};
use crate::load;
use crate::target::Target;

/// What the gateway verifies: HS256, `sub` = user id, `exp` required.
#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
    iat: u64,
}

/// `Bearer <jwt>` for users `{prefix}0 .. {prefix}{n-1}`.
pub fn mint_tokens(secret: &str, prefix: &str, n: u64, ttl: Duration) -> Result<Vec<HeaderValue>> {
    let key = EncodingKey::from_secret(secret.as_bytes())?;
    let header = Header::new(Algorithm::HS256);
    let iat = jsonwebtoken::get_current_timestamp();
    let exp = iat + ttl.as_secs();
    (0..n)
        .map(|i| {
            let sub = format!("{prefix}{i}");
            let token = encode(
                &header,
                &Claims {
                    sub: &sub,
                    exp,
                    iat,
                },
                &key,
            )?;
            HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|e| usage(format!("user prefix {prefix:?}: {e}")))
        })
        .collect()
}

/// `POST /api/v1/admin/sales`: a sale open from a second ago for an hour,
/// one unit per user. Returns its id.
pub async fn create(gateway: &Target, admin_token: &str, name: &str, stock: u64) -> Result<String> {
    let now = Utc::now();
    let body = json!({
        "name": name,
        "stock": stock,
        "starts_at": (now - chrono::Duration::seconds(1)).to_rfc3339_opts(SecondsFormat::Secs, true),
        "ends_at": (now + chrono::Duration::hours(1)).to_rfc3339_opts(SecondsFormat::Secs, true),
        "per_user_limit": 1,
    });
    let bearer = HeaderValue::from_str(&format!("Bearer {admin_token}"))
        .map_err(|_| usage("the admin token is not a valid header value"))?;
    let headers: [(HeaderName, HeaderValue); 2] = [
        (AUTHORIZATION, bearer),
        (CONTENT_TYPE, HeaderValue::from_static("application/json")),
    ];
    let target = gateway.with_path("/api/v1/admin/sales")?;
    let (status, answer) = load::one_off(
        &target,
        Method::POST,
        &headers,
        Bytes::from(serde_json::to_vec(&body)?),
        Duration::from_secs(30),
    )
    .await?;
    if status != 201 {
        return Err(BenchError::Http(format!(
            "creating the sale answered {status}: {}",
            String::from_utf8_lossy(&answer)
        )));
    }
    let value: serde_json::Value = serde_json::from_slice(&answer)?;
    match &value["sale_id"] {
        serde_json::Value::String(id) => Ok(id.clone()),
        serde_json::Value::Number(id) => Ok(id.to_string()),
        _ => Err(BenchError::Http(format!("no sale_id in {value}"))),
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{decode, DecodingKey, Validation};

    use super::*;

    #[derive(serde::Deserialize)]
    struct Decoded {
        sub: String,
        exp: u64,
        iat: u64,
    }

    #[test]
    fn tokens_verify_with_the_same_secret() {
        let tokens =
            mint_tokens("0123456789abcdef-secret", "u-", 3, Duration::from_secs(60)).unwrap();
        assert_eq!(tokens.len(), 3);
        let raw = tokens[2].to_str().unwrap().strip_prefix("Bearer ").unwrap();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let key = DecodingKey::from_secret(b"0123456789abcdef-secret").unwrap();
        let claims = decode::<Decoded>(raw, &key, &validation).unwrap().claims;
        assert_eq!(claims.sub, "u-2");
        assert_eq!(claims.exp, claims.iat + 60);
    }
}
