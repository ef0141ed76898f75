//! The purchase decision: one Lua script, one Redis round trip.
//!
//! The script is the only place stock is taken. Redis runs it atomically, so
//! concurrent buyers are serialised per sale without any lock of ours, and the
//! check-then-decrement can never oversell. `Script` sends EVALSHA and, if
//! Redis answers NOSCRIPT (restart, failover, SCRIPT FLUSH), loads it and retries.
use std::collections::HashMap;
use std::sync::LazyLock;

use redis::Script;
use seckill_common::domain::{OrderId, Quantity, SaleId, UserId};
use seckill_common::redis_conn::Conn;
use seckill_common::stock::SaleKeys;

/// KEYS: sale hash, buyers hash, voided orders, and in the Redis Streams
/// mode the sale's order stream. ARGV: user id, quantity, order id, `1`
/// when the request carried a valid purchase token (checked by the gateway
/// before, see [`crate::purchase_token`]), and in the Streams mode the
/// `OrderRequested` envelope and its trace context. Returns `{code, remaining}`.
/// With the fourth key, an accepted purchase also appends the order to the
/// stream: reserving and enqueueing are one atomic step, so no reservation
/// exists without its order, and a 202 waits for no broker. Time
/// comes from Redis itself, so every gateway judges the sale window by one
/// clock. The sale's token requirement is read here, in the same round trip.
///
/// `-5` (sold out) means nothing remains. A request for more than remains
/// gets `-8`, never `-5`: the gateway remembers "sold out" for the whole
/// sale, and one oversized request must not close the sale for everyone.
pub const PURCHASE_LUA: &str = r#"
local sale = redis.call('HMGET', KEYS[1], 'stock', 'starts_at', 'ends_at', 'per_user_limit', 'require_purchase_token')
if not sale[1] then return {-1, 0} end
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then return {-9, 0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now < tonumber(sale[2]) then return {-2, 0} end
if now >= tonumber(sale[3]) then return {-3, 0} end
if sale[5] == '1' and ARGV[4] ~= '1' then return {-7, 0} end
local qty = tonumber(ARGV[2])
if qty > tonumber(sale[4]) then return {-6, 0} end
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return {-4, 0} end
local stock = tonumber(sale[1])
if stock <= 0 then return {-5, 0} end
if stock < qty then return {-8, stock} end
redis.call('HINCRBY', KEYS[1], 'stock', -qty)
redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
if KEYS[4] then
  redis.call('XADD', KEYS[4], '*', 'key', ARGV[3], 'type', 'OrderRequested', 'payload', ARGV[5], unpack(ARGV, 6))
end
return {1, stock - qty}
"#;

static PURCHASE: LazyLock<Script> = LazyLock::new(|| Script::new(PURCHASE_LUA));

/// What the script decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Stock taken and the user recorded; `remaining` units are left.
    Accepted {
        remaining: i64,
    },
    NotFound,
    NotStarted,
    Ended,
    OverLimit,
    AlreadyPurchased,
    SoldOut,
    /// The sale requires a purchase token and the request had none.
    TokenRequired,
    /// Units remain, but fewer than asked for. Not sold out: a smaller
    /// request (or another buyer's) still succeeds.
    NotEnough {
        remaining: i64,
    },
    /// This order id was voided: its request reached Redis after the
    /// gateway had already undone it (`stock::void`). Nothing was taken.
    Voided,
}

impl Decision {
    fn from_reply(code: i64, remaining: i64) -> Result<Self, redis::RedisError> {
        Ok(match code {
            1 => Decision::Accepted { remaining },
            -1 => Decision::NotFound,
            -2 => Decision::NotStarted,
            -3 => Decision::Ended,
            -4 => Decision::AlreadyPurchased,
            -5 => Decision::SoldOut,
            -6 => Decision::OverLimit,
            -7 => Decision::TokenRequired,
            -8 => Decision::NotEnough { remaining },
            -9 => Decision::Voided,
            other => {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "unexpected purchase script reply",
                    other.to_string(),
                )))
            }
        })
    }

    /// The metric label for this outcome.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Accepted { .. } => "accepted",
            Decision::SoldOut => "sold_out",
            Decision::AlreadyPurchased => "duplicate",
            Decision::NotStarted | Decision::Ended => "not_active",
            Decision::NotFound => "not_found",
            Decision::OverLimit => "over_limit",
            Decision::TokenRequired => "token_required",
            Decision::NotEnough { .. } => "not_enough",
            Decision::Voided => "voided",
        }
    }
}

/// Runs the script for a request without a purchase token.
pub async fn reserve(
    redis: &mut Conn,
    sale: &SaleId,
    user: &UserId,
    quantity: Quantity,
    order: &OrderId,
) -> redis::RedisResult<Decision> {
    reserve_with_token(redis, sale, user, quantity, order, false).await
}

/// Runs the script, on the connection the caller chose (its HTTP worker's
/// own, see `worker_redis`); `has_token` says a valid purchase token was
/// presented.
pub async fn reserve_with_token(
    redis: &mut Conn,
    sale: &SaleId,
    user: &UserId,
    quantity: Quantity,
    order: &OrderId,
    has_token: bool,
) -> redis::RedisResult<Decision> {
    reserve_and_enqueue(redis, sale, user, quantity, order, has_token, None).await
}

/// The order event the script appends in the Redis Streams mode: the
/// envelope's JSON and the trace context fields (`traceparent`, ...).
pub struct StreamEntry<'a> {
    pub payload: &'a [u8],
    pub trace: &'a HashMap<String, String>,
}

/// Runs the script; with `entry`, an accepted purchase is also appended to
/// the sale's order stream in the same step.
pub async fn reserve_and_enqueue(
    redis: &mut Conn,
    sale: &SaleId,
    user: &UserId,
    quantity: Quantity,
    order: &OrderId,
    has_token: bool,
    entry: Option<StreamEntry<'_>>,
) -> redis::RedisResult<Decision> {
    let keys = SaleKeys::new(sale);
    let mut call = PURCHASE.prepare_invoke();
    call.key(&keys.sale)
        .key(&keys.buyers)
        .key(&keys.void)
        .arg(user.as_str())
        .arg(quantity.get())
        .arg(order.to_string())
        .arg(if has_token { "1" } else { "0" });
    if let Some(entry) = entry {
        call.key(&keys.orders).arg(entry.payload);
        for (name, value) in entry.trace {
            call.arg(name).arg(value);
        }
    }
    let (code, remaining): (i64, i64) = call.invoke_async(redis).await?;
    Decision::from_reply(code, remaining)
}

/// KEYS: buyers hash, voided orders. ARGV: user id, order id. In the Streams
/// mode a purchase whose script answer was lost is decided here, atomically:
/// if the buyer entry names the order, the script ran and appended the order
/// (`1`, it is queued); if not, the order id is voided so the script can no
/// longer run for it (`0`, nothing was reserved).
static SETTLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then return 1 end
        redis.call('HSET', KEYS[2], ARGV[2], '1')
        return 0
        "#,
    )
});

/// Decides a purchase whose script answer was lost (Streams mode, see
/// [`SETTLE`]): `true` when the order is queued.
pub async fn settle(
    redis: &mut Conn,
    sale: &SaleId,
    user: &UserId,
    order: &OrderId,
) -> redis::RedisResult<bool> {
    let keys = SaleKeys::new(sale);
    let queued: i64 = SETTLE
        .key(&keys.buyers)
        .key(&keys.void)
        .arg(user.as_str())
        .arg(order.to_string())
        .invoke_async(redis)
        .await?;
    Ok(queued == 1)
}

/// The script's SHA1, for tools that call it directly (redis-benchmark).
pub fn script_hash() -> String {
    PURCHASE.get_hash().to_owned()
}
