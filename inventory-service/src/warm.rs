//! Copies a sale from PostgreSQL into Redis, where the gateway sells it.
//!
//! Done when a sale is created and, through the guarded re-warm of
//! `reconcile` (also at start), for every sale that has not ended but whose
//! Redis hash is missing (Redis restarted or lost the key).
//! The sale hash is the gate: the gateway reserves nothing while it is
//! absent, so the buyers hash is filled first and the sale hash written last,
//! each step only if the sale hash still does not exist. A sale that is
//! already in Redis is never overwritten: Redis is ahead of the database by
//! the orders still in flight.
use std::sync::LazyLock;

use redis::{AsyncCommands, RedisError, Script};
use sea_orm::{DatabaseConnection, DbErr};
use seckill_common::redis_conn::Conn;

use seckill_common::domain::SaleId;
use seckill_common::stock::{field, SaleKeys};

use crate::persistence;

/// Buyers per script call: bounds the size of one Redis command.
const BUYERS_PER_CALL: usize = 500;

/// KEYS: sale hash, buyers hash. ARGV: user id, order id, ...
static FILL_BUYERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
        if #ARGV > 0 then redis.call('HSET', KEYS[2], unpack(ARGV)) end
        return 1
        "#,
    )
});

/// KEYS: sale hash. ARGV: field, value, ... The hash also records the
/// `run_id` of the Redis process it is written to (`reconcile::fence`).
static CREATE_SALE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
        redis.call('HSET', KEYS[1], unpack(ARGV))
        local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
        if run then redis.call('HSET', KEYS[1], 'run_id', run) end
        return 1
        "#,
    )
});

#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("database: {0}")]
    Db(#[from] DbErr),
    #[error("redis: {0}")]
    Redis(#[from] RedisError),
}

/// Writes the sale into Redis unless it is already there. Returns whether it wrote it.
pub async fn warm(db: &DatabaseConnection, redis: &Conn, id: &SaleId) -> Result<bool, WarmError> {
    let keys = SaleKeys::new(id);
    let mut con = redis.clone();
    if con.exists::<_, bool>(&keys.sale).await? {
        return Ok(false);
    }
    let Some((row, buyers)) = persistence::sale_snapshot(db, id).await? else {
        return Ok(false);
    };

    for chunk in buyers.chunks(BUYERS_PER_CALL) {
        let mut call = FILL_BUYERS.prepare_invoke();
        call.key(&keys.sale).key(&keys.buyers);
        for (user, order) in chunk {
            call.arg(user).arg(order);
        }
        if call.invoke_async::<i64>(&mut con).await? == 0 {
            return Ok(false); // Someone else warmed it meanwhile.
        }
    }
    let created: i64 = CREATE_SALE
        .key(&keys.sale)
        .arg(field::STOCK)
        .arg(row.stock_remaining)
        .arg(field::TOTAL)
        .arg(row.total_stock)
        .arg(field::NAME)
        .arg(&row.name)
        .arg(field::STARTS_AT)
        .arg(row.starts_at.timestamp_millis())
        .arg(field::ENDS_AT)
        .arg(row.ends_at.timestamp_millis())
        .arg(field::PER_USER_LIMIT)
        .arg(row.per_user_limit)
        .arg(field::REQUIRE_PURCHASE_TOKEN)
        .arg(i32::from(row.require_purchase_token))
        .arg(field::UNIT_PRICE_CENTS)
        .arg(row.unit_price_cents)
        .invoke_async(&mut con)
        .await?;
    Ok(created == 1)
}
