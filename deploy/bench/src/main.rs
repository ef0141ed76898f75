use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::Method;
use tokio::sync::watch;

use seckill_bench::compare::{self, Inputs};
use seckill_bench::load::{self, LoadSpec};
use seckill_bench::persist::{self, Watch};
use seckill_bench::redis_stats::{self, Stats};
use seckill_bench::report::{LoadConfig, RunResult, SaleInfo};
use seckill_bench::stats::Summary;
use seckill_bench::target::Target;
use seckill_bench::{plot, sale};

/// Flash-sale load benchmark. Sends only to 127.0.0.1/localhost; every run is
/// bounded in requests and time. See deploy/bench/run.sh and docs/benchmarks.md.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a sale, mint tokens for N users and fire the flash-sale burst
    /// at the gateway.
    Purchase(PurchaseArgs),
    /// The same load loop against any URL (the HTTP ceiling).
    Http(HttpArgs),
    /// Print the gateway's purchase Lua script (or its SHA1), for redis-benchmark.
    Lua {
        #[arg(long)]
        sha: bool,
    },
    /// Put the runs side by side: figures, ratios, targets met or missed.
    Compare(CompareArgs),
}

#[derive(Args)]
struct LoadArgs {
    /// Requests in flight at once, one keep-alive connection each.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Open loop at this many requests per second (latency counted from each
    /// request's due time). Default: closed loop, as fast as answers come.
    #[arg(long)]
    rate: Option<f64>,
    /// Upper bound on the run's length.
    #[arg(long, default_value_t = 120)]
    duration_secs: u64,
    /// Per-request timeout.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    /// Client runtime threads; 1 runs a single-threaded runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Directory for result.json, latency.png and throughput.png.
    #[arg(long)]
    out: PathBuf,
    /// Name of the run in the summary and the plots.
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    no_progress: bool,
    /// TrueType font for plot labels (default: DejaVu Sans from fonts-dejavu-core).
    #[arg(long)]
    font: Option<PathBuf>,
}

#[derive(Args)]
struct PurchaseArgs {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// Needed to create the sale (not with --sale-id).
    #[arg(long, env = "SECKILL_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The gateway's HS256 secret, to mint user tokens.
    #[arg(long, env = "SECKILL_JWT_SECRET", hide_env_values = true)]
    jwt_secret: String,
    #[arg(long, default_value_t = 20_000)]
    users: u64,
    #[arg(long, default_value_t = 10_000)]
    stock: u64,
    /// Requests to send; request i comes from user i mod users. Default: one per user.
    #[arg(long)]
    requests: Option<u64>,
    /// Buy from an existing sale instead of creating one.
    #[arg(long)]
    sale_id: Option<String>,
    /// User ids are PREFIX0..; default derived from the sale id.
    #[arg(long)]
    user_prefix: Option<String>,
    /// order-service's database: time until every accepted order is persisted.
    #[arg(long)]
    orders_db: Option<String>,
    #[arg(long, default_value = "orders")]
    orders_table: String,
    /// How long to wait for persistence once the load is over.
    #[arg(long, default_value_t = 120)]
    persist_timeout_secs: u64,
    #[arg(long, default_value_t = 250)]
    persist_poll_ms: u64,
    /// Redis to read INFO commandstats from, before and after the load.
    #[arg(long)]
    redis_url: Option<String>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args)]
struct HttpArgs {
    #[arg(long)]
    url: String,
    #[arg(long, default_value = "GET")]
    method: String,
    #[arg(long)]
    body: Option<String>,
    /// `Name: value`, repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    #[arg(long, default_value_t = 20_000)]
    requests: u64,
    /// Spread the requests over this many paths: `__i__` in the URL's path
    /// becomes 0..KEYS, request by request.
    #[arg(long)]
    keys: Option<u32>,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Args)]
struct CompareArgs {
    #[arg(long)]
    http: PathBuf,
    #[arg(long)]
    purchase: PathBuf,
    #[arg(long)]
    sold_out: PathBuf,
    #[arg(long)]
    persist: PathBuf,
    /// redis-benchmark's EVALSHA requests per second.
    #[arg(long)]
    redis_rps: Option<f64>,
    /// `SERVICE=BYTES` peak RSS, repeatable.
    #[arg(long)]
    rss: Vec<String>,
    /// The read path's run.
    #[arg(long)]
    read: Option<PathBuf>,
    /// The made-up-id flood's run, its number of ids, and the database
    /// queries inventory-service made meanwhile.
    #[arg(long, requires_all = ["flood_keys", "flood_db_queries"])]
    flood: Option<PathBuf>,
    #[arg(long)]
    flood_keys: Option<u32>,
    #[arg(long)]
    flood_db_queries: Option<f64>,
    /// `PROCESS=MICROSECONDS` CPU per persisted order, repeatable.
    #[arg(long)]
    cpu: Vec<String>,
    /// The purchase floor's CPU µs per purchase.
    #[arg(long)]
    floor_us: Option<f64>,
    /// Writes summary.json and summary.md here.
    #[arg(long)]
    out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let threads = match &cli.command {
        Command::Purchase(a) => a.load.threads,
        Command::Http(a) => a.load.threads,
        _ => 1,
    };
    let runtime = match threads {
        0 => bail!("--threads must be at least 1"),
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Purchase(args) => purchase(args).await,
            Command::Http(args) => http(args).await,
            Command::Lua { sha } => {
                if sha {
                    println!("{}", gateway::purchase::script_hash());
                } else {
                    print!("{}", gateway::purchase::PURCHASE_LUA);
                }
                Ok(())
            }
            Command::Compare(args) => compare(args),
        }
    })
}

fn config(load: &LoadArgs, url: String, method: &Method, requests: u64) -> LoadConfig {
    LoadConfig {
        url,
        method: method.to_string(),
        requests,
        concurrency: load.concurrency,
        rate: load.rate,
        duration_secs: load.duration_secs,
        timeout_ms: load.timeout_ms,
        client_threads: load.threads,
    }
}

fn spec(load: &LoadArgs, target: Target, method: Method, requests: u64) -> LoadSpec {
    LoadSpec {
        target,
        method,
        body: Bytes::new(),
        headers: Vec::new(),
        authorizations: Vec::new(),
        paths: Vec::new(),
        requests,
        duration: Duration::from_secs(load.duration_secs),
        concurrency: load.concurrency,
        rate: load.rate,
        timeout: Duration::from_millis(load.timeout_ms),
        progress: !load.no_progress,
    }
}

fn finish(result: &RunResult, out: &std::path::Path) -> anyhow::Result<()> {
    print!("{}", result.text());
    result
        .write(out)
        .with_context(|| format!("writing results to {}", out.display()))?;
    println!("{:<20}{}", "written", out.display());
    Ok(())
}

async fn http(args: HttpArgs) -> anyhow::Result<()> {
    plot::init_font(args.load.font.as_deref());
    let target = Target::parse(&args.url)?;
    let method: Method = args.method.parse().context("--method")?;
    let mut spec = spec(&args.load, target.clone(), method.clone(), args.requests);
    if let Some(keys) = args.keys {
        let template = target.path.to_string();
        if !template.contains("__i__") {
            bail!("--keys needs `__i__` in the URL's path");
        }
        spec.paths = (0..keys)
            .map(|i| {
                let path = template.replace("__i__", &i.to_string());
                path.parse::<hyper::Uri>()
                    .with_context(|| format!("path {path}"))
            })
            .collect::<anyhow::Result<_>>()?;
    }
    spec.body = Bytes::from(args.body.unwrap_or_default());
    for raw in &args.headers {
        let (name, value) = raw
            .split_once(':')
            .with_context(|| format!("--header {raw}: expected `Name: value`"))?;
        spec.headers.push((
            HeaderName::from_bytes(name.trim().as_bytes())?,
            HeaderValue::from_str(value.trim())?,
        ));
    }
    let run = load::run(spec).await?;
    let result = RunResult {
        kind: "http".into(),
        name: args.load.name.clone().unwrap_or_else(|| "http".into()),
        started_at: run.started_at.to_rfc3339(),
        config: config(&args.load, args.url, &method, args.requests),
        sale: None,
        summary: Summary::of(&run),
        persist: None,
        redis: None,
    };
    finish(&result, &args.load.out)
}

/// The last eight characters of the sale id: user ids differ per sale, and
/// tokens stay short.
fn default_prefix(sale_id: &str) -> String {
    let tail: Vec<char> = sale_id.chars().rev().take(8).collect();
    format!("u{}-", tail.into_iter().rev().collect::<String>())
}

async fn purchase(args: PurchaseArgs) -> anyhow::Result<()> {
    plot::init_font(args.load.font.as_deref());
    if args.users == 0 || args.users > load::MAX_REQUESTS {
        bail!("--users must be 1..={}", load::MAX_REQUESTS);
    }
    let requests = args.requests.unwrap_or(args.users);
    let gateway = Target::parse(&args.gateway)?;
    let redis = args.redis_url.as_deref().map(Stats::open).transpose()?;
    let db = match &args.orders_db {
        Some(url) => Some(persist::connect(url).await.context("--orders-db")?),
        None => None,
    };
    let name = args.load.name.clone().unwrap_or_else(|| "purchase".into());

    let sale_id = match &args.sale_id {
        Some(id) => id.clone(),
        None => {
            let token = args
                .admin_token
                .as_deref()
                .context("--admin-token (or SECKILL_ADMIN_TOKEN) is needed to create the sale")?;
            sale::create(&gateway, token, &format!("bench {name}"), args.stock).await?
        }
    };
    let prefix = args
        .user_prefix
        .clone()
        .unwrap_or_else(|| default_prefix(&sale_id));
    let ttl = Duration::from_secs(args.load.duration_secs + 3600);
    let tokens = sale::mint_tokens(&args.jwt_secret, &prefix, args.users, ttl)?;
    let url = format!("/api/v1/sales/{sale_id}/orders");
    let mut spec = spec(&args.load, gateway.with_path(&url)?, Method::POST, requests);
    spec.body = Bytes::from_static(b"{}");
    spec.headers
        .push((CONTENT_TYPE, HeaderValue::from_static("application/json")));
    spec.authorizations = tokens;

    let (accepted_tx, accepted_rx) = watch::channel(None);
    let watcher = db.map(|client| {
        tokio::spawn(
            Watch {
                client,
                table: args.orders_table.clone(),
                sale_id: sale_id.clone(),
                poll: Duration::from_millis(args.persist_poll_ms.max(10)),
                timeout_after_load: Duration::from_secs(args.persist_timeout_secs),
            }
            .run(accepted_rx),
        )
    });
    let before = match &redis {
        Some(r) => Some(r.snapshot().await?),
        None => None,
    };
    let run = load::run(spec).await?;
    let after = match &redis {
        Some(r) => Some(r.snapshot().await?),
        None => None,
    };
    let summary = Summary::of(&run);
    let last_accept = summary
        .phases
        .as_ref()
        .map_or(0.0, |p| p.while_stock_lasts.end_secs);
    let _ = accepted_tx.send(Some((summary.success, last_accept)));
    let persist = match watcher {
        Some(task) => Some(task.await??.report(run.start)),
        None => None,
    };
    let redis = before
        .zip(after)
        .map(|(b, a)| redis_stats::delta(&b, &a, summary.success));

    let result = RunResult {
        kind: "purchase".into(),
        name,
        started_at: run.started_at.to_rfc3339(),
        config: config(
            &args.load,
            format!("{}{url}", args.gateway.trim_end_matches('/')),
            &Method::POST,
            requests,
        ),
        sale: Some(SaleInfo {
            sale_id,
            stock: args.stock,
            users: args.users,
            oversold: args.sale_id.is_none() && summary.success > args.stock,
        }),
        summary,
        persist,
        redis,
    };
    finish(&result, &args.load.out)
}

fn compare(args: CompareArgs) -> anyhow::Result<()> {
    let inputs = Inputs {
        http: compare::load(&args.http)?,
        purchase: compare::load(&args.purchase)?,
        sold_out: compare::load(&args.sold_out)?,
        persist: compare::load(&args.persist)?,
        redis_evalsha_rps: args.redis_rps,
        rss: args
            .rss
            .iter()
            .map(|r| compare::parse_rss(r))
            .collect::<Result<_, _>>()?,
        read: args.read.as_deref().map(compare::load).transpose()?,
        flood: match (&args.flood, args.flood_keys, args.flood_db_queries) {
            (Some(path), Some(keys), Some(db_queries)) => Some(compare::Flood {
                run: compare::load(path)?,
                keys,
                db_queries,
            }),
            _ => None,
        },
        cpu_us: args
            .cpu
            .iter()
            .map(|c| compare::parse_cpu(c))
            .collect::<Result<_, _>>()?,
        floor_us: args.floor_us,
    };
    let verdict = compare::verdict(&inputs);
    print!("{}", verdict.text());
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("summary.json"),
        serde_json::to_vec_pretty(&verdict)?,
    )?;
    std::fs::write(args.out.join("summary.md"), verdict.markdown())?;
    Ok(())
}
