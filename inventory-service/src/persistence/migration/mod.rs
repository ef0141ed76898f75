//! Schema migrations, applied by `inventory-service migrate` or at start.
use sea_orm_migration::prelude::*;

mod m20250101_000001_create_tables;
mod m20250301_000001_purchase_token;
mod m20250401_000001_lifecycle;
mod m20251201_000001_saga_sweep;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20250101_000001_create_tables::Migration),
            Box::new(m20250301_000001_purchase_token::Migration),
            Box::new(m20250401_000001_lifecycle::Migration),
            Box::new(m20251201_000001_saga_sweep::Migration),
        ]
    }
}
