//! The `orders` table. Raw SQL: a partial unique index and CHECKs read
//! more clearly here than through the schema builder.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE orders (
    order_id   TEXT        PRIMARY KEY,
    sale_id    TEXT        NOT NULL,
    user_id    TEXT        NOT NULL,
    quantity   INTEGER     NOT NULL CHECK (quantity > 0),
    status     TEXT        NOT NULL
               CHECK (status IN ('created', 'failed', 'paid', 'cancelled', 'expired')),
    reason     TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- At most one live order per buyer and sale: the last line of defence behind
-- the gateway's Redis check. Orders that ended without a purchase do not count.
CREATE UNIQUE INDEX orders_live_sale_user_key ON orders (sale_id, user_id)
    WHERE status NOT IN ('failed', 'cancelled', 'expired');
CREATE INDEX orders_user_id_idx ON orders (user_id);
"#;

const DOWN: &str = "DROP TABLE IF EXISTS orders;";

seckill_common::sql_migration!(Migration, UP, DOWN);
