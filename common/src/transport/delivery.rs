//! One message as a transport delivers it, before it is decoded.
use std::collections::HashMap;
use std::fmt;

/// Where a delivery sits in its transport: what acknowledging it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Position {
    Kafka {
        partition: i32,
        offset: i64,
    },
    /// A Redis stream's key and the entry's id.
    Stream {
        key: String,
        id: String,
    },
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Kafka { partition, offset } => write!(f, "{partition}@{offset}"),
            Position::Stream { key, id } => write!(f, "{key}/{id}"),
        }
    }
}

/// A raw message: the consumer loop decodes it, or dead-letters it as it is.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The logical topic (one per event stream, whatever the transport's
    /// layout): metrics and dead letters are labelled by it.
    pub topic: String,
    pub position: Position,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// W3C trace context (`traceparent`, `tracestate`) as the producer wrote it.
    pub trace: HashMap<String, String>,
    /// Set when the transport already knows this delivery must not reach a
    /// handler again (delivered too often): the loop dead-letters it.
    pub poison: Option<String>,
}

impl Delivery {
    /// The payload, or a reason to dead-letter the delivery.
    pub fn payload(&self) -> Result<&[u8], String> {
        self.payload
            .as_deref()
            .ok_or_else(|| "message has no payload".to_owned())
    }
}
