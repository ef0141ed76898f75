//! The read path: what the crowd refreshes before and during a sale.
//!
//! Three levels, each shielding the next:
//! 1. this process's cache (moka): a sale's answer for a short, jittered
//!    while (`read_cache.fresh_ms`), and an unknown id's "no such sale" for
//!    longer (`read_cache.negative_ms`);
//! 2. Redis, where a sale's live stock is (one `HGETALL`);
//! 3. inventory-service and PostgreSQL, only for a sale Redis does not hold.
//!
//! Concurrent misses of one key make one fill; the others wait for it
//! (moka's `try_get_with`), so a cold key under a crowd costs one round
//! trip (breakdown). Expiry is jittered per entry, so keys filled together do
//! not all expire together (avalanche). Made-up ids are remembered as
//! missing, so each reaches PostgreSQL at most once per negative TTL per
//! gateway (penetration); malformed ids never leave the gateway.
//!
//! Invalidation is by TTL, not by broadcast: an entry lives at most
//! `fresh_ms`, so stock, sold-out and the end of a sale reach every gateway
//! within that bound with no channel that could itself fail or lag. Only a
//! new sale read *before* it existed waits out `negative_ms`; sales are
//! created well ahead of their start, and the warmer lists them every
//! `list_ms` and keeps the coming ones refreshed (`warm`).
//!
//! Degradation: every answer is also kept as the *last good* copy
//! (`read_cache.stale_for_ms`). When Redis or inventory-service fails, a
//! read answers that copy, marked with its age; purchases never use it.
mod entry;
mod fill;
mod listing;
mod metrics;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::Method;
use actix_web::web::Bytes;
use chrono::{DateTime, Utc};
use moka::future::Cache;
use seckill_common::redis_conn::Conn;

use seckill_common::domain::SaleId;
use seckill_common::http::ApiError;
use seckill_common::metrics::{HttpMetrics, RouteMetrics};

use crate::api::{SaleStatus, SaleView};
use crate::breaker::Breaker;
use crate::clients::InventoryClient;
use crate::configuration::ReadCacheSettings;

pub use entry::Found;
pub use listing::{Page, PageQuery};
pub use metrics::CatalogMetrics;

use entry::{Jittered, Snapshot};
use fill::FillError;

/// A read the cache answers by itself ([`Catalog::cached`]).
pub enum Cached {
    /// The sale's answer, rendered.
    Sale(Bytes),
    /// No such sale (a negative entry).
    Missing,
}

/// The sale as answered now: its status by the clock, and, for the last
/// good copy served while a level below is down, its age.
fn answer(found: &Found, stale: bool) -> SaleView {
    let mut view = found.view.clone();
    view.status = SaleStatus::at(Utc::now(), view.starts_at, view.ends_at);
    view.stale_age_ms = stale.then(|| entry::age_ms(found.fetched));
    view
}

pub struct Catalog {
    fresh: Cache<SaleId, Snapshot>,
    last_good: Cache<SaleId, Arc<Found>>,
    listing: listing::Listing,
    sources: fill::Sources,
    settings: ReadCacheSettings,
    metrics: CatalogMetrics,
}

impl Catalog {
    pub fn new(
        settings: ReadCacheSettings,
        redis: Conn,
        redis_breaker: Arc<Breaker>,
        redis_timeout: Duration,
        inventory: InventoryClient,
        metrics: CatalogMetrics,
    ) -> Self {
        let fresh = Cache::builder()
            .max_capacity(settings.capacity)
            .expire_after(Jittered)
            .build();
        let last_good = Cache::builder()
            .max_capacity(settings.capacity)
            .time_to_live(settings.stale_for)
            .build();
        Self {
            fresh,
            last_good,
            listing: listing::Listing::new(&settings),
            sources: fill::Sources {
                redis,
                redis_breaker,
                redis_timeout,
                inventory,
            },
            settings,
            metrics,
        }
    }

    /// The sale `id`, through the three levels.
    pub async fn sale(&self, id: &SaleId) -> Result<SaleView, ApiError> {
        // Only the caller whose fill runs sets it; the others waited for it.
        let filled = AtomicBool::new(false);
        let fill = async {
            filled.store(true, Ordering::Relaxed);
            self.fill(id).await
        };
        match self.fresh.try_get_with_by_ref(id, fill).await {
            Ok(snapshot) => {
                let filled = filled.load(Ordering::Relaxed);
                match &snapshot.found {
                    Some(found) => {
                        self.metrics.lookup(if filled { "filled" } else { "hit" });
                        Ok(answer(found, false))
                    }
                    None => {
                        self.metrics.lookup("missing");
                        Err(sale_not_found())
                    }
                }
            }
            Err(error) => match self.last_good.get(id).await {
                Some(found) => {
                    self.metrics.lookup("stale");
                    Ok(answer(&found, true))
                }
                None => {
                    self.metrics.lookup("failed");
                    Err(error.to_api())
                }
            },
        }
    }

    /// What this gateway holds fresh for `id`: the rendered sale (if its
    /// status has not changed since it was filled), or the fact that there
    /// is no such sale. `None`: the read takes the full path. Never waits
    /// for a fill.
    pub async fn cached(&self, id: &str) -> Option<Cached> {
        let snapshot = self.fresh.get(id).await?;
        let Some(found) = snapshot.found.as_ref() else {
            self.metrics.lookup("missing");
            return Some(Cached::Missing);
        };
        let view = &found.view;
        if SaleStatus::at(Utc::now(), view.starts_at, view.ends_at) != view.status {
            return None;
        }
        self.metrics.lookup("hit");
        Some(Cached::Sale(found.body.clone()))
    }

    /// Reads the levels below, and keeps a found sale as the last good copy.
    async fn fill(&self, id: &SaleId) -> Result<Snapshot, FillError> {
        let started = Instant::now();
        let result = self.sources.read(id, self.listing.knows(id)).await;
        self.metrics.fill("sale", &result, started.elapsed());
        match result? {
            Some(view) => {
                let found = Arc::new(Found::new(view));
                self.last_good.insert(id.clone(), found.clone()).await;
                Ok(Snapshot::found(
                    found,
                    self.settings.jittered(self.settings.fresh),
                ))
            }
            None => Ok(Snapshot::missing(
                self.settings.jittered(self.settings.negative),
            )),
        }
    }

    /// One page of the sales a shopper can see, each with its live stock.
    pub async fn page(&self, query: PageQuery) -> Result<Page, ApiError> {
        let listed = self
            .listing
            .current(&self.sources, &self.settings, &self.metrics)
            .await?;
        let now = Utc::now();
        let visible: Vec<&SaleId> = listed
            .ids
            .iter()
            .filter(|s| s.ends_at + self.settings.ended_visible() > now)
            .map(|s| &s.id)
            .collect();
        let total = visible.len();
        let mut sales = Vec::with_capacity(query.limit);
        for id in visible.iter().skip(query.offset).take(query.limit) {
            match self.sale(id).await {
                Ok(view) => sales.push(view),
                // Listed a moment ago but gone now: nothing to show.
                Err(e) if e.status == actix_web::http::StatusCode::NOT_FOUND => {}
                Err(e) => return Err(e),
            }
        }
        let next = query.offset + query.limit;
        Ok(Page {
            sales,
            total,
            next_offset: (next < total).then_some(next),
            stale_age_ms: listed.stale_age_ms(),
        })
    }

    /// Fetches the list now and fills every sale that is active or upcoming:
    /// before the gateway serves. From then on `keep_warm` refreshes those
    /// that are active or start within `read_cache.warm_ahead_secs` every
    /// half `fresh_ms`: a warm sale's entry is replaced before it expires,
    /// so the crowd at its start never meets a miss. The list itself is
    /// fetched at most once per `list_ms`.
    pub async fn warm(&self) -> Result<usize, ApiError> {
        let listed = self
            .listing
            .refresh(&self.sources, &self.settings, &self.metrics)
            .await?;
        Ok(self
            .refresh_warm(&listed.ids, DateTime::<Utc>::MAX_UTC)
            .await)
    }

    async fn refresh_warm(&self, listed: &[listing::ListedSale], horizon: DateTime<Utc>) -> usize {
        let now = Utc::now();
        let mut warmed = 0;
        for sale in listed
            .iter()
            .filter(|s| s.ends_at > now && s.starts_at < horizon)
        {
            // A failed refresh leaves the entry to expire and fill on demand.
            if let Ok(snapshot) = self.fill(&sale.id).await {
                self.fresh.insert(sale.id.clone(), snapshot).await;
                warmed += 1;
            }
        }
        warmed
    }

    /// Forgets what this gateway knows of `id`: after it created that sale,
    /// so its own "no such sale" does not outlive the creation.
    pub async fn forget(&self, id: &SaleId) {
        self.fresh.invalidate(id).await;
        self.listing.forget();
    }

    /// Warms every half `read_cache.fresh_ms` until shutdown. A failed round is
    /// logged and tried again next time; reads meanwhile fill on demand.
    pub async fn keep_warm(self: Arc<Self>, shutdown: seckill_common::shutdown::Shutdown) {
        let mut tick = tokio::time::interval(self.settings.fresh / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tick.tick() => {
                    match self.listing.current(&self.sources, &self.settings, &self.metrics).await {
                        Ok(listed) => {
                            let horizon = Utc::now() + self.settings.warm_ahead();
                            self.refresh_warm(&listed.ids, horizon).await;
                        }
                        Err(e) => tracing::warn!(error = %e, "warming the read cache failed; retrying next round"),
                    }
                }
            }
        }
    }
}

/// The read route, as the router and the metrics name it.
pub const SALE_ROUTE: &str = "/api/v1/sales/{sale_id}";

/// The request metrics of the reads the front door answers from the cache
/// (found, and no such sale), and the 404's body, rendered once.
pub struct CachedReads {
    pub found: RouteMetrics,
    pub missing: RouteMetrics,
    pub not_found: Bytes,
}

impl CachedReads {
    pub fn new(http: &HttpMetrics) -> Result<Self, prometheus::Error> {
        let not_found = sale_not_found();
        Ok(Self {
            found: http.route(&Method::GET, SALE_ROUTE, 200)?,
            missing: http.route(&Method::GET, SALE_ROUTE, not_found.status.as_u16())?,
            not_found: Bytes::from(serde_json::to_vec(&not_found.body()).unwrap_or_default()),
        })
    }
}

pub fn sale_not_found() -> ApiError {
    ApiError::not_found("sale_not_found", "no such sale")
}
