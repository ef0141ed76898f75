//! The terms of a new sale, validated in one place. The gateway parses the
//! operator's request into [`SaleTerms`] and answers `422 invalid_sale`
//! itself; inventory-service parses the same shape again from the gateway's
//! call with the same code, so the two can never disagree (they once did: a
//! name with a control character passed the gateway and was refused behind
//! it, and the operator saw `422 upstream_rejected`).
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::domain::Quantity;
use crate::events::DEFAULT_PAYMENT_WINDOW_SECS;

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_STOCK: i64 = 10_000_000;
/// A day: a longer hold would keep stock off the sale for no one.
pub const MAX_PAYMENT_WINDOW_SECS: i64 = 86_400;
/// Ten million currency units per unit is beyond any flash sale.
pub const MAX_UNIT_PRICE_CENTS: i64 = 1_000_000_000;

/// A sale's terms as sent, before validation.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaleTermsRequest {
    pub name: String,
    pub stock: i64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    #[serde(default = "one")]
    pub per_user_limit: i64,
    /// Anti-bot step: buyers must first fetch a purchase token (README).
    #[serde(default)]
    pub require_purchase_token: bool,
    /// Seconds a buyer has to pay before the order expires (default 900).
    #[serde(default = "default_payment_window")]
    pub payment_window_secs: i64,
    /// Price of one unit in the smallest currency unit (default 0).
    #[serde(default)]
    pub unit_price_cents: i64,
}

fn one() -> i64 {
    1
}

fn default_payment_window() -> i64 {
    i64::from(DEFAULT_PAYMENT_WINDOW_SECS)
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidSale {
    #[error("name must be 1-{MAX_NAME_CHARS} characters, not blank, without control characters")]
    Name,
    #[error("stock must be between 1 and {MAX_STOCK}")]
    Stock,
    #[error("ends_at must be after starts_at")]
    Window,
    #[error("per_user_limit must be between 1 and {}", Quantity::MAX)]
    PerUserLimit,
    #[error("payment_window_secs must be between 1 and {MAX_PAYMENT_WINDOW_SECS}")]
    PaymentWindow,
    #[error("unit_price_cents must be between 0 and {MAX_UNIT_PRICE_CENTS}")]
    UnitPrice,
}

/// Terms that passed validation. Other crates cannot build one except by
/// [`SaleTerms::parse`] (or by deserialising, which parses).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SaleTermsRequest")]
#[non_exhaustive]
pub struct SaleTerms {
    /// Trimmed.
    pub name: String,
    pub stock: i32,
    /// Whole milliseconds: what PostgreSQL and Redis both keep exactly, so an
    /// identical repeat compares equal to the stored row.
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub per_user_limit: i32,
    pub require_purchase_token: bool,
    pub payment_window_secs: i32,
    pub unit_price_cents: i64,
}

impl SaleTerms {
    pub fn parse(request: SaleTermsRequest) -> Result<Self, InvalidSale> {
        let name = request.name.trim();
        if name.is_empty()
            || name.chars().count() > MAX_NAME_CHARS
            || name.chars().any(char::is_control)
        {
            return Err(InvalidSale::Name);
        }
        let stock = i32::try_from(request.stock)
            .ok()
            .filter(|s| (1..=MAX_STOCK).contains(&i64::from(*s)))
            .ok_or(InvalidSale::Stock)?;
        let per_user_limit = Quantity::parse(request.per_user_limit)
            .ok()
            .and_then(|q| i32::try_from(q.get()).ok())
            .ok_or(InvalidSale::PerUserLimit)?;
        let starts_at = whole_millis(request.starts_at).ok_or(InvalidSale::Window)?;
        let ends_at = whole_millis(request.ends_at).ok_or(InvalidSale::Window)?;
        if ends_at <= starts_at {
            return Err(InvalidSale::Window);
        }
        let payment_window_secs = i32::try_from(request.payment_window_secs)
            .ok()
            .filter(|w| (1..=MAX_PAYMENT_WINDOW_SECS).contains(&i64::from(*w)))
            .ok_or(InvalidSale::PaymentWindow)?;
        if !(0..=MAX_UNIT_PRICE_CENTS).contains(&request.unit_price_cents) {
            return Err(InvalidSale::UnitPrice);
        }
        Ok(Self {
            name: name.to_owned(),
            stock,
            starts_at,
            ends_at,
            per_user_limit,
            require_purchase_token: request.require_purchase_token,
            payment_window_secs,
            unit_price_cents: request.unit_price_cents,
        })
    }
}

impl TryFrom<SaleTermsRequest> for SaleTerms {
    type Error = InvalidSale;

    fn try_from(request: SaleTermsRequest) -> Result<Self, Self::Error> {
        Self::parse(request)
    }
}

fn whole_millis(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> SaleTermsRequest {
        SaleTermsRequest {
            name: "Summer".into(),
            stock: 100,
            starts_at: "2030-01-01T00:00:00Z".parse().unwrap(),
            ends_at: "2030-01-01T01:00:00Z".parse().unwrap(),
            per_user_limit: 2,
            require_purchase_token: false,
            payment_window_secs: 900,
            unit_price_cents: 0,
        }
    }

    #[test]
    fn a_valid_request_passes_and_its_name_is_trimmed() {
        let terms = SaleTerms::parse(SaleTermsRequest {
            name: "  Summer ".into(),
            ..request()
        })
        .unwrap();
        assert_eq!(terms.name, "Summer");
        assert_eq!((terms.stock, terms.per_user_limit), (100, 2));
    }

    #[test]
    fn bounds_are_inclusive() {
        let widest = SaleTermsRequest {
            stock: MAX_STOCK,
            per_user_limit: i64::from(Quantity::MAX),
            name: "n".repeat(MAX_NAME_CHARS),
            payment_window_secs: MAX_PAYMENT_WINDOW_SECS,
            unit_price_cents: MAX_UNIT_PRICE_CENTS,
            ..request()
        };
        assert!(SaleTerms::parse(widest).is_ok());
        let narrowest = SaleTermsRequest {
            stock: 1,
            per_user_limit: 1,
            payment_window_secs: 1,
            ..request()
        };
        assert!(SaleTerms::parse(narrowest).is_ok());
    }

    #[test]
    fn each_field_is_checked() {
        let r = request;
        let cases: Vec<(SaleTermsRequest, InvalidSale)> = vec![
            (
                SaleTermsRequest {
                    name: String::new(),
                    ..r()
                },
                InvalidSale::Name,
            ),
            (
                SaleTermsRequest {
                    name: "   ".into(),
                    ..r()
                },
                InvalidSale::Name,
            ),
            (
                SaleTermsRequest {
                    name: "n".repeat(201),
                    ..r()
                },
                InvalidSale::Name,
            ),
            (
                SaleTermsRequest {
                    name: "a\u{7}b".into(),
                    ..r()
                },
                InvalidSale::Name,
            ),
            (
                SaleTermsRequest {
                    name: "a\nb".into(),
                    ..r()
                },
                InvalidSale::Name,
            ),
            (SaleTermsRequest { stock: 0, ..r() }, InvalidSale::Stock),
            (
                SaleTermsRequest {
                    stock: MAX_STOCK + 1,
                    ..r()
                },
                InvalidSale::Stock,
            ),
            (
                SaleTermsRequest {
                    stock: i64::MIN,
                    ..r()
                },
                InvalidSale::Stock,
            ),
            (
                SaleTermsRequest {
                    per_user_limit: 0,
                    ..r()
                },
                InvalidSale::PerUserLimit,
            ),
            (
                SaleTermsRequest {
                    per_user_limit: i64::from(Quantity::MAX) + 1,
                    ..r()
                },
                InvalidSale::PerUserLimit,
            ),
            (
                SaleTermsRequest {
                    ends_at: r().starts_at,
                    ..r()
                },
                InvalidSale::Window,
            ),
            (
                SaleTermsRequest {
                    payment_window_secs: 0,
                    ..r()
                },
                InvalidSale::PaymentWindow,
            ),
            (
                SaleTermsRequest {
                    payment_window_secs: MAX_PAYMENT_WINDOW_SECS + 1,
                    ..r()
                },
                InvalidSale::PaymentWindow,
            ),
            (
                SaleTermsRequest {
                    unit_price_cents: -1,
                    ..r()
                },
                InvalidSale::UnitPrice,
            ),
            (
                SaleTermsRequest {
                    unit_price_cents: MAX_UNIT_PRICE_CENTS + 1,
                    ..r()
                },
                InvalidSale::UnitPrice,
            ),
        ];
        for (request, expected) in cases {
            assert_eq!(SaleTerms::parse(request), Err(expected));
        }
    }

    #[test]
    fn name_length_counts_characters_not_bytes() {
        let name = "秒".repeat(MAX_NAME_CHARS);
        assert!(SaleTerms::parse(SaleTermsRequest { name, ..request() }).is_ok());
    }

    #[test]
    fn times_are_kept_to_the_millisecond_so_repeats_compare_equal() {
        let terms = SaleTerms::parse(SaleTermsRequest {
            starts_at: "2030-01-01T00:00:00.123456789Z".parse().unwrap(),
            ..request()
        })
        .unwrap();
        assert_eq!(
            terms.starts_at,
            "2030-01-01T00:00:00.123Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn the_wire_form_parses_again_to_the_same_terms_and_defaults_apply() {
        let body = r#"{"name":"n","stock":5,"starts_at":"2030-01-01T00:00:00Z","ends_at":"2030-01-02T00:00:00+02:00"}"#;
        let terms: SaleTerms = serde_json::from_str(body).unwrap();
        assert_eq!(terms.per_user_limit, 1);
        assert_eq!(
            i64::from(terms.payment_window_secs),
            default_payment_window()
        );
        let again: SaleTerms =
            serde_json::from_str(&serde_json::to_string(&terms).unwrap()).unwrap();
        assert_eq!(again, terms);
        let invalid = r#"{"name":"\u0007","stock":5,"starts_at":"2030-01-01T00:00:00Z","ends_at":"2030-01-02T00:00:00Z"}"#;
        assert!(serde_json::from_str::<SaleTerms>(invalid).is_err());
    }
}
