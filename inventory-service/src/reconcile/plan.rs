//! What to repair in one sale, decided from two snapshots: Redis first, then
//! PostgreSQL (one repeatable-read transaction). A pure function, so every
//! rule is unit-tested here. The repair is applied only if Redis did not
//! change in between (the sale's `version`, see `sale.rs`), so every
//! purchase or release that lands between the snapshots aborts the round
//! instead of being counted twice.
//!
//! The rules, for each Redis buyer:
//! * its order has a `reserved` row: settled;
//! * its order's row is `released` or `rejected`: the unit went back (or
//!   never was taken) in PostgreSQL, and its Redis release may still be on
//!   its way. It is *released* here, exactly as the consumer would (remove
//!   the entry, add its quantity back, only if the entry still names the
//!   order), so the consumer's own release, arriving later, changes nothing;
//! * no row at all: *pending*, its `OrderRequested` may still be in flight,
//!   until it has been seen for the grace period (by this reconciler's
//!   clock, not the gateway's) **and** the reservation consumer has caught
//!   up with everything produced before the database was read. Only then is
//!   it an *orphan* (the gateway died between Redis and Kafka, or gave up on
//!   an order whose produce never landed): its entry is removed and its
//!   units come back through the stock rule. The grace period only has to
//!   outlast the gateway's produce window (`kafka.produce_timeout_ms` plus
//!   `unknown_outcome_resolve_ms`); consumer lag no longer matters.
//!
//! A `reserved` row whose user has no Redis entry is written back
//! (`HSETNX`): the user holds stock and must not buy twice.
//!
//! Stock: after the releases above, Redis should hold `db_remaining -
//! units(pending)`. Redis does not record quantities, so pending units lie
//! between `pending` and `pending * per_user_limit`. Redis is lowered when it
//! is above the upper end and raised when it is below the lower end, both
//! times to the lower end, `db_remaining - pending * per_user_limit`: never
//! above what the database can still deliver. With the usual limit of one the
//! band is a single value.
use std::collections::{HashMap, HashSet};

use seckill_common::domain::OrderId;

/// What Redis and PostgreSQL said about one sale.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub redis_stock: i64,
    /// user id -> order id, from the buyers hash.
    pub redis_buyers: Vec<(String, String)>,
    pub db_remaining: i64,
    /// order id -> user id, of `reserved` reservations.
    pub db_reserved: HashMap<String, String>,
    /// order id -> units, of Redis buyers whose reservation no longer holds
    /// stock (`released`) or never did (`rejected`).
    pub db_settled: HashMap<String, i64>,
    /// Orders without any row that this reconciler has seen in Redis for at
    /// least the grace period.
    pub overdue: HashSet<String>,
    /// The reservation consumer had caught up before the database was read.
    pub caught_up: bool,
    pub per_user_limit: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// (user, order, units) to release: remove the entry, add the units back.
    pub releases: Vec<(String, String, i64)>,
    /// (user, order) entries to remove from the buyers hash.
    pub orphans: Vec<(String, String)>,
    /// (user, order) entries to write back into the buyers hash.
    pub restore: Vec<(String, String)>,
    /// Buyers without a reservation that may still be in flight.
    pub pending: usize,
    /// Some pending buyer is overdue: ask whether the consumer caught up.
    pub needs_catch_up: bool,
    /// To add to the Redis stock (negative lowers it), after the releases.
    pub stock_delta: i64,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.releases.is_empty()
            && self.orphans.is_empty()
            && self.restore.is_empty()
            && self.stock_delta == 0
    }
}

pub fn plan(seen: &Observed) -> Plan {
    let mut plan = Plan::default();
    let in_redis: HashSet<&str> = seen.redis_buyers.iter().map(|(u, _)| u.as_str()).collect();
    for (user, order) in &seen.redis_buyers {
        if seen.db_reserved.contains_key(order) {
            continue;
        }
        if let Some(&units) = seen.db_settled.get(order) {
            plan.releases.push((user.clone(), order.clone(), units));
            continue;
        }
        // An unreadable order id cannot be in flight: only gateways write here.
        let garbage = OrderId::parse(order).is_err();
        let overdue = seen.overdue.contains(order);
        if garbage || (overdue && seen.caught_up) {
            plan.orphans.push((user.clone(), order.clone()));
        } else {
            plan.pending += 1;
            plan.needs_catch_up |= overdue;
        }
    }
    let mut restore: Vec<(String, String)> = seen
        .db_reserved
        .iter()
        .filter(|(_, user)| !in_redis.contains(user.as_str()))
        .map(|(order, user)| (user.clone(), order.clone()))
        .collect();
    restore.sort();
    plan.restore = restore;

    let released: i64 = plan.releases.iter().map(|(_, _, units)| units).sum();
    let redis_after = seen.redis_stock.saturating_add(released);
    let pending = i64::try_from(plan.pending).unwrap_or(i64::MAX);
    let limit = seen.per_user_limit.max(1);
    let lowest = seen
        .db_remaining
        .saturating_sub(pending.saturating_mul(limit))
        .max(0);
    let highest = seen.db_remaining.saturating_sub(pending).max(0);
    if redis_after > highest || redis_after < lowest {
        plan.stock_delta = lowest - redis_after;
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use seckill_common::domain::SaleId;

    fn sale() -> SaleId {
        SaleId::parse("s1").unwrap()
    }

    fn seen(redis_stock: i64, db_remaining: i64) -> Observed {
        Observed {
            redis_stock,
            db_remaining,
            per_user_limit: 1,
            ..Observed::default()
        }
    }

    fn order() -> String {
        OrderId::new(&sale()).to_string()
    }

    /// A buyer in both stores.
    fn settled(o: &mut Observed, user: &str) {
        let order = order();
        o.redis_buyers.push((user.into(), order.clone()));
        o.db_reserved.insert(order, user.into());
    }

    #[test]
    fn agreement_changes_nothing() {
        let mut o = seen(8, 8);
        settled(&mut o, "a");
        settled(&mut o, "b");
        assert_eq!(plan(&o), Plan::default());
    }

    #[test]
    fn a_buyer_without_reservation_is_pending_and_counts_against_stock() {
        let mut o = seen(7, 8);
        o.redis_buyers.push(("c".into(), order()));
        let p = plan(&o);
        assert_eq!((p.pending, p.stock_delta, p.needs_catch_up), (1, 0, false));
        assert!(p.orphans.is_empty());
    }

    #[test]
    fn an_overdue_buyer_is_an_orphan_only_once_the_consumer_caught_up() {
        let mut o = seen(7, 8);
        let ghost = order();
        o.redis_buyers.push(("ghost".into(), ghost.clone()));
        o.overdue.insert(ghost.clone());
        // Overdue by the clock, but the consumer may not have applied it yet.
        let p = plan(&o);
        assert_eq!((p.pending, p.needs_catch_up, p.stock_delta), (1, true, 0));
        assert!(p.orphans.is_empty());
        o.caught_up = true;
        let p = plan(&o);
        assert_eq!(p.orphans, vec![("ghost".to_owned(), ghost)]);
        assert_eq!((p.pending, p.stock_delta), (0, 1));
    }

    #[test]
    fn garbage_in_the_buyers_hash_is_an_orphan() {
        let mut o = seen(8, 8);
        o.redis_buyers.push(("x".into(), "not-an-order".into()));
        let p = plan(&o);
        assert_eq!(p.orphans.len(), 1);
    }

    /// A cancellation committed in PostgreSQL whose Redis release had not
    /// landed when Redis was read: released here exactly once, and the stock
    /// is not raised a second time for it.
    #[test]
    fn a_return_between_the_snapshots_is_released_once_not_counted_twice() {
        // 10 units; a holds one, b's was returned in the database (9 left)
        // while Redis still holds it (8).
        let mut o = seen(8, 9);
        settled(&mut o, "a");
        let returned = order();
        o.redis_buyers.push(("b".into(), returned.clone()));
        o.db_settled.insert(returned.clone(), 1);
        let p = plan(&o);
        assert_eq!(p.releases, vec![("b".to_owned(), returned, 1)]);
        assert_eq!(p.stock_delta, 0, "8 + 1 released = 9: no second raise");
        // The same for an order the database rejected.
        let mut o = seen(8, 9);
        settled(&mut o, "a");
        let rejected = order();
        o.redis_buyers.push(("b".into(), rejected.clone()));
        o.db_settled.insert(rejected, 1);
        assert_eq!(plan(&o).stock_delta, 0, "8 + 1 released = 9");
    }

    #[test]
    fn redis_above_the_database_is_lowered_and_below_is_raised() {
        assert_eq!(plan(&seen(11, 8)).stock_delta, -3);
        assert_eq!(plan(&seen(5, 8)).stock_delta, 3);
        assert_eq!(plan(&seen(-2, 0)).stock_delta, 2);
    }

    #[test]
    fn with_a_limit_above_one_only_definite_drift_is_repaired_and_to_the_safe_end() {
        let mut o = seen(8, 10);
        o.per_user_limit = 3;
        for user in ["p1", "p2"] {
            o.redis_buyers.push((user.into(), order()));
        }
        // Two pending orders hold 2..=6 units: Redis may be anywhere in 4..=8.
        for redis in [4, 6, 8] {
            o.redis_stock = redis;
            assert_eq!(plan(&o).stock_delta, 0);
        }
        o.redis_stock = 9;
        assert_eq!(plan(&o).stock_delta, -5);
        o.redis_stock = 3;
        assert_eq!(plan(&o).stock_delta, 1);
    }

    #[test]
    fn a_reservation_missing_from_redis_is_restored() {
        let mut o = seen(9, 9);
        let order = order();
        o.db_reserved.insert(order.clone(), "lost".into());
        let p = plan(&o);
        assert_eq!(p.restore, vec![("lost".to_owned(), order)]);
        assert_eq!(p.stock_delta, 0);
    }
}
