//! A reservation knows when order-service confirmed its order, so that the
//! saga sweeper (`crate::sweep`) can find reservations whose order never
//! appeared, and how often it has already tried.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
ALTER TABLE reservations
    -- Set when OrderCreated (or any later order event) arrives.
    ADD COLUMN confirmed_at TIMESTAMPTZ,
    -- How many times the sweeper announced StockReserved again.
    ADD COLUMN sweeps INTEGER NOT NULL DEFAULT 0;
-- Existing rows predate confirmation: count them confirmed.
UPDATE reservations SET confirmed_at = created_at;
CREATE INDEX reservations_unconfirmed
    ON reservations (created_at) WHERE status = 'reserved' AND confirmed_at IS NULL;
"#;

const DOWN: &str = r#"
DROP INDEX reservations_unconfirmed;
ALTER TABLE reservations DROP COLUMN confirmed_at, DROP COLUMN sweeps;
"#;

seckill_common::sql_migration!(Migration, UP, DOWN);
