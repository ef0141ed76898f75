use anyhow::Context;
use clap::{Parser, Subcommand};

use gateway::auth::JwtKeys;
use gateway::configuration::Settings;
use gateway::startup::Application;
use seckill_common::domain::UserId;
use seckill_common::shutdown::Shutdown;

/// mimalloc, not glibc's malloc: a purchase allocates many small, short-lived
/// buffers across threads (docs/benchmarks.md, "The cost of a purchase").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The seckill gateway. Configuration comes from `SECKILL_*` environment
/// variables (and an optional `SECKILL_CONFIG` file); see the README.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the public API (the default).
    Serve,
    /// Print development JWTs signed with SECKILL_JWT_SECRET.
    ///
    /// With --user, prints one token. With --user-prefix and --count, prints
    /// `user_id<TAB>token` lines for users PREFIX0..PREFIX(COUNT-1).
    MintToken {
        #[arg(long, conflicts_with = "user_prefix")]
        user: Option<String>,
        #[arg(long, requires = "count")]
        user_prefix: Option<String>,
        #[arg(long)]
        count: Option<u32>,
        #[arg(long, default_value_t = 3600)]
        ttl_secs: u64,
    },
    /// Create the Kafka topics (idempotent; for a Kubernetes Job).
    CreateTopics,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let settings = Settings::load().context("invalid configuration")?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let _telemetry = seckill_common::telemetry::init("gateway")?;
            tracing::info!(port = settings.http.port, "starting gateway");
            let shutdown = Shutdown::new();
            shutdown.trigger_on_signals();
            Application::build(settings, shutdown)
                .await?
                .run_until_stopped()
                .await
        }
        Command::MintToken {
            user,
            user_prefix,
            count,
            ttl_secs,
        } => {
            let keys = JwtKeys::new(&settings.jwt_secret, settings.jwt_leeway_secs)?;
            match (user, user_prefix, count) {
                (Some(user), _, _) => {
                    let user = UserId::parse(&user)?;
                    println!("{}", keys.mint(&user, ttl_secs)?);
                }
                (None, Some(prefix), Some(count)) => {
                    use std::io::Write;
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    for i in 0..count {
                        let user = UserId::parse(&format!("{prefix}{i}"))?;
                        writeln!(out, "{user}\t{}", keys.mint(&user, ttl_secs)?)?;
                    }
                }
                _ => anyhow::bail!("give --user, or --user-prefix with --count"),
            }
            Ok(())
        }
        Command::CreateTopics => {
            seckill_common::kafka::ensure_topics(&settings.kafka).await?;
            println!("topics ready: {:?}", settings.kafka.topics().all());
            Ok(())
        }
    }
}
