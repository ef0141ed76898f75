//! The list of sales a shopper can see: one cache entry per gateway, filled
//! from inventory-service at most once per `read_cache.list_ms`.
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use chrono::{DateTime, Utc};
use moka::future::Cache;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use seckill_common::domain::SaleId;
use seckill_common::http::ApiError;

use super::fill::{FillError, Sources};
use super::metrics::CatalogMetrics;
use crate::api::SaleView;
use crate::configuration::ReadCacheSettings;

/// `GET /api/v1/sales?limit=&offset=`.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[serde(default, deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Sales per page, 1 to 100.
    #[param(minimum = 1, maximum = 100)]
    pub limit: usize,
    /// How many sales to skip.
    #[param(minimum = 0, maximum = 100000)]
    pub offset: usize,
}

impl Default for PageQuery {
    fn default() -> Self {
        Self {
            limit: 20,
            offset: 0,
        }
    }
}

impl PageQuery {
    pub const MAX_LIMIT: usize = 100;
    pub const MAX_OFFSET: usize = 100_000;

    pub fn parse(self) -> Result<Self, ApiError> {
        if !(1..=Self::MAX_LIMIT).contains(&self.limit) || self.offset > Self::MAX_OFFSET {
            return Err(ApiError::bad_request(
                "invalid_query",
                "limit must be 1 to 100 and offset at most 100000",
            ));
        }
        Ok(self)
    }
}

/// One page: upcoming and active sales, then those ended within
/// `read_cache.ended_visible_secs`, by start time.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Page {
    pub sales: Vec<SaleView>,
    /// Visible sales in all.
    pub total: usize,
    /// The `offset` of the next page, if there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
    /// Set when inventory-service is unavailable and the list is the last
    /// good one: how old it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_age_ms: Option<u64>,
}

/// One listed sale: what the list and the warmer need of it.
#[derive(Clone)]
pub struct ListedSale {
    pub id: SaleId,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
}

/// The listed sales, in start order.
#[derive(Clone)]
pub struct Listed {
    pub ids: Vec<ListedSale>,
    fetched: Instant,
    stale: bool,
}

impl Listed {
    pub fn stale_age_ms(&self) -> Option<u64> {
        self.stale.then(|| super::entry::age_ms(self.fetched))
    }
}

pub struct Listing {
    cache: Cache<(), Arc<Listed>>,
    last_good: Mutex<Option<Arc<Listed>>>,
}

impl Listing {
    pub fn new(settings: &ReadCacheSettings) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(1)
                .time_to_live(settings.list)
                .build(),
            last_good: Mutex::new(None),
        }
    }

    /// The list, from this gateway's cache; one fill for concurrent misses.
    pub async fn current(
        &self,
        sources: &Sources,
        settings: &ReadCacheSettings,
        metrics: &CatalogMetrics,
    ) -> Result<Arc<Listed>, ApiError> {
        let fetch = self.fetch(sources, settings, metrics);
        match self.cache.try_get_with((), fetch).await {
            Ok(listed) => Ok(listed),
            Err(error) => {
                let last = self
                    .last_good
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                match last {
                    Some(last) => Ok(Arc::new(Listed {
                        stale: true,
                        ..(*last).clone()
                    })),
                    None => Err(error.to_api()),
                }
            }
        }
    }

    /// Fetches the list now and caches it (the warmer).
    pub async fn refresh(
        &self,
        sources: &Sources,
        settings: &ReadCacheSettings,
        metrics: &CatalogMetrics,
    ) -> Result<Arc<Listed>, ApiError> {
        let listed = self
            .fetch(sources, settings, metrics)
            .await
            .map_err(|e| e.to_api())?;
        self.cache.insert((), listed.clone()).await;
        Ok(listed)
    }

    async fn fetch(
        &self,
        sources: &Sources,
        settings: &ReadCacheSettings,
        metrics: &CatalogMetrics,
    ) -> Result<Arc<Listed>, FillError> {
        let started = Instant::now();
        let result = sources.list(Utc::now() - settings.ended_visible()).await;
        metrics.fill("list", &result, started.elapsed());
        let ids = result?
            .into_iter()
            .filter_map(|r| {
                Some(ListedSale {
                    id: SaleId::parse(&r.sale_id).ok()?,
                    starts_at: r.starts_at,
                    ends_at: r.ends_at,
                })
            })
            .collect();
        let listed = Arc::new(Listed {
            ids,
            fetched: Instant::now(),
            stale: false,
        });
        *self
            .last_good
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(listed.clone());
        Ok(listed)
    }

    /// Whether the last list fetched holds `id`.
    pub fn knows(&self, id: &SaleId) -> bool {
        self.last_good
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|listed| listed.ids.iter().any(|listed| listed.id == *id))
    }

    pub fn forget(&self) {
        self.cache.invalidate_all();
    }
}
