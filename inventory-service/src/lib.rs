//! inventory-service: the authoritative stock.
//!
//! Consumes `OrderRequested`, applies each order to PostgreSQL (conditional
//! decrement, idempotent per order id), announces `StockReserved` or
//! `StockRejected`, and returns rejected reservations to Redis. Also owns
//! sale creation, which writes the sale to PostgreSQL and warms it into Redis.
//!
//! The order lifecycle adds two duties: a second consumer returns the stock
//! of cancelled and expired orders ([`compensation`]), and a periodic job
//! repairs drift between Redis and PostgreSQL ([`reconcile`]); a third
//! drives reservations whose order never appeared to a final state ([`sweep`]).
pub mod compensation;
pub mod configuration;
pub mod consumer;
pub mod persistence;
pub mod reconcile;
pub mod routes;
pub mod sale_streams;
pub mod sales;
pub mod startup;
pub mod stock_gauge;
pub mod sweep;
pub mod warm;

pub use startup::Application;
