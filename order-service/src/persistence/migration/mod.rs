//! Schema history of order-service's own database.
use sea_orm_migration::prelude::*;

mod m20250101_000001_create_orders;
mod m20250401_000001_lifecycle;
mod m20250601_000001_traceparent;
mod m20261201_000001_sale_status_index;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20250101_000001_create_orders::Migration),
            Box::new(m20250401_000001_lifecycle::Migration),
            Box::new(m20250601_000001_traceparent::Migration),
            Box::new(m20261201_000001_sale_status_index::Migration),
        ]
    }
}
