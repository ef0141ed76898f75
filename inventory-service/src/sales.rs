//! Sales as the admin API sees them: the request is validated into a
//! [`NewSale`] by the rules the gateway also ran (`seckill_common::sale_terms`),
//! and creation is idempotent on the sale id, so a client that timed out can
//! simply send the same request again.
use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, TryInsertResult,
};
use serde::{Deserialize, Serialize};

use seckill_common::domain::SaleId;
use seckill_common::sale_terms::SaleTerms;

use crate::persistence::sale;

/// The body of `POST /internal/sales`: the id the gateway chose and the
/// terms, flat. Deserialising validates both (`SaleId`, `SaleTerms`), with
/// the same code the gateway ran.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NewSale {
    #[serde(rename = "sale_id")]
    pub id: SaleId,
    #[serde(flatten)]
    pub terms: SaleTerms,
}

impl NewSale {
    /// True when `row` was created from the same parameters (stock sold since does not matter).
    pub fn matches(&self, row: &sale::Model) -> bool {
        let terms = &self.terms;
        row.id == self.id.as_str()
            && row.name == terms.name
            && row.total_stock == terms.stock
            && row.per_user_limit == terms.per_user_limit
            && row.starts_at == terms.starts_at
            && row.ends_at == terms.ends_at
            && row.require_purchase_token == terms.require_purchase_token
            && row.payment_window_secs == terms.payment_window_secs
            && row.unit_price_cents == terms.unit_price_cents
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
    let terms = &new.terms;
    let row = sale::ActiveModel {
        id: Set(new.id.to_string()),
        name: Set(terms.name.clone()),
        total_stock: Set(terms.stock),
        stock_remaining: Set(terms.stock),
        per_user_limit: Set(terms.per_user_limit),
        starts_at: Set(terms.starts_at),
        ends_at: Set(terms.ends_at),
        created_at: Set(Utc::now()),
        require_purchase_token: Set(terms.require_purchase_token),
        payment_window_secs: Set(terms.payment_window_secs),
        unit_price_cents: Set(terms.unit_price_cents),
    };
    let inserted = sale::Entity::insert(row)
        .on_conflict_do_nothing()
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

/// Sales listed at most per call: more than a storefront shows.
pub const LIST_LIMIT: u64 = 1_000;

/// Sales that end after `since`, by start time: what the gateways' read
/// path lists (upcoming, active, recently ended).
pub async fn ending_after(
    db: &impl ConnectionTrait,
    since: DateTime<Utc>,
) -> Result<Vec<sale::Model>, DbErr> {
    sale::Entity::find()
        .filter(sale::Column::EndsAt.gt(since))
        .order_by_asc(sale::Column::StartsAt)
        .order_by_asc(sale::Column::Id)
        .limit(LIST_LIMIT)
        .all(db)
        .await
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

    const BODY: &str = r#"{"sale_id":"summer-1","name":"Summer","stock":5,"starts_at":"2030-01-01T00:00:00Z","ends_at":"2030-01-02T00:00:00Z"}"#;

    #[test]
    fn the_gateway_s_flat_body_parses_with_the_shared_rules() {
        let new: NewSale = serde_json::from_str(BODY).unwrap();
        assert_eq!(new.id.as_str(), "summer-1");
        assert_eq!((new.terms.stock, new.terms.per_user_limit), (5, 1));
    }

    #[test]
    fn what_the_shared_rules_refuse_does_not_parse() {
        for bad in [
            BODY.replace("summer-1", "a b"),
            BODY.replace(r#""stock":5"#, r#""stock":0"#),
            BODY.replace("Summer", "Sum\\u0007mer"),
        ] {
            assert!(serde_json::from_str::<NewSale>(&bad).is_err(), "{bad}");
        }
    }
}
