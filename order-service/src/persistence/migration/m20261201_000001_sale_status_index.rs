//! The operators' console counts a live sale's orders by state every second
//! or two (`GET /internal/sales/{id}/order-counts`): an index on
//! `(sale_id, status)` answers that from the index alone, where the table
//! would otherwise be scanned whole while the sale is writing to it.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const UP: &str = r#"
CREATE INDEX IF NOT EXISTS orders_sale_status ON orders (sale_id, status);
"#;

const DOWN: &str = r#"
DROP INDEX IF EXISTS orders_sale_status;
"#;

seckill_common::sql_migration!(Migration, UP, DOWN);
