//! One sale: snapshot Redis, then PostgreSQL, [`plan`], apply, report.
use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use redis::Script;
use sea_orm::DatabaseConnection;
use seckill_common::redis_conn::Conn;
use serde::Serialize;

use seckill_common::domain::SaleId;
use seckill_common::stock::SaleKeys;

use super::error::ReconcileError;
use super::plan::{plan, Observed};
use crate::persistence;
use seckill_common::transport::CatchUp;

/// KEYS: sale, buyers. Nil when the sale is not in Redis; else {stock,
/// version, buyers...} read atomically, so the three agree with each other.
static SNAPSHOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if redis.call('EXISTS', KEYS[1]) == 0 then return false end
        local s = redis.call('HMGET', KEYS[1], 'stock', 'version')
        return {s[1] or '0', s[2] or '0', redis.call('HGETALL', KEYS[2])}
        "#,
    )
});

/// KEYS: sale, buyers, voided orders. ARGV: version seen by the snapshot; n, then n
/// (user, order, units) releases; n, then n (user, order) orphans; n, then
/// n (user, order) restores; the stock delta. Applies all of it only if the
/// sale's `version` is still the one the snapshot saw, i.e. no purchase,
/// release or undo touched the sale since (they all bump it): a change that
/// landed between the two snapshots aborts the round, and is never counted
/// twice. A removed orphan's order id is voided (`SaleKeys::void`), so its
/// owner reads it as failed rather than unknown. Returns {1, released, removed, restored}, {-1} (sale gone) or
/// {-2} (changed).
static APPLY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end
        if (redis.call('HGET', KEYS[1], 'version') or '0') ~= ARGV[1] then return {-2} end
        local i = 2
        local released, removed, restored = 0, 0, 0
        local n = tonumber(ARGV[i]); i = i + 1
        for _ = 1, n do
          if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
            redis.call('HDEL', KEYS[2], ARGV[i])
            redis.call('HINCRBY', KEYS[1], 'stock', ARGV[i + 2])
            released = released + 1
          end
          i = i + 3
        end
        n = tonumber(ARGV[i]); i = i + 1
        for _ = 1, n do
          if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[i + 1] then
            redis.call('HDEL', KEYS[2], ARGV[i])
            redis.call('HSET', KEYS[3], ARGV[i + 1], '1')
            removed = removed + 1
          end
          i = i + 2
        end
        n = tonumber(ARGV[i]); i = i + 1
        for _ = 1, n do
          restored = restored + redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1])
          i = i + 2
        end
        local delta = tonumber(ARGV[i])
        if delta ~= 0 then redis.call('HINCRBY', KEYS[1], 'stock', delta) end
        redis.call('HINCRBY', KEYS[1], 'version', 1)
        return {1, released, removed, restored}
        "#,
    )
});

/// What was found in one sale and what was changed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SaleReport {
    pub sale_id: String,
    /// The sale hash was not in Redis.
    pub redis_missing: bool,
    /// ... and was warmed again from PostgreSQL by this run.
    pub rewarmed: bool,
    /// Redis stock before any repair (`None` when missing).
    pub redis_stock: Option<i64>,
    pub db_stock_remaining: i64,
    pub redis_buyers: usize,
    pub db_reserved: usize,
    /// Redis buyers without a reservation that may still be in flight.
    pub pending_buyers: usize,
    /// Order ids whose units went back in PostgreSQL (cancelled, expired,
    /// rejected) and were released in Redis by this run.
    pub buyers_released: Vec<String>,
    /// Order ids of Redis buyers removed because no reservation appeared
    /// after the grace period, with the reservation consumer caught up.
    pub orphan_buyers_removed: Vec<String>,
    /// Order ids of reservations written back into the Redis buyers.
    pub buyers_restored: Vec<String>,
    /// Added to the Redis stock (negative: lowered).
    pub stock_adjustment: i64,
    /// Redis changed while this run looked at it: nothing was applied, the
    /// next run decides again.
    pub busy: bool,
}

impl SaleReport {
    pub fn missing(id: &SaleId) -> Self {
        Self {
            sale_id: id.to_string(),
            redis_missing: true,
            ..Self::default()
        }
    }

    /// Repairs made.
    pub fn changes(&self) -> u64 {
        let n = self.buyers_released.len()
            + self.orphan_buyers_removed.len()
            + self.buyers_restored.len();
        n as u64 + u64::from(self.stock_adjustment != 0) + u64::from(self.rewarmed)
    }
}

/// When this reconciler first saw each unresolved Redis buyer, per sale: a
/// buyer is overdue after the grace period by this clock, whatever the
/// clock of the gateway that minted its order id says.
#[derive(Default)]
pub struct FirstSeen(Mutex<HashMap<SaleId, HashMap<String, Instant>>>);

impl FirstSeen {
    /// Remembers `unresolved` (forgetting the sale's other buyers) and
    /// returns those seen for at least `grace`.
    fn overdue(&self, sale: &SaleId, unresolved: &[&String], grace: Duration) -> HashSet<String> {
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let seen = all.entry(sale.clone()).or_default();
        let now = Instant::now();
        let keep: HashSet<&String> = unresolved.iter().copied().collect();
        seen.retain(|order, _| keep.contains(order));
        unresolved
            .iter()
            .filter(|order| {
                let since = *seen.entry((**order).clone()).or_insert(now);
                now.duration_since(since) >= grace
            })
            .map(|order| (*order).clone())
            .collect()
    }
}

/// What judging a sale needs besides its two stores.
pub struct Judge<'a> {
    pub grace: Duration,
    pub first_seen: &'a FirstSeen,
    pub catch_up: &'a CatchUp,
}

/// `None` when the sale vanished from Redis or PostgreSQL meanwhile.
pub async fn reconcile(
    db: &DatabaseConnection,
    redis: &Conn,
    id: &SaleId,
    judge: &Judge<'_>,
) -> Result<Option<SaleReport>, ReconcileError> {
    let keys = SaleKeys::new(id);
    let mut con = redis.clone();
    let snapshot: Option<(String, String, Vec<String>)> = SNAPSHOT
        .key(&keys.sale)
        .key(&keys.buyers)
        .invoke_async(&mut con)
        .await?;
    let Some((stock, version, flat)) = snapshot else {
        return Ok(None);
    };
    let redis_buyers: Vec<(String, String)> = flat
        .chunks_exact(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect();
    let orders: Vec<String> = redis_buyers.iter().map(|(_, o)| o.clone()).collect();
    let mut seen = Observed {
        redis_stock: stock.parse().unwrap_or(0),
        redis_buyers,
        ..Observed::default()
    };
    if !observe(db, id, &orders, &mut seen).await? {
        return Ok(None);
    }
    let unresolved: Vec<&String> = orders
        .iter()
        .filter(|o| !seen.db_reserved.contains_key(*o) && !seen.db_settled.contains_key(*o))
        .collect();
    seen.overdue = judge.first_seen.overdue(id, &unresolved, judge.grace);
    let mut todo = plan(&seen);
    if todo.needs_catch_up && caught_up(judge.catch_up).await {
        // Everything produced until now is applied: read the database again
        // (after the check), and what still has no row never will.
        if !observe(db, id, &orders, &mut seen).await? {
            return Ok(None);
        }
        seen.caught_up = true;
        todo = plan(&seen);
    }

    let mut report = SaleReport {
        sale_id: id.to_string(),
        redis_stock: Some(seen.redis_stock),
        db_stock_remaining: seen.db_remaining,
        redis_buyers: seen.redis_buyers.len(),
        db_reserved: seen.db_reserved.len(),
        pending_buyers: todo.pending,
        ..SaleReport::default()
    };
    if todo.is_empty() {
        return Ok(Some(report));
    }
    let mut apply = APPLY.prepare_invoke();
    apply
        .key(&keys.sale)
        .key(&keys.buyers)
        .key(&keys.void)
        .arg(&version);
    apply.arg(todo.releases.len());
    for (user, order, units) in &todo.releases {
        apply.arg(user).arg(order).arg(units);
    }
    apply.arg(todo.orphans.len());
    for (user, order) in &todo.orphans {
        apply.arg(user).arg(order);
    }
    apply.arg(todo.restore.len());
    for (user, order) in &todo.restore {
        apply.arg(user).arg(order);
    }
    apply.arg(todo.stock_delta);
    let applied: Vec<i64> = apply.invoke_async(&mut con).await?;
    match applied.first() {
        Some(1) => {
            report.buyers_released = todo.releases.into_iter().map(|(_, o, _)| o).collect();
            report.orphan_buyers_removed = todo.orphans.into_iter().map(|(_, o)| o).collect();
            report.buyers_restored = todo.restore.into_iter().map(|(_, o)| o).collect();
            report.stock_adjustment = todo.stock_delta;
        }
        Some(-2) => report.busy = true,
        _ => return Ok(None),
    }
    Ok(Some(report))
}

async fn caught_up(catch_up: &CatchUp) -> bool {
    match catch_up.caught_up().await {
        Ok(yes) => yes,
        Err(error) => {
            tracing::warn!(%error, "cannot tell whether the reservation consumer caught up; no buyer is judged an orphan this round");
            false
        }
    }
}

/// Fills in the database's side of `seen`, from one repeatable-read
/// snapshot; `false` when the sale is not in the database.
async fn observe(
    db: &DatabaseConnection,
    id: &SaleId,
    orders: &[String],
    seen: &mut Observed,
) -> Result<bool, sea_orm::DbErr> {
    let Some(view) = persistence::reconcile_snapshot(db, id, orders).await? else {
        return Ok(false);
    };
    seen.db_remaining = i64::from(view.sale.stock_remaining);
    seen.per_user_limit = i64::from(view.sale.per_user_limit);
    seen.db_reserved = view
        .reserved
        .into_iter()
        .map(|(user, order)| (order, user))
        .collect();
    seen.db_settled = view.settled.into_iter().collect();
    Ok(true)
}
