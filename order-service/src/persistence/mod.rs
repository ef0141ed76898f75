//! The `orders` table: its sea-orm entity and the migrations that create it.
pub mod intake;
pub mod migration;
pub mod order;

pub use migration::Migrator;
pub use order::OrderStatus;

/// Arbitrary but fixed: every replica (and the `migrate` Job) contends for
/// the same advisory lock, so exactly one of them migrates at a time.
pub const MIGRATION_LOCK_KEY: i64 = 0x5EC0_0D00_0001;
