//! `sales` and `reservations`. Plain SQL: the constraints are the point, and
//! they read best as written.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE TABLE sales (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    total_stock     INTEGER NOT NULL CHECK (total_stock > 0),
    -- The last line of defence against overselling: no update can go below zero.
    stock_remaining INTEGER NOT NULL CHECK (stock_remaining >= 0),
    per_user_limit  INTEGER NOT NULL CHECK (per_user_limit > 0),
    starts_at       TIMESTAMPTZ NOT NULL,
    ends_at         TIMESTAMPTZ NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at),
    CHECK (stock_remaining <= total_stock)
);

CREATE TABLE reservations (
    -- One row per order id: a redelivered message finds its row and changes nothing.
    order_id   TEXT PRIMARY KEY,
    sale_id    TEXT NOT NULL REFERENCES sales (id),
    user_id    TEXT NOT NULL,
    quantity   INTEGER NOT NULL CHECK (quantity > 0),
    status     TEXT NOT NULL CHECK (status IN ('reserved', 'rejected')),
    reason     TEXT,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((status = 'rejected') = (reason IS NOT NULL))
);

-- One live reservation per buyer and sale, whatever Redis believed. Also
-- serves the warm-up query (the buyers of one sale).
CREATE UNIQUE INDEX reservations_one_per_buyer
    ON reservations (sale_id, user_id) WHERE status = 'reserved';
"#;

const DOWN: &str = "DROP TABLE IF EXISTS reservations; DROP TABLE IF EXISTS sales;";

seckill_common::sql_migration!(Migration, UP, DOWN);
