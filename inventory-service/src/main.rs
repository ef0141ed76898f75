//! `inventory-service [serve]` runs the service; `inventory-service migrate`
//! applies migrations and exits (for a Kubernetes Job or an init container).
use anyhow::Context;
use clap::{Parser, Subcommand};

use inventory_service::configuration::Settings;
use inventory_service::persistence::{Migrator, MIGRATION_LOCK_KEY};
use inventory_service::Application;
use seckill_common::service;
use seckill_common::shutdown::Shutdown;
use seckill_common::telemetry;

/// mimalloc, not glibc's malloc: a purchase allocates many small, short-lived
/// buffers across threads (docs/benchmarks.md, "The cost of a purchase").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    version,
    about = "Applies orders to the authoritative stock in PostgreSQL."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume orders and serve HTTP (the default).
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = telemetry::init("inventory-service")?;
    let settings = Settings::load().context("invalid configuration")?;
    let shutdown = Shutdown::new();
    shutdown.trigger_on_signals();
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            Application::build(settings, shutdown)
                .await?
                .run_until_stopped()
                .await
        }
        Command::Migrate => {
            service::database::<Migrator>(&settings.database, true, MIGRATION_LOCK_KEY, &shutdown)
                .await?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}
