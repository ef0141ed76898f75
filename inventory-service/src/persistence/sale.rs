//! A flash sale and its authoritative remaining stock.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "sales")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    pub total_stock: i32,
    /// Only the consumer's conditional decrement changes it.
    pub stock_remaining: i32,
    pub per_user_limit: i32,
    pub starts_at: DateTimeUtc,
    /// Exclusive.
    pub ends_at: DateTimeUtc,
    pub created_at: DateTimeUtc,
    /// Buyers must present a purchase token from the gateway (anti-bot step).
    pub require_purchase_token: bool,
    /// How long a buyer has to pay before the order expires.
    pub payment_window_secs: i32,
    /// Price of one unit, in the smallest currency unit.
    pub unit_price_cents: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::reservation::Entity")]
    Reservation,
}

impl Related<super::reservation::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Reservation.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
