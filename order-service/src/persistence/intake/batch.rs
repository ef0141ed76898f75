//! The set-based fast path: one multi-row insert for the whole batch, in a
//! transaction without savepoints.
//!
//! Why: a savepoint per message is a subtransaction per message, and
//! PostgreSQL's cost per subtransaction grows with their number in one
//! transaction (past 64 the per-backend subxid cache overflows and every
//! visibility check slows down; rows touched by many of them get MultiXacts;
//! docs/benchmarks.md). One `INSERT ... SELECT FROM unnest(...) ON CONFLICT
//! (order_id) DO NOTHING RETURNING` stores every new order; the ones it does
//! not return are redeliveries, read back with one `SELECT ... = ANY(...)`.
//!
//! A second live order for one user and sale breaks the insert as a whole
//! (`orders_live_sale_user_key`); only the per-message path can tell which
//! order was first, so that batch goes there: [`Fallback`].
use std::collections::{HashMap, HashSet};

use sea_orm::{ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, Statement, Value};

use seckill_common::events::OrderRef;

use super::{persisted, violates, Persisted, Terms, LIVE_SALE_USER_INDEX};

/// Why a batch goes to the per-message path instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The same order id twice in the batch.
    RepeatedOrder,
    /// Two live orders for one user and sale (in the batch or with a stored one).
    LiveDuplicate,
}

impl Fallback {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RepeatedOrder => "repeated_order",
            Self::LiveDuplicate => "live_duplicate",
        }
    }
}

/// One order to store: what its inventory decision asks for.
pub struct Row<'a> {
    pub order: &'a OrderRef,
    pub wanted: &'a Persisted,
    pub terms: Option<Terms>,
    pub traceparent: Option<&'a str>,
}

/// Arrays cannot carry NULLs through the driver, so the nullable columns are
/// derived: `decision` gives a reason exactly to failed orders and payment
/// terms exactly to created ones, and a traceparent is never empty. The
/// payment window starts when the order exists, as on the per-message path.
const INSERT_ALL: &str = "INSERT INTO orders \
     (order_id, sale_id, user_id, quantity, status, reason, expires_at, amount_cents, traceparent) \
     SELECT b.order_id, b.sale_id, b.user_id, b.quantity, b.status, \
         CASE WHEN b.status = 'failed' THEN b.reason END, \
         CASE WHEN b.status = 'created' THEN now() + b.window_secs * interval '1 second' END, \
         b.amount_cents, NULLIF(b.traceparent, '') \
     FROM unnest($1::text[], $2::text[], $3::text[], $4::integer[], $5::text[], $6::text[], \
                 $7::integer[], $8::bigint[], $9::text[]) \
         AS b(order_id, sale_id, user_id, quantity, status, reason, window_secs, amount_cents, traceparent) \
     ON CONFLICT (order_id) DO NOTHING \
     RETURNING order_id, status, reason";

const SELECT_ALL: &str =
    "SELECT order_id, status, reason FROM orders WHERE order_id = ANY($1::text[])";

/// True when some order id occurs twice in `rows`.
pub fn repeats_an_order(rows: &[Row<'_>]) -> bool {
    let mut seen = HashSet::with_capacity(rows.len());
    !rows.iter().all(|r| seen.insert(&r.order.order_id))
}

/// Stores every row of `rows` (which must not repeat an order id) in `txn`
/// unless already stored, and returns what is persisted for each, in order;
/// or says why it cannot. After a [`Fallback`] the caller must roll back.
pub async fn persist_all(
    txn: &DatabaseTransaction,
    rows: &[Row<'_>],
) -> Result<Result<Vec<Persisted>, Fallback>, DbErr> {
    let inserted = match txn.query_all_raw(insert_all(rows)?).await {
        Ok(inserted) => inserted,
        Err(error) if violates(&error, LIVE_SALE_USER_INDEX) => {
            return Ok(Err(Fallback::LiveDuplicate))
        }
        Err(error) => return Err(error),
    };
    let mut stored = HashMap::with_capacity(rows.len());
    for row in &inserted {
        stored.insert(row.try_get::<String>("", "order_id")?, persisted(row)?);
    }
    // Redeliveries: change nothing, report what is stored.
    let missing: Vec<String> = rows
        .iter()
        .map(|r| r.order.order_id.to_string())
        .filter(|id| !stored.contains_key(id))
        .collect();
    if !missing.is_empty() {
        let values: [Value; 1] = [missing.into()];
        let select = Statement::from_sql_and_values(DbBackend::Postgres, SELECT_ALL, values);
        for row in txn.query_all_raw(select).await? {
            stored.insert(row.try_get::<String>("", "order_id")?, persisted(&row)?);
        }
    }
    let persisted = rows
        .iter()
        .map(|r| {
            stored.remove(&r.order.order_id.to_string()).ok_or_else(|| {
                DbErr::RecordNotFound(format!("order {} conflicted but is gone", r.order.order_id))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Ok(persisted))
}

fn insert_all(rows: &[Row<'_>]) -> Result<Statement, DbErr> {
    let text = |f: &dyn Fn(&Row<'_>) -> String| rows.iter().map(f).collect::<Vec<String>>();
    let quantities = rows
        .iter()
        .map(|r| i32::try_from(r.order.quantity.get()))
        .collect::<Result<Vec<i32>, _>>()
        .map_err(|e| DbErr::Custom(e.to_string()))?;
    let values: [Value; 9] = [
        text(&|r| r.order.order_id.to_string()).into(),
        text(&|r| r.order.sale_id.to_string()).into(),
        text(&|r| r.order.user_id.to_string()).into(),
        quantities.into(),
        text(&|r| r.wanted.status.as_str().to_owned()).into(),
        text(&|r| {
            r.wanted
                .reason
                .map_or_else(String::new, |reason| reason.as_str().to_owned())
        })
        .into(),
        rows.iter()
            .map(|r| r.terms.map_or(0, |t| t.window_secs))
            .collect::<Vec<i32>>()
            .into(),
        rows.iter()
            .map(|r| r.terms.map_or(0, |t| t.amount_cents))
            .collect::<Vec<i64>>()
            .into(),
        text(&|r| r.traceparent.unwrap_or_default().to_owned()).into(),
    ];
    Ok(Statement::from_sql_and_values(
        DbBackend::Postgres,
        INSERT_ALL,
        values,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persistence::OrderStatus;
    use seckill_common::domain::{OrderId, Quantity, SaleId, UserId};
    use seckill_common::events::RejectReason;

    fn order(user: &str) -> OrderRef {
        let sale = SaleId::parse("s1").unwrap();
        OrderRef {
            order_id: OrderId::new(&sale),
            sale_id: sale,
            user_id: UserId::parse(user).unwrap(),
            quantity: Quantity::ONE,
        }
    }

    fn row<'a>(order: &'a OrderRef, wanted: &'a Persisted, terms: Option<Terms>) -> Row<'a> {
        Row {
            order,
            wanted,
            terms,
            traceparent: None,
        }
    }

    #[test]
    fn a_repeated_order_id_is_detected() {
        let (a, b) = (order("u1"), order("u2"));
        let created = Persisted {
            status: OrderStatus::Created,
            reason: None,
        };
        assert!(!repeats_an_order(&[
            row(&a, &created, None),
            row(&b, &created, None)
        ]));
        assert!(repeats_an_order(&[
            row(&a, &created, None),
            row(&a, &created, None)
        ]));
    }

    #[test]
    fn nullable_columns_are_bound_as_empty_or_zero() {
        let (a, b) = (order("u1"), order("u2"));
        let created = Persisted {
            status: OrderStatus::Created,
            reason: None,
        };
        let failed = Persisted {
            status: OrderStatus::Failed,
            reason: Some(RejectReason::DuplicateBuyer),
        };
        let terms = Terms {
            window_secs: 60,
            amount_cents: 250,
        };
        let statement = insert_all(&[row(&a, &created, Some(terms)), row(&b, &failed, None)])
            .expect("statement");
        let values = statement.values.expect("values").0;
        assert_eq!(values.len(), 9);
        let statuses: Vec<String> = values[4].clone().unwrap();
        assert_eq!(statuses, ["created", "failed"]);
        let reasons: Vec<String> = values[5].clone().unwrap();
        assert_eq!(reasons, ["", "duplicate_buyer"]);
        let windows: Vec<i32> = values[6].clone().unwrap();
        assert_eq!(windows, [60, 0]);
        let amounts: Vec<i64> = values[7].clone().unwrap();
        assert_eq!(amounts, [250, 0]);
        let traceparents: Vec<String> = values[8].clone().unwrap();
        assert_eq!(traceparents, ["", ""]);
    }
}
