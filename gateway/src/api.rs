//! The public API's answers, as types: the handlers build them, and the
//! OpenAPI document (`routes::openapi`) is generated from them, so the two
//! cannot drift. Answers passed on from inventory-service and order-service
//! are decoded into them first: a backing service that changed its shape
//! fails loudly here, not in a client.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a sale is in its life, by the server's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SaleStatus {
    Upcoming,
    Active,
    Ended,
}

impl SaleStatus {
    pub fn at(now: DateTime<Utc>, starts_at: DateTime<Utc>, ends_at: DateTime<Utc>) -> Self {
        if now < starts_at {
            Self::Upcoming
        } else if now >= ends_at {
            Self::Ended
        } else {
            Self::Active
        }
    }
}

/// A sale as shoppers see it. `stock_remaining` is never negative.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SaleView {
    pub sale_id: String,
    pub name: String,
    pub stock: i64,
    pub stock_remaining: i64,
    /// The price of one unit, in cents.
    pub unit_price_cents: i64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub per_user_limit: i64,
    pub require_purchase_token: bool,
    pub status: SaleStatus,
    /// Present only when Redis or inventory-service is unavailable and this
    /// is the gateway's last good copy: how old it is. Its stock may be
    /// behind; a purchase still checks the real one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_age_ms: Option<u64>,
}

/// A sale as inventory-service stores it: the answer to its creation.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SaleRecord {
    pub sale_id: String,
    pub name: String,
    pub stock: i64,
    pub stock_remaining: i64,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub per_user_limit: i64,
    pub require_purchase_token: bool,
    pub payment_window_secs: i64,
    pub unit_price_cents: i64,
}

impl SaleRecord {
    pub fn view(self, now: DateTime<Utc>) -> SaleView {
        SaleView {
            status: SaleStatus::at(now, self.starts_at, self.ends_at),
            sale_id: self.sale_id,
            name: self.name,
            stock: self.stock,
            stock_remaining: self.stock_remaining.max(0),
            unit_price_cents: self.unit_price_cents,
            starts_at: self.starts_at,
            ends_at: self.ends_at,
            per_user_limit: self.per_user_limit,
            require_purchase_token: self.require_purchase_token,
            stale_age_ms: None,
        }
    }
}

/// Where an order is: `queued` until order-service has it, then its
/// lifecycle; `failed` when it was refused or never enqueued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderState {
    Queued,
    Created,
    Paid,
    Cancelled,
    Expired,
    Failed,
}

/// An order. A `queued` order has only its ids and status; the rest comes
/// once order-service has persisted it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderView {
    pub order_id: String,
    pub sale_id: String,
    pub user_id: String,
    pub status: OrderState,
    /// Why it failed (`failed` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    /// The end of the payment window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_cents: Option<i64>,
    /// The payment provider's reference, once paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<DateTime<Utc>>,
}

/// The user's orders, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OrderList {
    pub orders: Vec<OrderView>,
}

/// `202`: the unit is reserved and the order is on its way.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Accepted {
    pub order_id: String,
    pub status: OrderState,
}

/// A purchase token, to send as the `header` named here.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PurchaseToken {
    pub sale_id: String,
    pub purchase_token: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub header: String,
}

/// What reconciliation found and repaired (README, "Reconciliation").
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(value_type = Object)]
pub struct ReconcileReport(pub serde_json::Value);

/// The server's clock, for countdowns that do not trust the browser's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerTime {
    /// Milliseconds since the Unix epoch.
    pub now_ms: i64,
}

/// A live sale as the operators' console shows it (`GET
/// /api/v1/admin/sales/{id}/live`). `gateway` holds the counters of the
/// gateway that answered; the console turns their differences into rates.
/// The other parts are `null` when their service did not answer in time.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LiveSale {
    /// When this snapshot was taken, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub sale: SaleView,
    pub gateway: GatewayCounts,
    /// The sale's orders by state, from order-service.
    pub orders_by_state: Option<std::collections::BTreeMap<String, i64>>,
    pub inventory_consumer: Option<ConsumerView>,
    pub order_consumer: Option<ConsumerView>,
}

/// One gateway's purchase answers since it started, all sales together.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct GatewayCounts {
    /// The answering gateway (its pod name in Kubernetes).
    pub instance: String,
    /// 202s.
    pub accepted: u64,
    /// 410 `sold_out`.
    pub sold_out: u64,
    /// Every other answer to a purchase (rate limited, duplicate, ...).
    pub rejected: u64,
    pub latency: LatencyHistogram,
}

/// The purchases' latency histogram: cumulative counts by upper bound.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct LatencyHistogram {
    pub buckets: Vec<LatencyBucket>,
    /// Every purchase answered, the slowest included.
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LatencyBucket {
    pub le_ms: f64,
    pub count: u64,
}

/// A consumer process's backlog and dead letters (its `/internal/consumer`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsumerView {
    pub lag: i64,
    pub pending: i64,
    pub processed: u64,
    pub dead_lettered: u64,
}
