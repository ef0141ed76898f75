//! The levels below the read cache: Redis, then inventory-service.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use seckill_common::redis_conn::Conn;

use seckill_common::domain::SaleId;
use seckill_common::http::ApiError;
use seckill_common::redis_conn;
use seckill_common::stock::{self, field, SaleKeys};

use crate::api::{SaleRecord, SaleStatus, SaleView};
use crate::breaker::{Breaker, Open};
use crate::clients::InventoryClient;
use crate::upstream::UpstreamError;

#[derive(Debug, thiserror::Error)]
pub enum FillError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Inventory(#[from] UpstreamError),
    #[error(transparent)]
    Open(#[from] Open),
}

impl FillError {
    /// The answer when there is no last good copy either.
    pub fn to_api(&self) -> ApiError {
        match self {
            FillError::Redis(_) => ApiError::unavailable("stock store unavailable"),
            FillError::Inventory(UpstreamError::Open(open)) | FillError::Open(open) => {
                open.clone().into()
            }
            FillError::Inventory(_) => ApiError::unavailable("sales unavailable"),
        }
    }
}

pub struct Sources {
    pub redis: Conn,
    pub redis_breaker: Arc<Breaker>,
    pub redis_timeout: Duration,
    pub inventory: InventoryClient,
}

impl Sources {
    /// The sale from Redis while it is there (its stock is live), else from
    /// inventory-service. `None`: there is no such sale.
    ///
    /// Redis is also the filter that keeps made-up ids off PostgreSQL: while
    /// its warm marker is set it holds every sale that has not ended
    /// (`seckill_common::stock::WARM_MARKER`), so an id it lacks that is not
    /// `listed` either (the list holds the recently ended ones) is no sale.
    /// Only a Redis that is being restored, or an old ended sale, sends the
    /// read on to inventory-service.
    ///
    /// While Redis fails, inventory-service is not asked: its stock lags the
    /// orders in flight, and a read storm must not move onto PostgreSQL.
    pub async fn read(&self, id: &SaleId, listed: bool) -> Result<Option<SaleView>, FillError> {
        let mut redis = self.redis.clone();
        let (hash, warm) = self
            .redis_breaker
            .call(
                async {
                    let hash: HashMap<String, String> = redis_conn::within(
                        self.redis_timeout,
                        redis.hgetall(SaleKeys::new(id).sale),
                    )
                    .await?;
                    // Asked only when the hash is absent: a second round trip
                    // for made-up ids, none for real ones.
                    let warm = match hash.is_empty() && !listed {
                        true => {
                            redis_conn::within(self.redis_timeout, stock::is_warm(&mut redis))
                                .await?
                        }
                        false => false,
                    };
                    Ok::<_, redis::RedisError>((hash, warm))
                },
                |_| true,
            )
            .await??;
        if let Some(view) = from_redis(id, &hash) {
            return Ok(Some(view));
        }
        if warm {
            return Ok(None);
        }
        let record = self.inventory.sale(id).await?;
        Ok(record.map(|r| r.view(Utc::now())))
    }

    /// Every sale that ends after `since`, from inventory-service.
    pub async fn list(&self, since: DateTime<Utc>) -> Result<Vec<SaleRecord>, FillError> {
        Ok(self.inventory.sales(since).await?)
    }
}

/// The sale's view from its Redis hash; `None` when the hash is absent or
/// lacks a field (written by an older version: inventory-service knows).
fn from_redis(sale: &SaleId, hash: &HashMap<String, String>) -> Option<SaleView> {
    let int = |k: &str| hash.get(k).and_then(|v| v.parse::<i64>().ok());
    let time = |k: &str| int(k).and_then(DateTime::<Utc>::from_timestamp_millis);
    let (starts_at, ends_at) = (time(field::STARTS_AT)?, time(field::ENDS_AT)?);
    Some(SaleView {
        sale_id: sale.to_string(),
        name: hash.get(field::NAME).cloned().unwrap_or_default(),
        stock: int(field::TOTAL)?,
        stock_remaining: int(field::STOCK)?.max(0),
        unit_price_cents: int(field::UNIT_PRICE_CENTS)?,
        starts_at,
        ends_at,
        per_user_limit: int(field::PER_USER_LIMIT)?,
        require_purchase_token: hash.get(field::REQUIRE_PURCHASE_TOKEN).map(String::as_str)
            == Some("1"),
        status: SaleStatus::at(Utc::now(), starts_at, ends_at),
        stale_age_ms: None,
    })
}
