//! What to repair in one sale, decided from two snapshots: Redis first, then
//! PostgreSQL (one repeatable-read transaction). A pure function, so every
//! rule is unit-tested here.
//!
//! The rules:
//! * A Redis buyer whose order has a `reserved` row is settled.
//! * A Redis buyer without one is *pending* while its order id (a UUIDv7,
//!   minted by the gateway at the Lua step) is younger than the grace period:
//!   its `OrderRequested` may still be in flight. Older, it is an *orphan*
//!   (the gateway died between Redis and Kafka, or a release was lost): its
//!   entry is removed. Its units come back through the stock rule below.
//! * A `reserved` row whose user has no Redis entry is written back
//!   (`HSETNX`): the user holds stock and must not buy twice.
//! * Stock: Redis should hold `db_remaining - units(pending)`. Redis does not
//!   record quantities, so pending units lie between `pending` and
//!   `pending * per_user_limit`. Redis is lowered when it is above the upper
//!   end and raised when it is below the lower end, both times to the lower
//!   end, `db_remaining - pending * per_user_limit`: never above what the
//!   database can still deliver, so a repair never leads towards oversell.
//!   With the usual limit of one the band is a single value.
//!
//! The stock repair is applied as an increment, not a write: purchases and
//! releases that land between the snapshot and the repair keep their own
//! effect, and each of them moves the truth by exactly what it moves Redis.
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};

use seckill_common::domain::OrderId;

/// What Redis and PostgreSQL said about one sale.
#[derive(Debug, Clone)]
pub struct Observed {
    pub redis_stock: i64,
    /// user id -> order id, from the buyers hash.
    pub redis_buyers: Vec<(String, String)>,
    pub db_remaining: i64,
    /// order id -> user id, of `reserved` reservations.
    pub db_reserved: HashMap<String, String>,
    pub per_user_limit: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// (user, order) entries to remove from the buyers hash.
    pub orphans: Vec<(String, String)>,
    /// (user, order) entries to write back into the buyers hash.
    pub restore: Vec<(String, String)>,
    /// Buyers still inside the grace period without a reservation.
    pub pending: usize,
    /// To add to the Redis stock (negative lowers it).
    pub stock_delta: i64,
}

pub fn plan(seen: &Observed, now: DateTime<Utc>, grace: Duration) -> Plan {
    let mut plan = Plan::default();
    let in_redis: HashSet<&str> = seen.redis_buyers.iter().map(|(u, _)| u.as_str()).collect();
    for (user, order) in &seen.redis_buyers {
        if seen.db_reserved.contains_key(order) {
            continue;
        }
        // An unreadable order id cannot be in flight: only gateways write here.
        let young = OrderId::parse(order)
            .ok()
            .and_then(|o| o.created_at())
            .is_some_and(|at| now - at < grace);
        if young {
            plan.pending += 1;
        } else {
            plan.orphans.push((user.clone(), order.clone()));
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

    let pending = i64::try_from(plan.pending).unwrap_or(i64::MAX);
    let limit = seen.per_user_limit.max(1);
    let lowest = seen
        .db_remaining
        .saturating_sub(pending.saturating_mul(limit))
        .max(0);
    let highest = seen.db_remaining.saturating_sub(pending).max(0);
    if seen.redis_stock > highest || seen.redis_stock < lowest {
        plan.stock_delta = lowest - seen.redis_stock;
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
            redis_buyers: vec![],
            db_remaining,
            db_reserved: HashMap::new(),
            per_user_limit: 1,
        }
    }

    /// A buyer in both stores.
    fn settled(o: &mut Observed, user: &str) {
        let order = OrderId::new(&sale()).to_string();
        o.redis_buyers.push((user.into(), order.clone()));
        o.db_reserved.insert(order, user.into());
    }

    #[test]
    fn agreement_changes_nothing() {
        let mut o = seen(8, 8);
        settled(&mut o, "a");
        settled(&mut o, "b");
        assert_eq!(plan(&o, Utc::now(), Duration::seconds(30)), Plan::default());
    }

    #[test]
    fn a_young_buyer_without_reservation_is_pending_and_counts_against_stock() {
        let mut o = seen(7, 8);
        o.redis_buyers
            .push(("c".into(), OrderId::new(&sale()).to_string()));
        let p = plan(&o, Utc::now(), Duration::seconds(30));
        assert_eq!((p.pending, p.stock_delta), (1, 0));
        assert!(p.orphans.is_empty());
    }

    #[test]
    fn an_old_buyer_without_reservation_is_an_orphan_and_its_unit_comes_back() {
        let mut o = seen(7, 8);
        let order = OrderId::new(&sale()).to_string();
        o.redis_buyers.push(("ghost".into(), order.clone()));
        let later = Utc::now() + Duration::seconds(31);
        let p = plan(&o, later, Duration::seconds(30));
        assert_eq!(p.orphans, vec![("ghost".to_owned(), order)]);
        assert_eq!((p.pending, p.stock_delta), (0, 1));
    }

    #[test]
    fn garbage_in_the_buyers_hash_is_an_orphan() {
        let mut o = seen(8, 8);
        o.redis_buyers.push(("x".into(), "not-an-order".into()));
        let p = plan(&o, Utc::now(), Duration::seconds(30));
        assert_eq!(p.orphans.len(), 1);
    }

    #[test]
    fn redis_above_the_database_is_lowered_and_below_is_raised() {
        assert_eq!(
            plan(&seen(11, 8), Utc::now(), Duration::zero()).stock_delta,
            -3
        );
        assert_eq!(
            plan(&seen(5, 8), Utc::now(), Duration::zero()).stock_delta,
            3
        );
        assert_eq!(
            plan(&seen(-2, 0), Utc::now(), Duration::zero()).stock_delta,
            2
        );
    }

    #[test]
    fn with_a_limit_above_one_only_definite_drift_is_repaired_and_to_the_safe_end() {
        let mut o = seen(8, 10);
        o.per_user_limit = 3;
        for user in ["p1", "p2"] {
            o.redis_buyers
                .push((user.into(), OrderId::new(&sale()).to_string()));
        }
        // Two pending orders hold 2..=6 units: Redis may be anywhere in 4..=8.
        for redis in [4, 6, 8] {
            o.redis_stock = redis;
            assert_eq!(plan(&o, Utc::now(), Duration::seconds(30)).stock_delta, 0);
        }
        o.redis_stock = 9;
        assert_eq!(plan(&o, Utc::now(), Duration::seconds(30)).stock_delta, -5);
        o.redis_stock = 3;
        assert_eq!(plan(&o, Utc::now(), Duration::seconds(30)).stock_delta, 1);
    }

    #[test]
    fn a_reservation_missing_from_redis_is_restored() {
        let mut o = seen(9, 9);
        let order = OrderId::new(&sale()).to_string();
        o.db_reserved.insert(order.clone(), "lost".into());
        let p = plan(&o, Utc::now(), Duration::seconds(30));
        assert_eq!(p.restore, vec![("lost".to_owned(), order)]);
        assert_eq!(p.stock_delta, 0);
    }
}
