//! The per-sale anti-bot flag: buyers of such a sale must present a
//! short-lived purchase token that the gateway issues around the start.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str =
    "ALTER TABLE sales ADD COLUMN require_purchase_token BOOLEAN NOT NULL DEFAULT false";

const DOWN: &str = "ALTER TABLE sales DROP COLUMN IF EXISTS require_purchase_token";

seckill_common::sql_migration!(Migration, UP, DOWN);
