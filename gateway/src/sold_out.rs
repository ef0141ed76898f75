//! A per-process memory of sold-out sales, so the sold-out stampede after
//! the last unit never reaches Redis.
//!
//! Entries expire after a short TTL instead of living forever: stock can come
//! back (a failed produce, a rejected or expired order), and another gateway
//! may be the one that returned it. The TTL bounds how long a stale "sold out"
//! can be served; a local return clears the entry at once. No poisoning.
use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use actix_web::http::{Method, StatusCode};
use actix_web::web::Bytes;

use seckill_common::domain::SaleId;
use seckill_common::http::ApiError;
use seckill_common::metrics::{HttpMetrics, RouteMetrics};

/// The one answer to a purchase of a sold-out sale, wherever it is decided.
pub fn answer() -> ApiError {
    ApiError::new(StatusCode::GONE, "sold_out", "the sale is sold out")
}

pub struct SoldOutCache {
    ttl: Duration,
    until: RwLock<HashMap<SaleId, Instant>>,
}

impl SoldOutCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            until: RwLock::new(HashMap::new()),
        }
    }

    /// By the id's text, so the front door looks up without allocating.
    pub fn is_sold_out(&self, sale: &str) -> bool {
        let now = Instant::now();
        match self.until.read() {
            Ok(map) => map.get(sale).is_some_and(|until| *until > now),
            Err(_) => false,
        }
    }

    pub fn mark(&self, sale: &SaleId) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut map) = self.until.write() {
            let now = Instant::now();
            // Sales come and go; drop what has expired so the map stays small.
            map.retain(|_, until| *until > now);
            map.insert(sale.clone(), now + self.ttl);
        }
    }

    pub fn clear(&self, sale: &SaleId) {
        if let Ok(mut map) = self.until.write() {
            map.remove(sale);
        }
    }
}

/// The purchase route, as the router and the metrics name it.
pub const PURCHASE_ROUTE: &str = "/api/v1/sales/{sale_id}/orders";

/// The answer, rendered once: the same JSON as `sold_out::answer()`.
pub struct SoldOutAnswer {
    pub body: Bytes,
    pub requests: RouteMetrics,
}

impl SoldOutAnswer {
    pub fn new(http: &HttpMetrics) -> Result<Self, prometheus::Error> {
        let error = answer();
        Ok(Self {
            body: Bytes::from(serde_json::to_vec(&error.body()).unwrap_or_default()),
            requests: http.route(&Method::POST, PURCHASE_ROUTE, error.status.as_u16())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sale() -> SaleId {
        SaleId::parse("s").unwrap()
    }

    #[test]
    fn marks_and_clears() {
        let cache = SoldOutCache::new(Duration::from_secs(60));
        assert!(!cache.is_sold_out(sale().as_str()));
        cache.mark(&sale());
        assert!(cache.is_sold_out(sale().as_str()));
        cache.clear(&sale());
        assert!(!cache.is_sold_out(sale().as_str()));
    }

    #[test]
    fn expires_by_itself() {
        let cache = SoldOutCache::new(Duration::from_millis(1));
        cache.mark(&sale());
        let deadline = Instant::now() + Duration::from_secs(1);
        while cache.is_sold_out(sale().as_str()) {
            assert!(Instant::now() < deadline, "entry never expired");
            std::thread::yield_now();
        }
    }

    #[test]
    fn zero_ttl_disables_the_cache() {
        let cache = SoldOutCache::new(Duration::ZERO);
        cache.mark(&sale());
        assert!(!cache.is_sold_out(sale().as_str()));
    }
}
