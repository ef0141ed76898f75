//! Domain newtypes. Raw input is `parse`d once at the edge; everything past
//! that point receives proof that the value is valid, never a bare string.
use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DomainError {
    #[error("sale id must be 1-64 characters of A-Z, a-z, 0-9, '-' or '_'")]
    InvalidSaleId,
    #[error("user id must be 1-128 printable characters without spaces")]
    InvalidUserId,
    #[error("order id must look like '<sale id>.<uuid>'")]
    InvalidOrderId,
    #[error("quantity must be between 1 and {max}")]
    InvalidQuantity { max: u32 },
    #[error("the idempotency key must be 1-128 printable ASCII characters")]
    InvalidIdempotencyKey,
}

/// A sale identifier. Restricted to a URL- and Redis-key-safe alphabet so it
/// can be embedded in a Redis hash tag (`{...}`) and in an order id without escaping.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SaleId(String);

impl SaleId {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        Self::is_valid(raw)
            .then(|| Self(raw.to_owned()))
            .ok_or(DomainError::InvalidSaleId)
    }

    /// What `parse` accepts, checked without allocating (hot paths that
    /// only look a sale up, see `Borrow<str>` below).
    pub fn is_valid(raw: &str) -> bool {
        !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    }

    /// A new, time-ordered id (UUIDv7 without dashes).
    pub fn generate() -> Self {
        Self(Uuid::now_v7().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The authenticated user's id, taken from the JWT `sub` claim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = !raw.is_empty() && raw.len() <= 128 && raw.chars().all(|c| c.is_ascii_graphic());
        ok.then(|| Self(raw.to_owned()))
            .ok_or(DomainError::InvalidUserId)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A client's key for one payment attempt (the `Idempotency-Key` header):
/// a repeat with the same key gets the first attempt's answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok = (1..=128).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(raw.to_owned()))
            .ok_or(DomainError::InvalidIdempotencyKey)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An order id. It carries its sale (`<sale id>.<uuid>`) so that the gateway
/// can answer "queued" for an order that no service has persisted yet, by
/// looking in that sale's Redis buyers hash, without a second lookup key
/// outside the sale's hash slot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrderId {
    sale: SaleId,
    id: Uuid,
}

impl OrderId {
    pub fn new(sale: &SaleId) -> Self {
        Self {
            sale: sale.clone(),
            id: Uuid::now_v7(),
        }
    }

    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let (sale, id) = raw.rsplit_once('.').ok_or(DomainError::InvalidOrderId)?;
        let sale = SaleId::parse(sale).map_err(|_| DomainError::InvalidOrderId)?;
        let id = Uuid::try_parse(id).map_err(|_| DomainError::InvalidOrderId)?;
        Ok(Self { sale, id })
    }

    pub fn sale_id(&self) -> &SaleId {
        &self.sale
    }

    /// When the id was minted (the UUIDv7 timestamp, millisecond precision):
    /// how long a reservation has existed, even where nothing else recorded it.
    /// `None` for ids that are not UUIDv7.
    pub fn created_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let (secs, nanos) = self.id.get_timestamp()?.to_unix();
        chrono::DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)
    }
}

/// Units in one purchase. The per-sale limit is checked separately (it is data, not type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "u32")]
pub struct Quantity(u32);

impl Quantity {
    /// No sale allows more than this in one order; it bounds what reaches Redis.
    pub const MAX: u32 = 100;
    pub const ONE: Quantity = Quantity(1);

    pub fn parse(raw: i64) -> Result<Self, DomainError> {
        u32::try_from(raw)
            .ok()
            .filter(|q| (1..=Self::MAX).contains(q))
            .map(Self)
            .ok_or(DomainError::InvalidQuantity { max: Self::MAX })
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

macro_rules! string_conversions {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = DomainError;
            fn try_from(raw: String) -> Result<Self, Self::Error> {
                Self::parse(&raw)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.to_string()
            }
        }
        impl std::str::FromStr for $t {
            type Err = DomainError;
            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                Self::parse(raw)
            }
        }
    };
}
string_conversions!(SaleId);
string_conversions!(UserId);
string_conversions!(OrderId);
string_conversions!(IdempotencyKey);

/// Maps keyed by `SaleId` can be queried with a `&str`: the derived `Hash`
/// and `Eq` are those of the inner string, as `Borrow` requires.
impl std::borrow::Borrow<str> for SaleId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SaleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.sale, self.id.simple())
    }
}
impl TryFrom<i64> for Quantity {
    type Error = DomainError;
    fn try_from(raw: i64) -> Result<Self, Self::Error> {
        Self::parse(raw)
    }
}
impl From<Quantity> for u32 {
    fn from(q: Quantity) -> u32 {
        q.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_bounded_printable_ascii() {
        assert!(IdempotencyKey::parse("a").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(128)).is_ok());
        for bad in ["", " ", "a b", "ключ", &"k".repeat(129)] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn sale_id_accepts_safe_alphabet_only() {
        assert!(SaleId::parse("summer-sale_2026").is_ok());
        for bad in ["", "a b", "x{y}", "a.b", "é", &"x".repeat(65)] {
            assert_eq!(
                SaleId::parse(bad),
                Err(DomainError::InvalidSaleId),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn user_id_rejects_blank_and_control_characters() {
        assert!(UserId::parse("user-42@example").is_ok());
        for bad in ["", " ", "a b", "a\nb", &"u".repeat(129)] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn order_id_round_trips_and_carries_its_sale() {
        let sale = SaleId::parse("s1").unwrap();
        let order = OrderId::new(&sale);
        let parsed = OrderId::parse(&order.to_string()).unwrap();
        assert_eq!(parsed, order);
        assert_eq!(parsed.sale_id(), &sale);
        let age = chrono::Utc::now() - parsed.created_at().unwrap();
        assert!(age >= chrono::Duration::zero() && age < chrono::Duration::seconds(5));
        for bad in [
            "",
            "s1",
            "s1.",
            ".abc",
            "s1.not-a-uuid",
            "s 1.0190b3a1e2f47c3d8e9f0a1b2c3d4e5f",
        ] {
            assert!(OrderId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quantity_is_bounded() {
        assert_eq!(Quantity::parse(1).unwrap().get(), 1);
        assert_eq!(Quantity::parse(100).unwrap().get(), 100);
        for bad in [0, -1, 101, i64::MAX, i64::MIN] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_goes_through_parse() {
        assert!(serde_json::from_str::<SaleId>("\"a b\"").is_err());
        assert!(serde_json::from_str::<Quantity>("0").is_err());
        assert_eq!(serde_json::from_str::<Quantity>("3").unwrap().get(), 3);
    }
}
