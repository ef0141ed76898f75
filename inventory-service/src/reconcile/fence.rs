//! A Redis that came back with *stale* data: AOF with `appendfsync everysec`
//! lost its last second, or a failover promoted a replica that lagged. The
//! sale keys exist, so nothing looks missing, yet the units sold in the lost
//! writes would be sold a second time, and buyers who hold an order could
//! buy again.
//!
//! Every Redis process has its own `run_id` (a restart or a failover
//! changes it). Each sale's hash records the `run_id` of the process it was
//! written to (`field::RUN_ID`, set by the warm script and checked here), so
//! the record is exactly as old as the data it came back with. Per sale,
//! not per Redis: on a cluster each sale lives on its own shard, and only
//! the sales of a shard that restarted are fenced. When the two differ, the
//! sale is *fenced*: the warm marker, then the sale's keys are deleted, so
//! the gateways sell nothing of it (503, retry) until the guarded re-warm
//! (`Reconciler::rewarm_missing`: the delay, then the reservation consumer
//! caught up) writes it again from PostgreSQL, which by then has applied
//! every order the lost writes had accepted.
//!
//! The check runs every `reconcile.rewarm_check`: purchases that reach a
//! stale Redis before it notices can still resell a lost unit. With
//! `appendfsync always` nothing is lost and the fence only costs the re-warm
//! delay.
use std::sync::LazyLock;

use redis::{AsyncCommands, RedisError, Script};

use seckill_common::domain::SaleId;
use seckill_common::redis_conn::Conn;
use seckill_common::stock::{SaleKeys, WARM_MARKER};

/// KEYS: the sale hash, its buyers. ARGV[1]: `look` or `fence`. Returns 1
/// when the sale was written to another Redis process (and, with `fence`,
/// deletes it); 0 otherwise. A sale without a record (written by an older
/// version) is recorded as verified. `INFO` runs inside the script so that
/// it asks the node that holds the sale.
static CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
        local run = string.match(redis.call('INFO', 'server'), 'run_id:(%w+)')
        if not run then return 0 end
        local seen = redis.call('HGET', KEYS[1], 'run_id')
        if seen == run then return 0 end
        if not seen then
          redis.call('HSET', KEYS[1], 'run_id', run)
          return 0
        end
        if ARGV[1] == 'fence' then redis.call('DEL', KEYS[1], KEYS[2]) end
        return 1
        "#,
    )
});

async fn check(con: &mut Conn, sale: &SaleId, mode: &str) -> Result<bool, RedisError> {
    let keys = SaleKeys::new(sale);
    let stale: i64 = CHECK
        .key(&keys.sale)
        .key(&keys.buyers)
        .arg(mode)
        .invoke_async(con)
        .await?;
    Ok(stale == 1)
}

/// Fences every sale of `unfinished` that is held by a Redis process other
/// than the one it was written to. Returns how many it fenced.
pub async fn fence_if_restarted(redis: &Conn, unfinished: &[SaleId]) -> Result<usize, RedisError> {
    let mut con = redis.clone();
    let mut stale = Vec::new();
    for sale in unfinished {
        if check(&mut con, sale, "look").await? {
            stale.push(sale);
        }
    }
    if stale.is_empty() {
        return Ok(0);
    }
    // The marker first: a gateway that finds a sale missing asks it
    // whether Redis is warm. With the sale gone and the marker still
    // there, a buyer would be told `sale_not_found` (404) instead of
    // "being restored, retry" (503).
    let _: i64 = con.del(WARM_MARKER).await?;
    seckill_common::fault::inside_fence().await;
    let mut fenced = 0;
    for sale in stale {
        if check(&mut con, sale, "fence").await? {
            fenced += 1;
        }
    }
    tracing::warn!(
        sales = fenced,
        "sales held by a Redis process other than the one they were written to \
         (restart or failover) are fenced until they are warmed again from PostgreSQL"
    );
    Ok(fenced)
}
