//! order-service: turns inventory decisions into durable orders.
//!
//! It consumes `StockReserved` / `StockRejected`, persists one order per
//! order id (and at most one live order per user and sale), emits
//! `OrderCreated` / `OrderFailed`, and answers order-status lookups for the
//! gateway over HTTP.
//!
//! It owns the order lifecycle too: payment through a provider boundary
//! ([`payment`]), cancellation, and expiry of unpaid orders ([`expiry`]), each
//! a compare-and-set whose event leaves through the outbox ([`outbox`]).
pub mod configuration;
pub mod consumer;
pub mod expiry;
pub mod lifecycle;
pub mod outbox;
pub mod payment;
pub mod persistence;
pub mod routes;
pub mod startup;
pub mod view;

pub use startup::Application;
