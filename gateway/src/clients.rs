//! Typed clients of the two internal APIs. Each knows its base URL, which of
//! its calls are retried, and which of the service's own error codes the
//! client may see; handlers call methods, not URLs.
use std::sync::Arc;

use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use seckill_common::domain::{OrderId, SaleId, UserId};

use crate::api::{ConsumerView, OrderList, OrderView, ReconcileReport, SaleRecord};
use crate::breaker::Breaker;
use crate::upstream::{Target, Upstream, UpstreamError};

/// inventory-service: sales and reconciliation.
#[derive(Clone)]
pub struct InventoryClient {
    upstream: Upstream,
    target: Target,
}

impl InventoryClient {
    pub fn new(upstream: Upstream, base: &str, breaker: Arc<Breaker>) -> Self {
        let target = Target {
            name: "inventory-service",
            base: base.trim_end_matches('/').to_owned(),
            passes: &[
                "sale_not_found",
                "sale_conflict",
                "invalid_sale",
                "reconcile_busy",
            ],
            breaker,
        };
        Self { upstream, target }
    }

    /// Retried: inventory-service upserts by the sale id the gateway chose.
    pub async fn create_sale<B: Serialize>(
        &self,
        sale: &B,
    ) -> Result<Option<Value>, UpstreamError> {
        let url = self.target.url("/internal/sales");
        self.upstream
            .call(&self.target, Method::POST, &url, Some(sale))
            .await
    }

    /// `None` when there is no such sale.
    pub async fn sale(&self, id: &SaleId) -> Result<Option<SaleRecord>, UpstreamError> {
        let url = self.target.url(&format!("/internal/sales/{id}"));
        self.upstream
            .call::<(), _>(&self.target, Method::GET, &url, None)
            .await
    }

    /// Every sale that ends after `since`, by start time.
    pub async fn sales(
        &self,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<SaleRecord>, UpstreamError> {
        let url = self.target.url(&format!(
            "/internal/sales?ends_after_ms={}",
            since.timestamp_millis()
        ));
        let listed: Option<Vec<SaleRecord>> = self
            .upstream
            .call::<(), _>(&self.target, Method::GET, &url, None)
            .await?;
        Ok(listed.unwrap_or_default())
    }

    /// Not retried: a run is cheap to ask for again, and the operator decides.
    pub async fn reconcile(&self) -> Result<Option<ReconcileReport>, UpstreamError> {
        let url = self.target.url("/internal/reconcile");
        self.upstream
            .call_once::<(), _>(&self.target, Method::POST, &url, None)
            .await
    }
}

/// order-service: orders and their lifecycle.
#[derive(Clone)]
pub struct OrderClient {
    upstream: Upstream,
    target: Target,
}

impl OrderClient {
    pub fn new(upstream: Upstream, base: &str, breaker: Arc<Breaker>) -> Self {
        let target = Target {
            name: "order-service",
            base: base.trim_end_matches('/').to_owned(),
            passes: &[
                "order_not_found",
                "order_not_payable",
                "order_not_cancellable",
                "payment_declined",
                "invalid_idempotency_key",
            ],
            breaker,
        };
        Self { upstream, target }
    }

    /// `None` when order-service has not persisted it (yet).
    pub async fn order(&self, id: &OrderId) -> Result<Option<OrderView>, UpstreamError> {
        let url = self.target.url(&format!("/internal/orders/{id}"));
        self.upstream
            .call::<(), _>(&self.target, Method::GET, &url, None)
            .await
    }

    /// The user's orders, `{"orders": [...]}`.
    pub async fn orders_of(&self, user: &UserId) -> Result<Option<OrderList>, UpstreamError> {
        let mut url = reqwest::Url::parse(&self.target.url("/internal/orders"))
            .map_err(|e| UpstreamError::BadUrl(e.to_string()))?;
        url.query_pairs_mut().append_pair("user_id", user.as_str());
        self.upstream
            .call::<(), _>(&self.target, Method::GET, url.as_str(), None)
            .await
    }

    /// Once: a repeat would be safe (same key), but stacking provider
    /// timeouts here would only outlast the client's patience.
    pub async fn pay(
        &self,
        id: &OrderId,
        body: &Value,
    ) -> Result<Option<OrderView>, UpstreamError> {
        let url = self.target.url(&format!("/internal/orders/{id}/pay"));
        self.upstream
            .call_once(&self.target, Method::POST, &url, Some(body))
            .await
    }

    /// Idempotent, so retried like a read.
    pub async fn cancel(
        &self,
        id: &OrderId,
        body: &Value,
    ) -> Result<Option<OrderView>, UpstreamError> {
        let url = self.target.url(&format!("/internal/orders/{id}/cancel"));
        self.upstream
            .call(&self.target, Method::POST, &url, Some(body))
            .await
    }
}

/// Both internal services answer `GET /internal/consumer` (see
/// `seckill_common::metrics::ConsumerStats`).
async fn consumer_of(
    upstream: &Upstream,
    target: &Target,
) -> Result<Option<ConsumerView>, UpstreamError> {
    let url = target.url("/internal/consumer");
    upstream
        .call::<(), _>(target, Method::GET, &url, None)
        .await
}

impl InventoryClient {
    pub async fn consumer(&self) -> Result<Option<ConsumerView>, UpstreamError> {
        consumer_of(&self.upstream, &self.target).await
    }
}

impl OrderClient {
    pub async fn consumer(&self) -> Result<Option<ConsumerView>, UpstreamError> {
        consumer_of(&self.upstream, &self.target).await
    }

    /// The sale's orders by state.
    pub async fn order_counts(
        &self,
        sale: &SaleId,
    ) -> Result<Option<std::collections::BTreeMap<String, i64>>, UpstreamError> {
        let url = self
            .target
            .url(&format!("/internal/sales/{sale}/order-counts"));
        self.upstream
            .call::<(), _>(&self.target, Method::GET, &url, None)
            .await
    }
}
