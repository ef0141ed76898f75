//! The one event envelope every Kafka message carries.
//!
//! JSON, versioned, self-describing. The trace context does not live here:
//! it travels in the Kafka headers (W3C `traceparent`/`tracestate`), where
//! tooling expects it.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{OrderId, Quantity, SaleId, UserId};

/// Bumped on a breaking change of any payload; consumers reject versions they do not know.
pub const SCHEMA_VERSION: u16 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub event_id: Uuid,
    pub version: u16,
    pub occurred_at: DateTime<Utc>,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload")]
pub enum Event {
    OrderRequested(OrderRequested),
    StockReserved(Reserved),
    StockRejected(Rejection),
    OrderCreated(OrderRef),
    OrderFailed(Rejection),
    /// The buyer paid; the order is final.
    OrderPaid(Paid),
    /// The buyer cancelled before paying; the stock goes back on sale.
    OrderCancelled(OrderRef),
    /// Nobody paid within the sale's payment window; the stock goes back on sale.
    OrderExpired(OrderRef),
}

impl Event {
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::OrderRequested(_) => "OrderRequested",
            Event::StockReserved(_) => "StockReserved",
            Event::StockRejected(_) => "StockRejected",
            Event::OrderCreated(_) => "OrderCreated",
            Event::OrderFailed(_) => "OrderFailed",
            Event::OrderPaid(_) => "OrderPaid",
            Event::OrderCancelled(_) => "OrderCancelled",
            Event::OrderExpired(_) => "OrderExpired",
        }
    }

    pub fn order_id(&self) -> &OrderId {
        match self {
            Event::OrderRequested(e) => &e.order.order_id,
            Event::StockReserved(e) => &e.order.order_id,
            Event::OrderCreated(e) | Event::OrderCancelled(e) | Event::OrderExpired(e) => {
                &e.order_id
            }
            Event::StockRejected(e) | Event::OrderFailed(e) => &e.order.order_id,
            Event::OrderPaid(e) => &e.order.order_id,
        }
    }
}

/// What every event about one order says about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRef {
    pub order_id: OrderId,
    pub sale_id: SaleId,
    pub user_id: UserId,
    pub quantity: Quantity,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderRequested {
    #[serde(flatten)]
    pub order: OrderRef,
    pub requested_at: DateTime<Utc>,
}

/// The stock is held for this order, on the sale's terms at that moment.
/// The terms were added after the first release: events without them read
/// as the defaults (a 15-minute window, free of charge).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserved {
    #[serde(flatten)]
    pub order: OrderRef,
    /// How long the buyer has to pay once the order exists.
    #[serde(default = "default_payment_window_secs")]
    pub payment_window_secs: u32,
    /// Price of one unit, in the smallest currency unit.
    #[serde(default)]
    pub unit_price_cents: i64,
}

/// Fifteen minutes, the usual hold of a flash-sale order.
pub const DEFAULT_PAYMENT_WINDOW_SECS: u32 = 900;

fn default_payment_window_secs() -> u32 {
    DEFAULT_PAYMENT_WINDOW_SECS
}

impl Reserved {
    /// A reservation on the default terms.
    pub fn new(order: OrderRef) -> Self {
        Self {
            order,
            payment_window_secs: DEFAULT_PAYMENT_WINDOW_SECS,
            unit_price_cents: 0,
        }
    }
}

/// A successful payment, as the payment provider identified it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paid {
    #[serde(flatten)]
    pub order: OrderRef,
    pub payment_ref: String,
    pub amount_cents: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    #[serde(flatten)]
    pub order: OrderRef,
    pub reason: RejectReason,
}

/// Why an order was refused: in events, and in both databases' `reason`
/// columns, as its snake_case name. A name this version does not know (sent
/// by a newer producer) reads as `Rejected` instead of failing the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The sale is not in inventory-service's database.
    SaleNotFound,
    /// Redis let the order through, but the authoritative stock cannot cover it.
    InsufficientStock,
    /// The user already holds a live order in this sale under another order id.
    DuplicateBuyer,
    /// Refused, for a reason not named above.
    #[serde(other)]
    Rejected,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SaleNotFound => "sale_not_found",
            Self::InsufficientStock => "insufficient_stock",
            Self::DuplicateBuyer => "duplicate_buyer",
            Self::Rejected => "rejected",
        }
    }

    /// From a stored `reason` column.
    pub fn from_stored(stored: &str) -> Self {
        [
            Self::SaleNotFound,
            Self::InsufficientStock,
            Self::DuplicateBuyer,
        ]
        .into_iter()
        .find(|r| r.as_str() == stored)
        .unwrap_or(Self::Rejected)
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Envelope {
    /// Wraps an event. The event id is derived from the order and the event
    /// type, so re-emitting after a redelivery produces the *same* event id
    /// and downstream deduplication stays trivial.
    pub fn new(event: Event) -> Self {
        let name = format!("{}/{}", event.type_name(), event.order_id());
        Self {
            event_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, name.as_bytes()),
            version: SCHEMA_VERSION,
            occurred_at: Utc::now(),
            event,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Serialising these plain structs cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let envelope: Envelope = serde_json::from_slice(bytes)?;
        if envelope.version != SCHEMA_VERSION {
            return Err(EnvelopeError::UnknownVersion(envelope.version));
        }
        Ok(envelope)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("malformed event: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unsupported event version {0}")]
    UnknownVersion(u16),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> OrderRef {
        let sale = SaleId::parse("s1").unwrap();
        OrderRef {
            order_id: OrderId::new(&sale),
            sale_id: sale,
            user_id: UserId::parse("u1").unwrap(),
            quantity: Quantity::ONE,
        }
    }

    #[test]
    fn envelope_round_trips_with_type_and_payload() {
        let env = Envelope::new(Event::StockReserved(Reserved::new(order())));
        let json: serde_json::Value = serde_json::from_slice(&env.to_json()).unwrap();
        assert_eq!(json["type"], "StockReserved");
        assert_eq!(json["version"], 1);
        assert!(json["payload"]["order_id"].is_string());
        assert_eq!(Envelope::from_json(&env.to_json()).unwrap(), env);
    }

    #[test]
    fn same_event_for_same_order_has_same_id() {
        let o = order();
        let a = Envelope::new(Event::OrderCreated(o.clone()));
        let b = Envelope::new(Event::OrderCreated(o.clone()));
        let c = Envelope::new(Event::StockReserved(Reserved::new(o)));
        assert_eq!(a.event_id, b.event_id);
        assert_ne!(a.event_id, c.event_id);
    }

    #[test]
    fn reserved_without_terms_reads_as_the_defaults() {
        let env = Envelope::new(Event::StockReserved(Reserved::new(order())));
        let mut json: serde_json::Value = serde_json::from_slice(&env.to_json()).unwrap();
        let payload = json["payload"].as_object_mut().unwrap();
        payload.remove("payment_window_secs");
        payload.remove("unit_price_cents");
        let back = Envelope::from_json(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(back, env);
    }

    #[test]
    fn lifecycle_events_name_their_order() {
        let o = order();
        let paid = Event::OrderPaid(Paid {
            order: o.clone(),
            payment_ref: "pay_1".into(),
            amount_cents: 100,
        });
        for event in [
            paid,
            Event::OrderCancelled(o.clone()),
            Event::OrderExpired(o.clone()),
        ] {
            assert_eq!(event.order_id(), &o.order_id);
            let env = Envelope::new(event);
            assert_eq!(Envelope::from_json(&env.to_json()).unwrap(), env);
        }
    }

    #[test]
    fn rejects_garbage_and_unknown_versions() {
        assert!(Envelope::from_json(b"{").is_err());
        assert!(Envelope::from_json(br#"{"type":"Nope","payload":{}}"#).is_err());
        let mut env = serde_json::to_value(Envelope::new(Event::OrderCreated(order()))).unwrap();
        env["version"] = 99.into();
        let bytes = serde_json::to_vec(&env).unwrap();
        assert!(matches!(
            Envelope::from_json(&bytes),
            Err(EnvelopeError::UnknownVersion(99))
        ));
    }
}
