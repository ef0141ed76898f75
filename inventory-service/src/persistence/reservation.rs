//! The outcome for one order id, written in the same transaction as the
//! stock decrement, so "already handled" and "stock taken" never disagree.
use sea_orm::entity::prelude::*;
use sea_orm::QuerySelect;

/// `status` values (a CHECK constraint allows only these).
pub const RESERVED: &str = "reserved";
pub const REJECTED: &str = "rejected";
/// Was reserved; the order was cancelled or expired and the stock went back.
pub const RELEASED: &str = "released";

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "reservations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub order_id: String,
    pub sale_id: String,
    pub user_id: String,
    pub quantity: i32,
    /// [`RESERVED`], [`REJECTED`] or [`RELEASED`].
    pub status: String,
    /// Why it was rejected; `None` otherwise.
    pub reason: Option<String>,
    pub created_at: DateTimeUtc,
    /// The event that returned the stock, once [`RELEASED`].
    pub release_cause: Option<String>,
    pub released_at: Option<DateTimeUtc>,
    /// When order-service confirmed the order (`OrderCreated` or later).
    pub confirmed_at: Option<DateTimeUtc>,
    /// How often the saga sweeper announced the reservation again.
    pub sweeps: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::sale::Entity",
        from = "Column::SaleId",
        to = "super::sale::Column::Id"
    )]
    Sale,
}

impl Related<super::sale::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Sale.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}

/// The order `user` holds (a `reserved` reservation) in `sale`, if any.
pub async fn holder(
    db: &impl ConnectionTrait,
    sale: &seckill_common::domain::SaleId,
    user: &seckill_common::domain::UserId,
) -> Result<Option<String>, DbErr> {
    Entity::find()
        .select_only()
        .column(Column::OrderId)
        .filter(Column::SaleId.eq(sale.as_str()))
        .filter(Column::UserId.eq(user.as_str()))
        .filter(Column::Status.eq(RESERVED))
        .into_tuple()
        .one(db)
        .await
}
