//! `order-service [serve]` runs the service; `order-service migrate` applies
//! the database migrations and exits (for a Kubernetes Job or a release step).
use anyhow::Context;
use clap::{Parser, Subcommand};

use order_service::configuration::Settings;
use order_service::{persistence, Application};
use seckill_common::shutdown::Shutdown;

#[derive(Parser)]
#[command(
    version,
    about = "Persists orders from inventory decisions and serves their status."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Consume inventory events and serve HTTP (the default).
    Serve,
    /// Apply pending database migrations, then exit.
    Migrate,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = seckill_common::telemetry::init("order-service")?;
    let settings = Settings::load()?;
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
            let db = seckill_common::db::connect(&settings.database)
                .await
                .context("cannot connect to the orders database")?;
            persistence::migrate(&db)
                .await
                .context("migration failed")?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}
