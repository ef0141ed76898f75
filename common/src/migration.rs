//! Both table-owning services write their migrations as plain SQL (reviewable,
//! and exactly what PostgreSQL runs). This is the one place that turns an
//! `UP`/`DOWN` pair into a sea-orm-migration `MigrationTrait`.

/// Implements `MigrationTrait` for `$migration` by running `$up` / `$down`
/// (one or more `;`-separated statements) on the migration's connection.
/// The caller keeps `#[derive(DeriveMigrationName)]` on the struct, so the
/// migration's name stays its file name.
#[macro_export]
macro_rules! sql_migration {
    ($migration:ident, $up:expr, $down:expr) => {
        #[async_trait::async_trait]
        impl sea_orm_migration::prelude::MigrationTrait for $migration {
            async fn up(
                &self,
                manager: &sea_orm_migration::prelude::SchemaManager,
            ) -> Result<(), sea_orm_migration::prelude::DbErr> {
                use sea_orm_migration::prelude::*;
                manager
                    .get_connection()
                    .execute_unprepared($up)
                    .await
                    .map(drop)
            }

            async fn down(
                &self,
                manager: &sea_orm_migration::prelude::SchemaManager,
            ) -> Result<(), sea_orm_migration::prelude::DbErr> {
                use sea_orm_migration::prelude::*;
                manager
                    .get_connection()
                    .execute_unprepared($down)
                    .await
                    .map(drop)
            }
        }
    };
}
