//! The order lifecycle: each sale's payment terms, and reservations that
//! end `released` when their order is cancelled or expires.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
ALTER TABLE sales
    ADD COLUMN payment_window_secs INTEGER NOT NULL DEFAULT 900
        CHECK (payment_window_secs BETWEEN 1 AND 86400),
    ADD COLUMN unit_price_cents BIGINT NOT NULL DEFAULT 0
        CHECK (unit_price_cents >= 0);

ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations
    ADD CONSTRAINT reservations_status_check
        CHECK (status IN ('reserved', 'rejected', 'released')),
    -- Which event returned the stock (OrderCancelled, OrderExpired, ...), and when.
    ADD COLUMN release_cause TEXT,
    ADD COLUMN released_at TIMESTAMPTZ,
    ADD CONSTRAINT reservations_released_check
        CHECK ((status = 'released') = (released_at IS NOT NULL));
"#;

const DOWN: &str = r#"
ALTER TABLE reservations DROP CONSTRAINT reservations_released_check;
ALTER TABLE reservations DROP COLUMN release_cause, DROP COLUMN released_at;
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations
    ADD CONSTRAINT reservations_status_check CHECK (status IN ('reserved', 'rejected'));
ALTER TABLE sales DROP COLUMN payment_window_secs, DROP COLUMN unit_price_cents;
"#;

seckill_common::sql_migration!(Migration, UP, DOWN);
