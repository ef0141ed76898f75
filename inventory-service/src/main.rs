//! `inventory-service [serve]` runs the service; `inventory-service migrate`
//! applies migrations and exits (for a Kubernetes Job or an init container).
use anyhow::Context;
use clap::{Parser, Subcommand};

use inventory_service::configuration::Settings;
use inventory_service::startup::{self, Application};
use seckill_common::shutdown::Shutdown;
use seckill_common::{db, telemetry};

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
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let shutdown = Shutdown::new();
            shutdown.trigger_on_signals();
            Application::build(settings, shutdown)
                .await?
                .run_until_stopped()
                .await
        }
        Command::Migrate => {
            let db = db::connect(&settings.database)
                .await
                .context("cannot connect to PostgreSQL")?;
            startup::migrate(&db).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}
