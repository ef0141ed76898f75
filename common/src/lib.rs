//! What two or more seckill services share, and nothing else.
//!
//! * [`domain`]: identifiers and quantities that can only hold valid values.
//! * [`sale_terms`]: a new sale's terms, validated once for the gateway and inventory-service.
//! * [`events`]: the one versioned envelope every Kafka message uses.
//! * [`kafka`]: the traced, idempotent producer, consumer construction and topic setup.
//! * [`transport`]: Kafka or Redis Streams, behind one publisher, source and catch-up check.
//! * [`consumer`]: the at-least-once batch loop both consuming services run.
//! * [`db`]: the PostgreSQL pool both table-owning services use.
//! * [`stock`]: the Redis layout of a sale and the script that returns a reservation.
//! * [`settings`]: layered, validated configuration (defaults, file, environment).
//! * [`telemetry`]: JSON logs and OpenTelemetry traces, set up once per process.
//! * [`sampling`]: the spans of a dropped trace skip OpenTelemetry.
//! * [`http`]: the JSON error shape and the health endpoints.
//! * [`internal_auth`]: the shared secret that guards the services' internal routes.
//! * [`request_span`]: the root span of each HTTP request, and which answers are logged.
//! * [`metrics`]: the registry, `/metrics`, and the request, consumer and database families.
//! * [`shutdown`]: the signal every task watches to stop intake and drain.
//! * [`tasks`]: every task a service spawns, so that shutdown waits for them all.
//! * [`service`]: the start-up, HTTP server, readiness and exit every service shares.
//! * [`retry`]: the backoff policies for calls across a process boundary.
pub mod consumer;
pub mod db;
pub mod domain;
pub mod events;
pub mod fault;
pub mod http;
pub mod internal_auth;
pub mod kafka;
pub mod metrics;
pub mod migration;
pub mod redis_conn;
pub mod request_span;
pub mod retry;
pub mod sale_terms;
pub mod sampling;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod stock;
pub mod tasks;
pub mod telemetry;
pub mod transport;
