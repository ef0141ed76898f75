//! The promises every fault scenario ends by checking, in one place:
//!
//! 1. every accepted (202) order is persisted exactly once, in `orders` and
//!    in `reservations`, and the two agree on whether it holds stock;
//! 2. database stock plus units sold (reserved reservations) equals the total;
//! 3. after reconciliation, Redis agrees with the database: the same stock,
//!    and its buyers are exactly the users holding a reservation;
//! 4. no oversell: units sold never exceed the total, stock is never negative;
//! 5. every 202 is kept: no more 202s than units that were ever for sale,
//!    and every 202 order ends `created` or later, never `failed`;
//! 6. every saga finished: no reservation without an order that holds it,
//!    no order holding stock without a reservation, no buyer with two live
//!    orders, and (3) no buyer locked out in Redis without a reservation.
//!
//! Nothing here sleeps a guessed time: it polls until the system is quiet
//! (every accepted order applied, Redis in agreement) or a deadline passes,
//! and then asserts with everything it saw.
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::stack::Stack;
use crate::wait::{poll_until, wait_until};

/// What one sale looks like in both stores at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub total: i64,
    pub db_stock: i64,
    /// Units in `reserved` reservations.
    pub sold: i64,
    /// user -> order of every `reserved` reservation.
    pub reserved: BTreeMap<String, String>,
    /// Orders of this sale in a status that holds stock (not failed/cancelled/expired).
    pub live_orders: i64,
    pub redis_stock: Option<i64>,
    /// user -> order in the sale's buyers hash.
    pub redis_buyers: BTreeMap<String, String>,
}

impl Snapshot {
    pub async fn take(stack: &Stack, sale: &str) -> Self {
        let (total, db_stock) = sale_row(stack, sale).await;
        let sold = Stack::count(
            &stack.inventory_db,
            &format!("SELECT coalesce(sum(quantity), 0)::bigint AS n FROM reservations WHERE sale_id = '{sale}' AND status = 'reserved'"),
        )
        .await;
        let reserved = pairs(
            stack,
            &format!("SELECT user_id AS a, order_id AS b FROM reservations WHERE sale_id = '{sale}' AND status = 'reserved'"),
        )
        .await;
        let live_orders = Stack::count(
            &stack.orders_db,
            &format!("SELECT count(*) AS n FROM orders WHERE sale_id = '{sale}' AND status NOT IN ('failed', 'cancelled', 'expired')"),
        )
        .await;
        let mut redis = stack.redis().await;
        let redis_stock: Option<i64> = redis::cmd("HGET")
            .arg(format!("seckill:{{{sale}}}:sale"))
            .arg("stock")
            .query_async(&mut redis)
            .await
            .expect("redis HGET stock");
        let redis_buyers: BTreeMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("seckill:{{{sale}}}:buyers"))
            .query_async(&mut redis)
            .await
            .expect("redis HGETALL buyers");
        Self {
            total,
            db_stock,
            sold,
            reserved,
            live_orders,
            redis_stock,
            redis_buyers,
        }
    }

    /// Redis holds what the database holds: the same stock and the same buyers.
    pub fn redis_agrees(&self) -> bool {
        self.redis_stock == Some(self.db_stock) && self.buyer_sets_agree()
    }

    fn buyer_sets_agree(&self) -> bool {
        let redis: BTreeSet<&String> = self.redis_buyers.keys().collect();
        let db: BTreeSet<&String> = self.reserved.keys().collect();
        redis == db
    }

    /// Both services have applied the same decisions.
    pub fn databases_agree(&self) -> bool {
        self.live_orders == self.reserved.len() as i64
    }
}

/// Checks every invariant for `sale`, given the ids of the orders that were
/// answered 202. Waits (bounded) for the pipeline to drain first; asks for a
/// reconciliation (when the build has the endpoint) before comparing Redis.
/// Returns the final snapshot.
pub async fn assert_invariants(stack: &Stack, sale: &str, accepted: &[String]) -> Snapshot {
    check(stack, sale, accepted, true).await
}

/// The same, but Redis must agree with the database *without* any
/// reconciliation: for scenarios that must leave no drift at all (a graceful
/// shutdown), where a repair would hide a lost reservation.
pub async fn assert_invariants_unreconciled(
    stack: &Stack,
    sale: &str,
    accepted: &[String],
) -> Snapshot {
    check(stack, sale, accepted, false).await
}

async fn check(stack: &Stack, sale: &str, accepted: &[String], reconcile: bool) -> Snapshot {
    every_accepted_order_persisted_once(stack, accepted).await;

    let reconciled = std::cell::Cell::new(false);
    let snapshot = poll_until(
        Duration::from_secs(60),
        Duration::from_millis(250),
        || async {
            if let Some((status, report)) = match reconcile {
                true => stack.reconcile().await,
                false => None,
            } {
                assert!(
                    (200..300).contains(&status),
                    "reconcile answered {status}: {report}"
                );
                reconciled.set(true);
            }
            let snapshot = Snapshot::take(stack, sale).await;
            if snapshot.redis_agrees() && snapshot.databases_agree() {
                Ok(snapshot)
            } else {
                Err(snapshot)
            }
        },
    )
    .await
    .unwrap_or_else(|last| last);
    let reconciled = reconciled.get();
    let context = || {
        format!(
            "sale {sale}, reconciliation {}:\n{snapshot:#?}\n{}",
            match (reconcile, reconciled) {
                (false, _) => "not asked for",
                (true, true) => "ran",
                (true, false) => "unavailable in this build",
            },
            stack.logs()
        )
    };

    // No oversell, in the database that is the authority.
    assert!(snapshot.sold <= snapshot.total, "oversold: {}", context());
    assert!(snapshot.db_stock >= 0, "negative stock: {}", context());
    assert_eq!(
        snapshot.db_stock + snapshot.sold,
        snapshot.total,
        "database stock plus units sold is not the total: {}",
        context()
    );
    assert!(
        snapshot.databases_agree(),
        "orders holding stock ({}) differ from reserved reservations ({}): {}",
        snapshot.live_orders,
        snapshot.reserved.len(),
        context()
    );
    // Redis: never below zero (the script's guard), and in agreement.
    assert!(
        snapshot.redis_stock.is_some_and(|s| s >= 0),
        "Redis stock missing or negative: {}",
        context()
    );
    assert_eq!(
        snapshot.redis_stock,
        Some(snapshot.db_stock),
        "Redis stock differs from the database: {}",
        context()
    );
    assert!(
        snapshot.buyer_sets_agree(),
        "Redis buyers differ from the users holding a reservation: {}",
        context()
    );
    every_202_kept(stack, sale, accepted, &snapshot).await;
    every_saga_finished(stack, sale).await;
    snapshot
}

/// Statuses an order reaches only through a reservation that held a unit.
const KEPT: [&str; 4] = ["created", "paid", "cancelled", "expired"];

/// No more 202s than units ever for sale (the total, plus units returned by
/// cancellation or expiry and sold again), and no 202 order ended `failed`.
async fn every_202_kept(stack: &Stack, sale: &str, accepted: &[String], snapshot: &Snapshot) {
    let released = Stack::count(
        &stack.inventory_db,
        &format!("SELECT coalesce(sum(quantity), 0)::bigint AS n FROM reservations WHERE sale_id = '{sale}' AND status = 'released'"),
    )
    .await;
    assert!(
        accepted.len() as i64 <= snapshot.total + released,
        "{} answers were 202 for {} units ({} returned and sold again at most)",
        accepted.len(),
        snapshot.total,
        released
    );
    if accepted.is_empty() {
        return;
    }
    let list = sql_list(accepted);
    let statuses = pairs_in(
        &stack.orders_db,
        &format!("SELECT order_id AS a, status AS b FROM orders WHERE order_id IN ({list})"),
    )
    .await;
    let broken: Vec<(&String, &String)> = statuses
        .iter()
        .filter(|(_, status)| !KEPT.contains(&status.as_str()))
        .collect();
    assert!(
        broken.is_empty(),
        "a buyer told 202 did not get the unit: {broken:?}\n{}",
        stack.logs()
    );
}

/// Both halves of every saga of `sale` exist and agree.
async fn every_saga_finished(stack: &Stack, sale: &str) {
    let reservations = pairs(
        stack,
        &format!("SELECT order_id AS a, status AS b FROM reservations WHERE sale_id = '{sale}' AND status IN ('reserved', 'released')"),
    )
    .await;
    let orders = pairs_in(
        &stack.orders_db,
        &format!("SELECT order_id AS a, status AS b FROM orders WHERE sale_id = '{sale}' AND status <> 'failed'"),
    )
    .await;
    let without_order: Vec<_> = reservations
        .keys()
        .filter(|o| !orders.contains_key(*o))
        .collect();
    assert!(
        without_order.is_empty(),
        "reservations without an order: {without_order:?}"
    );
    let without_reservation: Vec<_> = orders
        .keys()
        .filter(|o| !reservations.contains_key(*o))
        .collect();
    assert!(
        without_reservation.is_empty(),
        "orders without a reservation: {without_reservation:?}"
    );
    let twice = Stack::count(
        &stack.orders_db,
        &format!("SELECT count(*) AS n FROM (SELECT user_id FROM orders WHERE sale_id = '{sale}' AND status IN ('created', 'paid') GROUP BY user_id HAVING count(*) > 1) t"),
    )
    .await;
    assert_eq!(twice, 0, "buyers holding two live orders");
}

fn sql_list(ids: &[String]) -> String {
    ids.iter()
        .map(|id| format!("'{}'", id.replace('\'', "")))
        .collect::<Vec<_>>()
        .join(",")
}

/// Every 202 order has exactly one row in `orders` and one in `reservations`,
/// and a reserved reservation goes with an order that holds stock.
pub async fn every_accepted_order_persisted_once(stack: &Stack, accepted: &[String]) {
    if accepted.is_empty() {
        return;
    }
    let list = sql_list(accepted);
    let in_orders = format!("SELECT count(*) AS n FROM orders WHERE order_id IN ({list})");
    let in_reservations =
        format!("SELECT count(*) AS n FROM reservations WHERE order_id IN ({list})");
    let want = accepted.len() as i64;
    let what = format!("all {want} accepted orders to be persisted");
    let (orders, reservations) = wait_until(&what, Duration::from_secs(120), || async {
        let o = Stack::count(&stack.orders_db, &in_orders).await;
        let r = Stack::count(&stack.inventory_db, &in_reservations).await;
        (o >= want && r >= want).then_some((o, r))
    })
    .await;
    // Primary keys make more impossible; say so loudly if that ever changes.
    assert_eq!((orders, reservations), (want, want), "duplicate rows");
    let distinct: BTreeSet<&String> = accepted.iter().collect();
    assert_eq!(
        distinct.len(),
        accepted.len(),
        "an order id was answered 202 twice"
    );

    // The two databases agree on each accepted order.
    let reserved = pairs(
        stack,
        &format!("SELECT order_id AS a, status AS b FROM reservations WHERE order_id IN ({list})"),
    )
    .await;
    let order_rows = pairs_in(
        &stack.orders_db,
        &format!("SELECT order_id AS a, status AS b FROM orders WHERE order_id IN ({list})"),
    )
    .await;
    for (order, reservation) in &reserved {
        let status = order_rows.get(order).map(String::as_str);
        let holds = !matches!(status, Some("failed") | Some("cancelled") | Some("expired"));
        assert_eq!(
            reservation == "reserved",
            holds,
            "order {order}: reservation {reservation}, order {status:?}"
        );
    }
}

async fn sale_row(stack: &Stack, sale: &str) -> (i64, i64) {
    let row = stack
        .inventory_db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT total_stock::bigint AS t, stock_remaining::bigint AS r FROM sales WHERE id = '{sale}'"),
        ))
        .await
        .expect("sales query")
        .unwrap_or_else(|| panic!("sale {sale} is not in the database"));
    (
        row.try_get("", "t").expect("total_stock"),
        row.try_get("", "r").expect("stock_remaining"),
    )
}

async fn pairs(stack: &Stack, sql: &str) -> BTreeMap<String, String> {
    pairs_in(&stack.inventory_db, sql).await
}

/// Rows of two text columns `a`, `b` as a map.
async fn pairs_in(db: &sea_orm::DatabaseConnection, sql: &str) -> BTreeMap<String, String> {
    db.query_all_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|row| {
            (
                row.try_get::<String>("", "a").expect("column a"),
                row.try_get::<String>("", "b").expect("column b"),
            )
        })
        .collect()
}
