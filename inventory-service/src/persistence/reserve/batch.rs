//! The set-based fast path: a whole batch in three kinds of statement and no
//! savepoint.
//!
//! Why: one savepoint per order makes every order a subtransaction, and each
//! of them KEY SHARE-locks (the reservation's foreign key) and then updates
//! the same hot `sales` row. A row locked by many subtransactions of one
//! transaction gets a MultiXact whose member list grows with the batch:
//! `GetMultiXactIdMembers` was the machine's top symbol under load, about
//! O(n²) per batch (docs/benchmarks.md). Here the batch is one plain
//! transaction, and a row touched only by it needs no MultiXact:
//!
//! 1. one `INSERT ... SELECT FROM unnest(...) ON CONFLICT (order_id) DO
//!    NOTHING RETURNING` for every order: the rows it returns are the new
//!    orders, the others are redeliveries;
//! 2. per sale, in sorted sale-id order (the one lock order every consumer
//!    shares, so two consumers cannot deadlock on two sales), one conditional
//!    decrement by the sum of that sale's new quantities;
//! 3. per redelivery, the stored outcome, as on the per-order path.
//!
//! Anything the set cannot decide as a whole (a sale missing, a buyer who
//! already holds a reservation, stock that covers only part of the batch)
//! is reported as a [`Fallback`]: the caller rolls this transaction back and
//! decides the batch order by order with [`super::reserve`], which tells
//! exactly which orders get which rejection.
use std::collections::{BTreeMap, HashMap, HashSet};

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, SqlErr, Statement, Value};

use seckill_common::events::OrderRef;

use super::{quantity, stored_outcome, Outcome, ReserveError, Terms, DECREMENT};

/// Why a batch goes to the per-order path instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The same order id twice in the batch: only deciding the copies one
    /// after the other gives the second the first one's outcome.
    RepeatedOrder,
    /// The insert broke a constraint: a sale is missing (foreign key) or a
    /// buyer already holds a reservation in the sale (partial unique index).
    Constraint,
    /// A sale's stock cannot cover all of the batch's new orders for it.
    StockShort,
}

impl Fallback {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RepeatedOrder => "repeated_order",
            Self::Constraint => "constraint",
            Self::StockShort => "stock_short",
        }
    }
}

/// `reason` stays NULL: these rows are reservations, never rejections.
const INSERT_ALL: &str = "INSERT INTO reservations \
     (order_id, sale_id, user_id, quantity, status, created_at) \
     SELECT b.order_id, b.sale_id, b.user_id, b.quantity, 'reserved', now() \
     FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[]) \
         AS b(order_id, sale_id, user_id, quantity) \
     ON CONFLICT (order_id) DO NOTHING \
     RETURNING order_id, sale_id, quantity";

/// True when some order id occurs twice in `orders`.
pub fn repeats_an_order(orders: &[&OrderRef]) -> bool {
    let mut seen = HashSet::with_capacity(orders.len());
    !orders.iter().all(|o| seen.insert(&o.order_id))
}

/// Decides every order of `orders` (which must not repeat an order id) in
/// `txn`, one outcome per order in the same order, or says why it cannot.
/// After a [`Fallback`] the caller must roll `txn` back: it may hold rows.
pub async fn reserve_all(
    txn: &DatabaseTransaction,
    orders: &[&OrderRef],
) -> Result<Result<Vec<Outcome>, Fallback>, ReserveError> {
    let rows = match txn.query_all_raw(insert_all(orders)).await {
        Ok(rows) => rows,
        Err(error) => {
            return match error.sql_err() {
                Some(
                    SqlErr::ForeignKeyConstraintViolation(_) | SqlErr::UniqueConstraintViolation(_),
                ) => Ok(Err(Fallback::Constraint)),
                _ => Err(error.into()),
            }
        }
    };
    let mut new = HashSet::with_capacity(rows.len());
    // Sorted by sale id: the order the decrements lock the sales in.
    let mut totals: BTreeMap<String, i64> = BTreeMap::new();
    for row in &rows {
        let sale: String = row.try_get("", "sale_id")?;
        let quantity: i32 = row.try_get("", "quantity")?;
        *totals.entry(sale).or_default() += i64::from(quantity);
        new.insert(row.try_get::<String>("", "order_id")?);
    }
    let mut terms = HashMap::with_capacity(totals.len());
    for (sale, total) in totals {
        // A total beyond `i32` exceeds any stock: the per-order path rejects.
        let Ok(total) = i32::try_from(total) else {
            return Ok(Err(Fallback::StockShort));
        };
        let values: [Value; 2] = [sale.as_str().into(), total.into()];
        let decremented = txn
            .query_one_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                DECREMENT,
                values,
            ))
            .await?;
        match decremented {
            Some(row) => terms.insert(sale, Terms::from_row(&row)?),
            None => return Ok(Err(Fallback::StockShort)),
        };
    }
    let mut outcomes = Vec::with_capacity(orders.len());
    for order in orders {
        if new.contains(&order.order_id.to_string()) {
            let terms = terms
                .get(order.sale_id.as_str())
                .copied()
                .ok_or_else(|| DbErr::Custom(format!("no decrement for sale {}", order.sale_id)))?;
            outcomes.push(Outcome::Reserved(terms));
        } else {
            // A redelivery (rare): re-announce what is stored.
            outcomes.push(stored_outcome(txn, order).await?);
        }
    }
    Ok(Ok(outcomes))
}

fn insert_all(orders: &[&OrderRef]) -> Statement {
    let column = |f: fn(&OrderRef) -> String| orders.iter().map(|o| f(o)).collect::<Vec<_>>();
    let values: [Value; 4] = [
        column(|o| o.order_id.to_string()).into(),
        column(|o| o.sale_id.as_str().to_owned()).into(),
        column(|o| o.user_id.as_str().to_owned()).into(),
        orders
            .iter()
            .map(|o| quantity(o))
            .collect::<Vec<i32>>()
            .into(),
    ];
    Statement::from_sql_and_values(DbBackend::Postgres, INSERT_ALL, values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use seckill_common::domain::{OrderId, Quantity, SaleId, UserId};

    fn order(sale: &str, user: &str) -> OrderRef {
        let sale = SaleId::parse(sale).unwrap();
        OrderRef {
            order_id: OrderId::new(&sale),
            sale_id: sale,
            user_id: UserId::parse(user).unwrap(),
            quantity: Quantity::ONE,
        }
    }

    #[test]
    fn a_repeated_order_id_is_detected() {
        let (a, b) = (order("s1", "u1"), order("s1", "u2"));
        assert!(!repeats_an_order(&[&a, &b]));
        assert!(repeats_an_order(&[&a, &b, &a]));
        assert!(!repeats_an_order(&[]));
    }

    #[test]
    fn the_insert_binds_one_array_per_column() {
        let (a, b) = (order("s1", "u1"), order("s2", "u2"));
        let statement = insert_all(&[&a, &b]);
        let values = statement.values.expect("values").0;
        assert_eq!(values.len(), 4);
        let sales: Vec<String> = values[1].clone().unwrap();
        assert_eq!(sales, ["s1", "s2"]);
        let quantities: Vec<i32> = values[3].clone().unwrap();
        assert_eq!(quantities, [1, 1]);
    }
}
