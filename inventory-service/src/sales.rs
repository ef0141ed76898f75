//! Sales as the admin API sees them: the request is validated once into a
//! [`NewSale`], and creation is idempotent on the sale id, so a client that
//! timed out can simply send the same request again.
use chrono::{DateTime, Utc};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, ConnectionTrait, DbErr, EntityTrait, TryInsertResult};
use serde::{Deserialize, Serialize};

use seckill_common::domain::{DomainError, Quantity, SaleId};

use crate::persistence::sale;

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_STOCK: i64 = 10_000_000;

/// The body of `POST /internal/sales`, as sent.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateSale {
    pub sale_id: String,
    pub name: String,
    pub stock: i64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    #[serde(default = "one")]
    pub per_user_limit: i64,
    /// Anti-bot step: purchases need the gateway's short-lived purchase token.
    #[serde(default)]
    pub require_purchase_token: bool,
    /// Seconds a buyer has to pay; 15 minutes when absent.
    #[serde(default = "default_payment_window")]
    pub payment_window_secs: i64,
    /// Price of one unit in the smallest currency unit; free when absent.
    #[serde(default)]
    pub unit_price_cents: i64,
}

fn default_payment_window() -> i64 {
    i64::from(seckill_common::events::DEFAULT_PAYMENT_WINDOW_SECS)
}

/// A day: a longer hold would keep stock off the sale for no one.
pub const MAX_PAYMENT_WINDOW_SECS: i64 = 86_400;
/// Ten million currency units per unit is beyond any flash sale.
pub const MAX_UNIT_PRICE_CENTS: i64 = 1_000_000_000;

fn one() -> i64 {
    1
}

/// A sale request that passed validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSale {
    pub id: SaleId,
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidSale {
    #[error(transparent)]
    SaleId(#[from] DomainError),
    #[error("name must be 1-{MAX_NAME_CHARS} characters and not blank")]
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

impl CreateSale {
    pub fn validate(self) -> Result<NewSale, InvalidSale> {
        let id = SaleId::parse(&self.sale_id)?;
        let chars = self.name.chars().count();
        if self.name.trim().is_empty()
            || chars > MAX_NAME_CHARS
            || self.name.chars().any(char::is_control)
        {
            return Err(InvalidSale::Name);
        }
        let stock = i32::try_from(self.stock)
            .ok()
            .filter(|s| (1..=MAX_STOCK).contains(&i64::from(*s)))
            .ok_or(InvalidSale::Stock)?;
        let per_user_limit = Quantity::parse(self.per_user_limit)
            .map_err(|_| InvalidSale::PerUserLimit)
            .and_then(|q| i32::try_from(q.get()).map_err(|_| InvalidSale::PerUserLimit))?;
        let starts_at = whole_millis(self.starts_at).ok_or(InvalidSale::Window)?;
        let ends_at = whole_millis(self.ends_at).ok_or(InvalidSale::Window)?;
        if ends_at <= starts_at {
            return Err(InvalidSale::Window);
        }
        let payment_window_secs = i32::try_from(self.payment_window_secs)
            .ok()
            .filter(|w| (1..=MAX_PAYMENT_WINDOW_SECS).contains(&i64::from(*w)))
            .ok_or(InvalidSale::PaymentWindow)?;
        if !(0..=MAX_UNIT_PRICE_CENTS).contains(&self.unit_price_cents) {
            return Err(InvalidSale::UnitPrice);
        }
        Ok(NewSale {
            id,
            name: self.name,
            stock,
            starts_at,
            ends_at,
            per_user_limit,
            require_purchase_token: self.require_purchase_token,
            payment_window_secs,
            unit_price_cents: self.unit_price_cents,
        })
    }
}

fn whole_millis(t: DateTime<Utc>) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(t.timestamp_millis())
}

impl NewSale {
    /// True when `row` was created from the same parameters (stock sold since does not matter).
    pub fn matches(&self, row: &sale::Model) -> bool {
        row.id == self.id.as_str()
            && row.name == self.name
            && row.total_stock == self.stock
            && row.per_user_limit == self.per_user_limit
            && row.starts_at == self.starts_at
            && row.ends_at == self.ends_at
            && row.require_purchase_token == self.require_purchase_token
            && row.payment_window_secs == self.payment_window_secs
            && row.unit_price_cents == self.unit_price_cents
    }
}

#[derive(Debug)]
pub enum Created {
    /// Inserted by this call.
    New(sale::Model),
    /// Already there with the same parameters: an idempotent repeat.
    Existing(sale::Model),
    /// Already there with different parameters.
    Conflict(sale::Model),
}

/// Inserts the sale unless its id exists, and says which case it was.
pub async fn create(db: &impl ConnectionTrait, new: &NewSale) -> Result<Created, DbErr> {
    let row = sale::ActiveModel {
        id: Set(new.id.to_string()),
        name: Set(new.name.clone()),
        total_stock: Set(new.stock),
        stock_remaining: Set(new.stock),
        per_user_limit: Set(new.per_user_limit),
        starts_at: Set(new.starts_at),
        ends_at: Set(new.ends_at),
        created_at: Set(Utc::now()),
        require_purchase_token: Set(new.require_purchase_token),
        payment_window_secs: Set(new.payment_window_secs),
        unit_price_cents: Set(new.unit_price_cents),
    };
    let inserted = sale::Entity::insert(row)
        .on_conflict(OnConflict::column(sale::Column::Id).do_nothing().to_owned())
        .do_nothing()
        .exec(db)
        .await?;
    // Sales are never deleted, so the row is there either way.
    let row = find(db, &new.id)
        .await?
        .ok_or_else(|| DbErr::RecordNotFound(format!("sale {} vanished", new.id)))?;
    Ok(match inserted {
        TryInsertResult::Inserted(_) => Created::New(row),
        _ if new.matches(&row) => Created::Existing(row),
        _ => Created::Conflict(row),
    })
}

pub async fn find(db: &impl ConnectionTrait, id: &SaleId) -> Result<Option<sale::Model>, DbErr> {
    sale::Entity::find_by_id(id.as_str()).one(db).await
}

/// The JSON shape of a sale in every answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaleView {
    pub sale_id: String,
    pub name: String,
    pub stock: i32,
    pub stock_remaining: i32,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub per_user_limit: i32,
    pub require_purchase_token: bool,
    pub payment_window_secs: i32,
    pub unit_price_cents: i64,
}

impl From<sale::Model> for SaleView {
    fn from(row: sale::Model) -> Self {
        Self {
            sale_id: row.id,
            name: row.name,
            stock: row.total_stock,
            stock_remaining: row.stock_remaining,
            starts_at: row.starts_at,
            ends_at: row.ends_at,
            per_user_limit: row.per_user_limit,
            require_purchase_token: row.require_purchase_token,
            payment_window_secs: row.payment_window_secs,
            unit_price_cents: row.unit_price_cents,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> CreateSale {
        CreateSale {
            sale_id: "summer-1".into(),
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
    fn a_valid_request_passes() {
        let sale = request().validate().unwrap();
        assert_eq!(sale.id.as_str(), "summer-1");
        assert_eq!((sale.stock, sale.per_user_limit), (100, 2));
    }

    #[test]
    fn bounds_are_inclusive() {
        let r = CreateSale {
            stock: MAX_STOCK,
            per_user_limit: i64::from(Quantity::MAX),
            name: "n".repeat(200),
            ..request()
        };
        assert!(r.validate().is_ok());
        assert!(CreateSale {
            stock: 1,
            per_user_limit: 1,
            ..request()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn each_field_is_checked() {
        let cases: [(CreateSale, InvalidSale); 10] = [
            (
                CreateSale {
                    sale_id: "a b".into(),
                    ..request()
                },
                InvalidSale::SaleId(DomainError::InvalidSaleId),
            ),
            (
                CreateSale {
                    name: String::new(),
                    ..request()
                },
                InvalidSale::Name,
            ),
            (
                CreateSale {
                    name: "   ".into(),
                    ..request()
                },
                InvalidSale::Name,
            ),
            (
                CreateSale {
                    name: "n".repeat(201),
                    ..request()
                },
                InvalidSale::Name,
            ),
            (
                CreateSale {
                    stock: 0,
                    ..request()
                },
                InvalidSale::Stock,
            ),
            (
                CreateSale {
                    stock: MAX_STOCK + 1,
                    ..request()
                },
                InvalidSale::Stock,
            ),
            (
                CreateSale {
                    stock: i64::MIN,
                    ..request()
                },
                InvalidSale::Stock,
            ),
            (
                CreateSale {
                    per_user_limit: 0,
                    ..request()
                },
                InvalidSale::PerUserLimit,
            ),
            (
                CreateSale {
                    per_user_limit: i64::from(Quantity::MAX) + 1,
                    ..request()
                },
                InvalidSale::PerUserLimit,
            ),
            (
                CreateSale {
                    ends_at: request().starts_at,
                    ..request()
                },
                InvalidSale::Window,
            ),
        ];
        for (req, expected) in cases {
            assert_eq!(req.validate(), Err(expected));
        }
    }

    #[test]
    fn payment_terms_are_bounded() {
        for (window, price, ok) in [
            (1, 0, true),
            (MAX_PAYMENT_WINDOW_SECS, MAX_UNIT_PRICE_CENTS, true),
            (0, 0, false),
            (MAX_PAYMENT_WINDOW_SECS + 1, 0, false),
            (900, -1, false),
            (900, MAX_UNIT_PRICE_CENTS + 1, false),
        ] {
            let r = CreateSale {
                payment_window_secs: window,
                unit_price_cents: price,
                ..request()
            };
            assert_eq!(r.validate().is_ok(), ok, "{window} {price}");
        }
    }

    #[test]
    fn name_length_counts_characters_not_bytes() {
        assert!(CreateSale {
            name: "秒".repeat(200),
            ..request()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn times_are_kept_to_the_millisecond_so_repeats_compare_equal() {
        let r = CreateSale {
            starts_at: "2030-01-01T00:00:00.123456789Z".parse().unwrap(),
            ..request()
        };
        let sale = r.validate().unwrap();
        assert_eq!(
            sale.starts_at,
            "2030-01-01T00:00:00.123Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn per_user_limit_defaults_to_one() {
        let body = r#"{"sale_id":"s","name":"n","stock":5,"starts_at":"2030-01-01T00:00:00Z","ends_at":"2030-01-02T00:00:00+02:00"}"#;
        let r: CreateSale = serde_json::from_str(body).unwrap();
        assert_eq!(r.per_user_limit, 1);
        assert!(r.validate().is_ok());
    }
}
