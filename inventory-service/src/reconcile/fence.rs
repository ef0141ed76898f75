//! A Redis that came back with *stale* data: AOF with `appendfsync everysec`
//! lost its last second, or a failover promoted a replica that lagged. The
//! sale keys exist, so nothing looks missing, yet the units sold in the lost
//! writes would be sold a second time, and buyers who hold an order could
//! buy again.
//!
//! Every Redis process has its own `run_id` (a restart or a failover
//! changes it). inventory-service records the `run_id` it has verified in
//! Redis itself (`seckill:redis-run-id`), so the record is as old as the
//! data it came back with and survives inventory-service restarts. When the
//! two differ, every unfinished sale is *fenced*: the warm marker, then
//! the sales' keys are deleted, so the gateways sell nothing of it (503, retry) until
//! the guarded re-warm (`Reconciler::rewarm_missing`: the delay, then the
//! reservation consumer caught up) writes it again from PostgreSQL, which
//! by then has applied every order the lost writes had accepted.
//!
//! The check runs every `reconcile.rewarm_check`: purchases that reach a
//! stale Redis before it notices can still resell a lost unit. With
//! `appendfsync always` nothing is lost and the fence only costs the re-warm
//! delay.
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, RedisError};

use seckill_common::domain::SaleId;
use seckill_common::stock::{SaleKeys, WARM_MARKER};

/// The `run_id` of the Redis process whose data was last verified.
pub const RUN_ID_KEY: &str = "seckill:redis-run-id";

/// Fences every sale of `unfinished` if Redis is not the process last
/// verified. Returns whether it fenced.
pub async fn fence_if_restarted(
    redis: &ConnectionManager,
    unfinished: &[SaleId],
) -> Result<bool, RedisError> {
    let mut con = redis.clone();
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut con)
        .await?;
    let Some(current) = run_id(&info) else {
        return Ok(false); // Not a Redis that reports one: nothing to compare.
    };
    let verified: Option<String> = con.get(RUN_ID_KEY).await?;
    if verified.as_deref() == Some(current) {
        return Ok(false);
    }
    // No record: an empty Redis (its sales are missing and re-warmed anyway)
    // or the first start of this version; nothing to fence.
    let fence = verified.is_some();
    if fence {
        // The marker first: a gateway that finds a sale missing asks it
        // whether Redis is warm. With the sales gone and the marker still
        // there, a buyer would be told `sale_not_found` (404) instead of
        // "being restored, retry" (503).
        let _: i64 = con.del(WARM_MARKER).await?;
        seckill_common::fault::inside_fence().await;
        for sale in unfinished {
            let keys = SaleKeys::new(sale);
            let _: i64 = con.del(&[keys.sale, keys.buyers]).await?;
        }
        tracing::warn!(
            previous = verified.as_deref().unwrap_or(""),
            current,
            sales = unfinished.len(),
            "Redis is not the process whose data was verified (restart or failover): \
             its sales are fenced until they are warmed again from PostgreSQL"
        );
    }
    let _: () = con.set(RUN_ID_KEY, current).await?;
    Ok(fence)
}

/// The `run_id:` line of `INFO server`.
fn run_id(info: &str) -> Option<&str> {
    info.lines()
        .find_map(|line| line.strip_prefix("run_id:"))
        .map(str::trim)
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_run_id_line() {
        let info = "# Server\r\nredis_version:7.0.15\r\nrun_id:3f2a9c\r\ntcp_port:6379\r\n";
        assert_eq!(super::run_id(info), Some("3f2a9c"));
        assert_eq!(super::run_id("# Server\r\n"), None);
    }
}
