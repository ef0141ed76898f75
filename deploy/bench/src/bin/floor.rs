//! The purchase floor: the least a purchase can cost with the parts the
//! gateway is built on, so the gateway's own CPU per purchase can be read
//! against it (docs/benchmarks.md, "The purchase floor").
//!
//! Each request does what makes a purchase durable and nothing else: the
//! project's purchase script over this worker's own Redis connection, then
//! the order's `OrderRequested` envelope produced with the project's own
//! producer (idempotent, acks=all, LZ4, the same linger) and awaited until
//! the broker acknowledges it, then a fixed 202. There is no authentication,
//! rate limiting, tracing, metric, breaker or JSON request parsing. What the
//! gateway costs above this floor is what those add.
//!
//! Only for the benchmark: every purchase is of the one sale `--sale`, by a
//! new user, and its envelope goes to topics prefixed `bench-floor.` that no
//! service reads.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use anyhow::Context;
use clap::Parser;
use gateway::enqueue::{order_requested, Order};
use gateway::purchase::{self, Decision};
use gateway::worker_redis;
use seckill_common::domain::{OrderId, Quantity, SaleId, UserId};
use seckill_common::kafka::EventProducer;
use seckill_common::redis_conn;
use seckill_common::settings::{KafkaSettings, RedisSettings};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BODY: &str = r#"{"order_id":"x","status":"queued"}"#;
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Parser)]
#[command(about = "Purchase floor: the purchase script and one acknowledged produce per request")]
struct Cli {
    #[arg(long, default_value_t = 8091)]
    port: u16,
    /// Worker threads; match the gateway's.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    #[arg(long, default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The sale every purchase is of: its hash must be warm with stock to spare.
    #[arg(long)]
    sale: String,
    /// What each request does, to split the floor into its parts: the
    /// purchase script, the acknowledged produce, or both (neither: HTTP only).
    #[arg(long, value_delimiter = ',', default_value = "script,produce")]
    steps: Vec<Step>,
    /// The producer's compression, as `SECKILL_KAFKA__COMPRESSION` names it.
    #[arg(long, default_value = "lz4")]
    compression: String,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Step {
    Script,
    Produce,
    None,
}

struct Floor {
    sale: SaleId,
    redis: RedisSettings,
    producer: EventProducer,
    topic: String,
    buyers: AtomicU64,
    script: bool,
    produce: bool,
}

async fn purchase(floor: &Floor) -> Result<(), String> {
    let n = floor.buyers.fetch_add(1, Ordering::Relaxed);
    let user = UserId::parse(&format!("floor-{n}")).map_err(|e| e.to_string())?;
    let order = OrderId::new(&floor.sale);
    if floor.script {
        script(floor, &user, &order).await?;
    }
    if !floor.produce {
        return Ok(());
    }
    let envelope = order_requested(&Order {
        sale: &floor.sale,
        user: &user,
        quantity: Quantity::ONE,
        id: &order,
    });
    floor
        .producer
        .send(&floor.topic, &order.to_string(), &envelope)
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

async fn script(floor: &Floor, user: &UserId, order: &OrderId) -> Result<(), String> {
    // One connection per worker, as the gateway's purchase path has.
    let mut redis = worker_redis::this_thread(&floor.redis, TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    let script = purchase::reserve_and_enqueue(
        &mut redis,
        &floor.sale,
        user,
        Quantity::ONE,
        order,
        false,
        None,
    );
    match redis_conn::within(TIMEOUT, script).await {
        Ok(Decision::Accepted { .. }) => Ok(()),
        Ok(other) => Err(format!("the script answered {}", other.label())),
        Err(error) => Err(error.to_string()),
    }
}

/// Reads the body (keep-alive needs it read), buys, answers 202 or 503.
async fn buy(_body: web::Bytes, floor: web::Data<Floor>) -> HttpResponse {
    match purchase(&floor).await {
        Ok(()) => HttpResponse::Accepted()
            .content_type("application/json")
            .body(BODY),
        Err(error) => HttpResponse::ServiceUnavailable().body(error),
    }
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let sale = SaleId::parse(&cli.sale).context("--sale")?;
    let kafka = KafkaSettings {
        brokers: cli.brokers.clone(),
        topic_prefix: "bench-floor.".into(),
        compression: serde_json::from_value(cli.compression.clone().into())
            .context("--compression: none, lz4, zstd or gzip")?,
        ..KafkaSettings::default()
    };
    seckill_common::kafka::ensure_topics(&kafka)
        .await
        .context("creating the floor's topics")?;
    let floor = web::Data::from(Arc::new(Floor {
        sale,
        redis: RedisSettings {
            url: cli.redis.as_str().into(),
            ..RedisSettings::default()
        },
        producer: EventProducer::new(&kafka).context("the producer")?,
        topic: kafka.topics().order_requested,
        buyers: AtomicU64::new(0),
        script: cli.steps.contains(&Step::Script),
        produce: cli.steps.contains(&Step::Produce),
    }));
    HttpServer::new(move || {
        App::new()
            .app_data(floor.clone())
            .default_service(web::to(buy))
    })
    .workers(cli.workers.max(1))
    .bind(("127.0.0.1", cli.port))?
    .run()
    .await?;
    Ok(())
}
