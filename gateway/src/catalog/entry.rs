//! What the read cache holds, and when each entry expires.
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use moka::Expiry;

use seckill_common::domain::SaleId;

use crate::api::SaleView;

/// A sale as a level below answered it, and when.
pub struct Found {
    pub view: SaleView,
    /// `view` as JSON, rendered once per fill: the front door answers a
    /// crowd's reads with it (`crate::front_door`).
    pub body: Bytes,
    pub fetched: Instant,
}

impl Found {
    pub fn new(view: SaleView) -> Self {
        Self {
            body: Bytes::from(serde_json::to_vec(&view).unwrap_or_default()),
            view,
            fetched: Instant::now(),
        }
    }
}

/// How old something fetched at `fetched` is, in milliseconds: the
/// `stale_age_ms` of an answer.
pub fn age_ms(fetched: Instant) -> u64 {
    u64::try_from(fetched.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One cache entry: the sale, or the fact that there is none. Each carries
/// its own lifetime, drawn with jitter when it was filled.
#[derive(Clone)]
pub struct Snapshot {
    pub found: Option<Arc<Found>>,
    ttl: Duration,
}

impl Snapshot {
    pub fn found(found: Arc<Found>, ttl: Duration) -> Self {
        Self {
            found: Some(found),
            ttl,
        }
    }

    pub fn missing(ttl: Duration) -> Self {
        Self { found: None, ttl }
    }
}

/// Expires each entry after its own jittered lifetime.
pub struct Jittered;

impl Expiry<SaleId, Snapshot> for Jittered {
    fn expire_after_create(&self, _: &SaleId, value: &Snapshot, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _: &SaleId,
        value: &Snapshot,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}
