//! The gateway: the one public endpoint of a flash sale.
//!
//! A purchase is admitted (rate limits, in-flight bound), authenticated (JWT),
//! decided in Redis by one Lua script ([`purchase`]), and enqueued to Kafka
//! before the client hears 202. Everything after that is asynchronous.
pub mod auth;
pub mod configuration;
pub mod fault;
pub mod limits;
pub mod metrics;
pub mod purchase;
pub mod purchase_token;
pub mod routes;
pub mod sold_out;
pub mod startup;
pub mod upstream;

pub use configuration::env_var_names;
