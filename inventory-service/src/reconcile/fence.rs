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

/// KEYS: the sale hash, its buyers. ARGV[1]: `look` or `fence`. Returns -1
/// when the sale is missing; 1 when it was written to another Redis process
/// (and, with `fence`, deletes it); 0 otherwise. A sale without a record
/// (written by an older version) is recorded as verified. `INFO` runs inside
/// the script so that it asks the node that holds the sale.
static CHECK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
        if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
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

/// What one look at a sale found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Missing,
    Verified,
    Stale,
}

async fn check(con: &mut Conn, sale: &SaleId, mode: &str) -> Result<Found, RedisError> {
    let keys = SaleKeys::new(sale);
    let found: i64 = CHECK
        .key(&keys.sale)
        .key(&keys.buyers)
        .arg(mode)
        .invoke_async(con)
        .await?;
    Ok(match found {
        -1 => Found::Missing,
        1 => Found::Stale,
        _ => Found::Verified,
    })
}

/// The unfinished sales as one round of checks left them.
#[derive(Debug, Default)]
pub struct Checked {
    /// Sales fenced by this round.
    pub fenced: usize,
    /// Sales not in Redis now: missing before, or fenced.
    pub missing: Vec<SaleId>,
}

/// Looks at every sale of `unfinished` (one script each): which are
/// missing, and which are held by a Redis process other than the one they
/// were written to. Those are fenced.
pub async fn check_all(redis: &Conn, unfinished: &[SaleId]) -> Result<Checked, RedisError> {
    let mut con = redis.clone();
    let mut checked = Checked::default();
    let mut stale = Vec::new();
    for sale in unfinished {
        match check(&mut con, sale, "look").await? {
            Found::Missing => checked.missing.push(sale.clone()),
            Found::Stale => stale.push(sale),
            Found::Verified => {}
        }
    }
    if stale.is_empty() {
        return Ok(checked);
    }
    // The marker first: a gateway that finds a sale missing asks it
    // whether Redis is warm. With the sale gone and the marker still
    // there, a buyer would be told `sale_not_found` (404) instead of
    // "being restored, retry" (503).
    let _: i64 = con.del(WARM_MARKER).await?;
    seckill_common::fault::inside_fence().await;
    for sale in stale {
        match check(&mut con, sale, "fence").await? {
            Found::Stale => {
                checked.fenced += 1;
                checked.missing.push(sale.clone());
            }
            Found::Missing => checked.missing.push(sale.clone()),
            Found::Verified => {}
        }
    }
    tracing::warn!(
        sales = checked.fenced,
        "sales held by a Redis process other than the one they were written to \
         (restart or failover) are fenced until they are warmed again from PostgreSQL"
    );
    Ok(checked)
}
