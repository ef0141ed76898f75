//! Hand-made domain values for tests that produce events themselves.
use seckill_common::domain::{OrderId, Quantity, SaleId, UserId};
use seckill_common::events::OrderRef;

/// A new order of one unit by `user` in `sale` (both must be valid ids).
pub fn order(sale: &str, user: &str) -> OrderRef {
    let sale = SaleId::parse(sale).expect("sale id");
    OrderRef {
        order_id: OrderId::new(&sale),
        sale_id: sale,
        user_id: UserId::parse(user).expect("user"),
        quantity: Quantity::ONE,
    }
}
