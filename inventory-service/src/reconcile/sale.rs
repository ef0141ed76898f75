//! One sale: snapshot Redis, then PostgreSQL, [`plan`], apply, report.
use std::collections::HashMap;
use std::sync::LazyLock;

use chrono::Utc;
use redis::aio::ConnectionManager;
use redis::Script;
use sea_orm::DatabaseConnection;
use serde::Serialize;

use seckill_common::domain::SaleId;
use seckill_common::stock::SaleKeys;

use super::plan::{plan, Observed};
use super::ReconcileError;
use crate::persistence;

/// KEYS: sale, buyers. Nil when the sale is not in Redis; else {stock, buyers...}
/// read atomically, so the two agree with each other.
static SNAPSHOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if redis.call('EXISTS', KEYS[1]) == 0 then return false end
        return {redis.call('HGET', KEYS[1], 'stock') or '0', redis.call('HGETALL', KEYS[2])}
        "#,
    )
});

/// KEYS: buyers. ARGV: user, order. Removes the entry only if it still names the order.
static REMOVE_BUYER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
        return redis.call('HDEL', KEYS[1], ARGV[1])
        "#,
    )
});

/// KEYS: sale, buyers. ARGV: user, order. Writes the entry back unless the
/// user has one, and only while the sale is in Redis.
static RESTORE_BUYER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
        return redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2])
        "#,
    )
});

/// KEYS: sale. ARGV: delta. An increment, never a write (see `plan`); never
/// creates a hash that lost its other fields.
static ADJUST_STOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if redis.call('EXISTS', KEYS[1]) == 0 then return false end
        return redis.call('HINCRBY', KEYS[1], 'stock', ARGV[1])
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
    /// Redis buyers without a reservation yet, inside the grace period.
    pub pending_buyers: usize,
    /// Order ids of Redis buyers removed because no reservation appeared in time.
    pub orphan_buyers_removed: Vec<String>,
    /// Order ids of reservations written back into the Redis buyers.
    pub buyers_restored: Vec<String>,
    /// Added to the Redis stock (negative: lowered).
    pub stock_adjustment: i64,
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
        let n = self.orphan_buyers_removed.len() + self.buyers_restored.len();
        n as u64 + u64::from(self.stock_adjustment != 0) + u64::from(self.rewarmed)
    }
}

/// `None` when the sale vanished from Redis or PostgreSQL meanwhile.
pub async fn reconcile(
    db: &DatabaseConnection,
    redis: &ConnectionManager,
    id: &SaleId,
    grace: chrono::Duration,
) -> Result<Option<SaleReport>, ReconcileError> {
    let keys = SaleKeys::new(id);
    let mut con = redis.clone();
    // Redis first: a reservation applied between the two snapshots is then
    // seen as settled, never counted twice (see `plan`).
    let snapshot: Option<(String, Vec<String>)> = SNAPSHOT
        .key(&keys.sale)
        .key(&keys.buyers)
        .invoke_async(&mut con)
        .await?;
    let Some((stock, flat)) = snapshot else {
        return Ok(None);
    };
    let redis_buyers: Vec<(String, String)> = flat
        .chunks_exact(2)
        .map(|kv| (kv[0].clone(), kv[1].clone()))
        .collect();
    let Some((db_remaining, per_user_limit, db_reserved)) = db_snapshot(db, id).await? else {
        return Ok(None);
    };
    let seen = Observed {
        redis_stock: stock.parse().unwrap_or(0),
        redis_buyers,
        db_remaining,
        db_reserved,
        per_user_limit,
    };
    let todo = plan(&seen, Utc::now(), grace);

    let mut report = SaleReport {
        sale_id: id.to_string(),
        redis_stock: Some(seen.redis_stock),
        db_stock_remaining: seen.db_remaining,
        redis_buyers: seen.redis_buyers.len(),
        db_reserved: seen.db_reserved.len(),
        pending_buyers: todo.pending,
        ..SaleReport::default()
    };
    for (user, order) in &todo.orphans {
        let removed: i64 = REMOVE_BUYER
            .key(&keys.buyers)
            .arg(user)
            .arg(order)
            .invoke_async(&mut con)
            .await?;
        if removed == 1 {
            report.orphan_buyers_removed.push(order.clone());
        }
    }
    for (user, order) in &todo.restore {
        let written: i64 = RESTORE_BUYER
            .key(&keys.sale)
            .key(&keys.buyers)
            .arg(user)
            .arg(order)
            .invoke_async(&mut con)
            .await?;
        if written == 1 {
            report.buyers_restored.push(order.clone());
        }
    }
    if todo.stock_delta != 0 {
        let after: Option<i64> = ADJUST_STOCK
            .key(&keys.sale)
            .arg(todo.stock_delta)
            .invoke_async(&mut con)
            .await?;
        if after.is_some() {
            report.stock_adjustment = todo.stock_delta;
        }
    }
    Ok(Some(report))
}

type DbSnapshot = (i64, i64, HashMap<String, String>);

/// Remaining stock, per-user limit and reserved order ids -> user ids.
async fn db_snapshot(
    db: &DatabaseConnection,
    id: &SaleId,
) -> Result<Option<DbSnapshot>, sea_orm::DbErr> {
    Ok(persistence::sale_snapshot(db, id)
        .await?
        .map(|(row, buyers)| {
            (
                i64::from(row.stock_remaining),
                i64::from(row.per_user_limit),
                buyers
                    .into_iter()
                    .map(|(user, order)| (order, user))
                    .collect(),
            )
        }))
}
