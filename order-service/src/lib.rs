//! order-service: turns inventory decisions into durable orders.
//!
//! It consumes `StockReserved` / `StockRejected`, persists one order per
//! order id (and at most one live order per user and sale), emits
//! `OrderCreated` / `OrderFailed`, and answers order-status lookups for the
//! gateway over HTTP.
pub mod configuration;
pub mod consumer;
pub mod persistence;
pub mod routes;
pub mod startup;

pub use startup::Application;
