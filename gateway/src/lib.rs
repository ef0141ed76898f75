//! The gateway: the one public endpoint of a flash sale.
//!
//! A purchase is admitted (rate limits, in-flight bound), authenticated (JWT),
//! decided in Redis by one Lua script ([`purchase`]), and enqueued to Kafka
//! before the client hears 202. Everything after that is asynchronous. Once
//! a sale is known to be sold out, [`front_door`] answers its purchases
//! before any of that runs, and so are the storefront's and the console's
//! files ([`storefront`]).
pub mod api;
pub mod auth;
pub mod breaker;
pub mod catalog;
pub mod client_ip;
pub mod clients;
pub mod configuration;
pub mod enqueue;
pub mod fault;
pub mod front_door;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod purchase;
pub mod purchase_token;
pub mod routes;
pub mod sold_out;
pub mod startup;
pub mod state;
pub mod storefront;
pub mod upstream;
pub mod worker_redis;

pub use configuration::env_var_names;
