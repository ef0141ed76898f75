//! How events travel between the services: Kafka, or Redis Streams.
//!
//! One abstraction, two implementations, chosen by `SECKILL_TRANSPORT`:
//! * [`Publisher`] sends an event to a topic (and a dead letter);
//! * [`Source`] hands the consumer loop ([`crate::consumer`]) batches of
//!   deliveries and takes them back once handled;
//! * [`CatchUp`] answers "has this group applied everything produced until
//!   now?", which the re-warm and the saga sweep ask before they act.
//!
//! The handlers never learn which one they run on. What differs is where
//! `OrderRequested` is written: with Kafka the gateway produces it after the
//! purchase script; with Streams the purchase script appends it itself
//! ([`streams::order_stream`]), so reserving and enqueueing are one atomic
//! step. README, "Transports", says when to choose which.
use std::time::Duration;

mod catch_up;
mod delivery;
mod kafka_source;
mod publisher;
mod settings;
pub mod streams;
mod streams_source;

pub use catch_up::CatchUp;
pub use delivery::{Delivery, Position};
pub use kafka_source::KafkaSource;
pub use publisher::{DeadLetter, PublishError, Publisher};
pub use settings::{Bus, StreamsSettings, Transport};
pub use streams::{StreamNames, StreamsPublisher};
pub use streams_source::{Backlog, StreamsSource};

/// Where a consumer's deliveries come from.
pub enum Source {
    Kafka(KafkaSource),
    Streams(Box<StreamsSource>),
}

impl Source {
    pub async fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
        shutdown: &crate::shutdown::Shutdown,
    ) -> Option<Vec<Delivery>> {
        match self {
            Source::Kafka(s) => s.next_batch(max, linger, shutdown).await,
            Source::Streams(s) => s.next_batch(max, linger, shutdown).await,
        }
    }

    /// Never delivered again: handled, or dead-lettered.
    pub async fn ack(&mut self, done: &[Delivery]) {
        match self {
            Source::Kafka(s) => s.ack(done),
            Source::Streams(s) => s.ack(done).await,
        }
    }

    pub async fn close(&mut self) {
        match self {
            Source::Kafka(s) => s.close(),
            Source::Streams(s) => s.close().await,
        }
    }
}
