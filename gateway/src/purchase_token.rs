//! The optional anti-bot step of a sale (the classic "hidden sale path").
//!
//! A sale created with `require_purchase_token` sells only to requests that
//! carry `X-Purchase-Token`: a short-lived token bound to one user and one
//! sale, handed out by `GET /api/v1/sales/{id}/purchase-token` only shortly
//! before and during the sale. A bot that fires the order endpoint blind, or
//! replays one user's token for another user or sale, gets 403.
//!
//! The token is `<expiry unix secs>.<hex HMAC-SHA256>` over a domain-separated
//! message, keyed with the JWT secret: stateless (no Redis round trip to
//! check it), and never mistakable for a JWT.
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use seckill_common::domain::{SaleId, UserId};
use seckill_common::settings::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Issues and checks purchase tokens.
pub struct PurchaseTokens {
    secret: Secret,
    /// How long one token is valid.
    pub ttl_secs: u64,
    /// How long before the sale starts a token may be fetched.
    pub lead_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    Malformed,
    Expired,
    /// Bad signature: forged, or bound to another user or sale.
    Forged,
}

impl PurchaseTokens {
    pub fn new(secret: Secret, ttl_secs: u64, lead_secs: u64) -> Self {
        Self {
            secret,
            ttl_secs,
            lead_secs,
        }
    }

    fn mac(&self, sale: &SaleId, user: &UserId, expires: u64) -> HmacSha256 {
        // `new_from_slice` accepts keys of any length for HMAC.
        let mut mac = HmacSha256::new_from_slice(self.secret.expose().as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(format!("seckill-purchase-token/v1\n{sale}\n{user}\n{expires}").as_bytes());
        mac
    }

    /// A token for `user` in `sale`, valid until `now + ttl`. Returns it and its expiry.
    pub fn issue(&self, sale: &SaleId, user: &UserId, now: u64) -> (String, u64) {
        let expires = now + self.ttl_secs;
        let tag = self.mac(sale, user, expires).finalize().into_bytes();
        (format!("{expires}.{}", hex(&tag)), expires)
    }

    /// Checks signature, binding and expiry (constant-time comparison).
    pub fn verify(
        &self,
        token: &str,
        sale: &SaleId,
        user: &UserId,
        now: u64,
    ) -> Result<(), Invalid> {
        let (expires, tag) = token.split_once('.').ok_or(Invalid::Malformed)?;
        let expires: u64 = expires.parse().map_err(|_| Invalid::Malformed)?;
        let tag = unhex(tag).ok_or(Invalid::Malformed)?;
        self.mac(sale, user, expires)
            .verify_slice(&tag)
            .map_err(|_| Invalid::Forged)?;
        // A token can never be valid for longer than one TTL from now.
        if now >= expires || expires > now + self.ttl_secs {
            return Err(Invalid::Expired);
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> PurchaseTokens {
        PurchaseTokens::new(Secret::from("0123456789abcdef-test"), 30, 60)
    }

    fn ids() -> (SaleId, UserId) {
        (
            SaleId::parse("s1").unwrap(),
            UserId::parse("alice").unwrap(),
        )
    }

    #[test]
    fn issued_token_verifies_for_its_user_and_sale_only() {
        let (sale, user) = ids();
        let (token, expires) = tokens().issue(&sale, &user, 1_000);
        assert_eq!(expires, 1_030);
        assert_eq!(tokens().verify(&token, &sale, &user, 1_010), Ok(()));
        let bob = UserId::parse("bob").unwrap();
        assert_eq!(
            tokens().verify(&token, &sale, &bob, 1_010),
            Err(Invalid::Forged)
        );
        let other = SaleId::parse("s2").unwrap();
        assert_eq!(
            tokens().verify(&token, &other, &user, 1_010),
            Err(Invalid::Forged)
        );
    }

    #[test]
    fn expires_and_rejects_tampering() {
        let (sale, user) = ids();
        let (token, _) = tokens().issue(&sale, &user, 1_000);
        assert_eq!(
            tokens().verify(&token, &sale, &user, 1_030),
            Err(Invalid::Expired)
        );
        let stretched = token.replacen("1030", "9999", 1);
        assert_eq!(
            tokens().verify(&stretched, &sale, &user, 1_010),
            Err(Invalid::Forged)
        );
        for bad in ["", ".", "abc", "1030.zz", "1030.", "x.00"] {
            assert_eq!(
                tokens().verify(bad, &sale, &user, 1_010),
                Err(Invalid::Malformed),
                "{bad}"
            );
        }
        let other_key = PurchaseTokens::new(Secret::from("another-secret-of-16b"), 30, 60);
        let (forged, _) = other_key.issue(&sale, &user, 1_000);
        assert_eq!(
            tokens().verify(&forged, &sale, &user, 1_010),
            Err(Invalid::Forged)
        );
    }

    #[test]
    fn a_token_longer_lived_than_the_ttl_is_refused() {
        let (sale, user) = ids();
        let long = PurchaseTokens::new(Secret::from("0123456789abcdef-test"), 3_600, 60);
        let (token, _) = long.issue(&sale, &user, 1_000);
        assert_eq!(
            tokens().verify(&token, &sale, &user, 1_000),
            Err(Invalid::Expired)
        );
    }
}
