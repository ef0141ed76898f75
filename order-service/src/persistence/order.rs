//! One row per order id. `status` is text with a CHECK constraint rather
//! than a PostgreSQL enum, so adding a status later is a plain migration.
use sea_orm::entity::prelude::*;
use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "orders")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub order_id: String,
    pub sale_id: String,
    pub user_id: String,
    pub quantity: i32,
    pub status: OrderStatus,
    /// Why the order failed; `None` for every other status.
    pub reason: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// The end of the payment window; `None` for orders that never awaited payment.
    pub expires_at: Option<DateTimeUtc>,
    /// What the buyer pays: unit price times quantity, in the smallest currency unit.
    pub amount_cents: i64,
    /// The provider's reference of the payment, once paid.
    pub payment_ref: Option<String>,
    pub paid_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// The order lifecycle: `created` (awaiting payment) ends `paid`, `cancelled`
/// or `expired`; `failed` when the stock was rejected. Every move out of
/// `created` is a compare-and-set (see `lifecycle`). The ends other than
/// `paid` release the (sale, user) uniqueness, so the buyer may buy again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, EnumIter, DeriveActiveEnum, Serialize)]
#[sea_orm(rs_type = "String", db_type = "Text")]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    #[sea_orm(string_value = "created")]
    Created,
    #[sea_orm(string_value = "failed")]
    Failed,
    #[sea_orm(string_value = "paid")]
    Paid,
    #[sea_orm(string_value = "cancelled")]
    Cancelled,
    #[sea_orm(string_value = "expired")]
    Expired,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Failed => "failed",
            Self::Paid => "paid",
            Self::Cancelled => "cancelled",
            Self::Expired => "expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "created" => Some(Self::Created),
            "failed" => Some(Self::Failed),
            "paid" => Some(Self::Paid),
            "cancelled" => Some(Self::Cancelled),
            "expired" => Some(Self::Expired),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::Iterable;

    #[test]
    fn status_strings_round_trip_and_match_the_active_enum() {
        for status in OrderStatus::iter() {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
            assert_eq!(status.to_value(), status.as_str());
        }
        assert_eq!(OrderStatus::parse("nope"), None);
    }
}
