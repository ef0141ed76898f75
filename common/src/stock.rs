//! The Redis layout of a sale, shared by the gateway (which reserves) and
//! inventory-service (which warms and returns stock).
//!
//! Every key of one sale carries the hash tag `{sale_id}`, so the keys live
//! in one slot and the scripts also run on Redis Cluster.
use std::sync::LazyLock;

use crate::redis_conn::Conn;
use redis::Script;

use crate::domain::{OrderId, Quantity, SaleId, UserId};

/// Fields of the sale hash.
pub mod field {
    /// Units still reservable. Only the scripts change it.
    pub const STOCK: &str = "stock";
    pub const TOTAL: &str = "total";
    pub const NAME: &str = "name";
    /// Unix milliseconds.
    pub const STARTS_AT: &str = "starts_at";
    /// Unix milliseconds, exclusive.
    pub const ENDS_AT: &str = "ends_at";
    pub const PER_USER_LIMIT: &str = "per_user_limit";
    /// For the read path only (shown, never used by a script).
    pub const UNIT_PRICE_CENTS: &str = "unit_price_cents";
    /// `1` when a purchase needs a valid `X-Purchase-Token` (anti-bot step).
    pub const REQUIRE_PURCHASE_TOKEN: &str = "require_purchase_token";
    /// Bumped by every script that changes the stock or the buyers
    /// (purchase, release, void, reconciliation), so reconciliation applies
    /// a repair only to the state it looked at.
    pub const VERSION: &str = "version";
    /// The `run_id` of the Redis process the sale was written to, so that a
    /// process that came back with stale data is noticed (inventory-service,
    /// `reconcile::fence`). Set by the scripts that write it.
    pub const RUN_ID: &str = "run_id";
}

/// Set by inventory-service once every unfinished sale is in Redis. A Redis
/// that lost its data lost this key too, so a sale missing while it is absent
/// may be missing only *for now* (being restored: 503, retry), not unknown
/// (404). It lives outside any sale's hash slot: only plain GET/SET touch it.
pub const WARM_MARKER: &str = "seckill:warm";

/// Records that every unfinished sale is in Redis.
pub async fn mark_warm(redis: &mut Conn) -> redis::RedisResult<()> {
    redis::cmd("SET")
        .arg(WARM_MARKER)
        .arg(1)
        .query_async(redis)
        .await
}

/// Whether Redis holds every unfinished sale (see [`WARM_MARKER`]).
pub async fn is_warm(redis: &mut Conn) -> redis::RedisResult<bool> {
    redis::cmd("EXISTS")
        .arg(WARM_MARKER)
        .query_async(redis)
        .await
}

#[derive(Debug, Clone)]
pub struct SaleKeys {
    /// Hash: the sale's window, limit and remaining stock.
    pub sale: String,
    /// Hash: user id -> order id, one entry per user holding a reservation.
    pub buyers: String,
    /// Hash: order id -> `1` for every order id whose reservation the
    /// gateway undid because the script's answer was lost. The purchase
    /// script refuses these ids, so a request that reaches Redis after its
    /// own undo cannot take stock for an order nobody will produce; and an
    /// order looked up here is known to have failed (never `queued`).
    pub void: String,
    /// Stream: the sale's `OrderRequested` entries, appended by the purchase
    /// script in the Redis Streams mode (`transport::streams`).
    pub orders: String,
}

impl SaleKeys {
    pub fn new(sale: &SaleId) -> Self {
        Self {
            sale: format!("seckill:{{{sale}}}:sale"),
            buyers: format!("seckill:{{{sale}}}:buyers"),
            void: format!("seckill:{{{sale}}}:void"),
            orders: format!("seckill:{{{sale}}}:orders"),
        }
    }
}

/// Returns one reservation: only if the user's entry still names this order,
/// so a second release of the same order (a redelivery, a retry) is a no-op.
/// ARGV[4], when not empty, is the order the user really holds (a rejected
/// duplicate): the entry is pointed at it instead of removed, so the user
/// stays blocked from buying twice. With a third key (the voided orders),
/// the order id is voided first: see [`void`].
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if #KEYS > 2 then redis.call('HSET', KEYS[3], ARGV[2], '1') end
        if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
        if ARGV[4] ~= '' then
          redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
        else
          redis.call('HDEL', KEYS[2], ARGV[1])
        end
        if redis.call('EXISTS', KEYS[1]) == 1 then
          redis.call('HINCRBY', KEYS[1], 'stock', ARGV[3])
          redis.call('HINCRBY', KEYS[1], 'version', 1)
        end
        return 1
        "#,
    )
});

/// Gives a reservation back to the sale. Returns whether anything changed.
pub async fn release(
    redis: &mut Conn,
    sale: &SaleId,
    user: &UserId,
    order: &OrderId,
    quantity: Quantity,
) -> redis::RedisResult<bool> {
    release_keeping(redis, sale, user, order, quantity, None).await
}

/// Gives `order`'s units back, and when `holder` is given (the order the
/// user really holds: `order` was a rejected duplicate), leaves the user's
/// entry naming `holder` rather than removing it.
pub async fn release_keeping(
    redis: &mut Conn,
    sale: &SaleId,
    user: &UserId,
    order: &OrderId,
    quantity: Quantity,
    holder: Option<&str>,
) -> redis::RedisResult<bool> {
    let keys = SaleKeys::new(sale);
    let mut call = RELEASE.prepare_invoke();
    call.key(&keys.sale).key(&keys.buyers);
    run_release(redis, call, user, order, quantity, holder).await
}

/// Undoes a reservation whose fate the gateway does not know (the script's
/// answer was lost, or the order was certainly not enqueued): voids the
/// order id (see [`SaleKeys::void`]), then returns the units if the user's
/// entry names it. Idempotent, and right whether or not the script ran.
/// Returns whether units went back.
pub async fn void(
    redis: &mut Conn,
    sale: &SaleId,
    user: &UserId,
    order: &OrderId,
    quantity: Quantity,
) -> redis::RedisResult<bool> {
    let keys = SaleKeys::new(sale);
    let mut call = RELEASE.prepare_invoke();
    call.key(&keys.sale).key(&keys.buyers).key(&keys.void);
    run_release(redis, call, user, order, quantity, None).await
}

async fn run_release(
    redis: &mut Conn,
    mut call: redis::ScriptInvocation<'_>,
    user: &UserId,
    order: &OrderId,
    quantity: Quantity,
    holder: Option<&str>,
) -> redis::RedisResult<bool> {
    let changed: i64 = call
        .arg(user.as_str())
        .arg(order.to_string())
        .arg(quantity.get())
        .arg(holder.unwrap_or(""))
        .invoke_async(redis)
        .await?;
    Ok(changed == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_share_one_hash_tag() {
        let keys = SaleKeys::new(&SaleId::parse("abc").unwrap());
        assert_eq!(keys.sale, "seckill:{abc}:sale");
        assert_eq!(keys.buyers, "seckill:{abc}:buyers");
    }
}
