//! An order as every answer shows it: the JSON the gateway passes on, also
//! stored as the recorded answer of a payment (`lifecycle`).
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::persistence::order;
use crate::persistence::OrderStatus;

#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct OrderView {
    pub order_id: String,
    pub sale_id: String,
    pub user_id: String,
    pub quantity: i32,
    pub status: OrderStatus,
    /// Only a failed order has a reason.
    pub reason: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The end of the payment window (`null` for a failed order).
    pub expires_at: Option<DateTime<Utc>>,
    pub amount_cents: i64,
    /// The payment provider's reference, once paid.
    pub payment_ref: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
}

impl From<order::Model> for OrderView {
    fn from(m: order::Model) -> Self {
        let reason = if m.status == OrderStatus::Failed {
            m.reason
        } else {
            None
        };
        Self {
            order_id: m.order_id,
            sale_id: m.sale_id,
            user_id: m.user_id,
            quantity: m.quantity,
            status: m.status,
            reason,
            created_at: m.created_at,
            updated_at: m.updated_at,
            expires_at: m.expires_at,
            amount_cents: m.amount_cents,
            payment_ref: m.payment_ref,
            paid_at: m.paid_at,
        }
    }
}
