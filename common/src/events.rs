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
    StockReserved(OrderRef),
    StockRejected(Rejection),
    OrderCreated(OrderRef),
    OrderFailed(Rejection),
}

impl Event {
    pub fn type_name(&self) -> &'static str {
        match self {
            Event::OrderRequested(_) => "OrderRequested",
            Event::StockReserved(_) => "StockReserved",
            Event::StockRejected(_) => "StockRejected",
            Event::OrderCreated(_) => "OrderCreated",
            Event::OrderFailed(_) => "OrderFailed",
        }
    }

    pub fn order_id(&self) -> &OrderId {
        match self {
            Event::OrderRequested(e) => &e.order.order_id,
            Event::StockReserved(e) | Event::OrderCreated(e) => &e.order_id,
            Event::StockRejected(e) | Event::OrderFailed(e) => &e.order.order_id,
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    #[serde(flatten)]
    pub order: OrderRef,
    pub reason: String,
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
        let env = Envelope::new(Event::StockReserved(order()));
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
        let c = Envelope::new(Event::StockReserved(o));
        assert_eq!(a.event_id, b.event_id);
        assert_ne!(a.event_id, c.event_id);
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
