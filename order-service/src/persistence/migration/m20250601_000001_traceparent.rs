//! Trace context kept beside work that is published later by another task:
//! the outbox row carries the context of the transition that wrote it, and
//! the order row carries the purchase's, so that `OrderExpired` (written by
//! the expiry worker, not by a request) continues the purchase's trace.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
ALTER TABLE orders ADD COLUMN traceparent TEXT;
"#;

const DOWN: &str = r#"
ALTER TABLE orders DROP COLUMN IF EXISTS traceparent;
ALTER TABLE outbox DROP COLUMN IF EXISTS traceparent;
"#;

seckill_common::sql_migration!(Migration, UP, DOWN);
