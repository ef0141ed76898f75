//! One complete, isolated seckill deployment for a test.
use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement};
use serde_json::{json, Value};

use seckill_common::transport::Transport;

use crate::process::{binary, free_port, nisshi, Process};
use crate::proxy::FaultProxy;
use crate::servers::{state_dir, PrivatePostgres, PrivateRedis, RedisCluster};
use crate::wait::{poll_until, wait_until};

pub const JWT_SECRET: &str = "test-jwt-secret-0123456789";
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// The gateway's secret for the services' `/internal/...` routes.
pub const INTERNAL_TOKEN: &str = "test-internal-token-0123456789";

fn required(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: run the suite with deploy/local/test.sh"))
}

/// The transport stacks run on: `SECKILL_TEST_TRANSPORT` (`kafka`, the
/// default, or `redis-streams`), so that one test runs on either. The test
/// command runs the transport-bound binaries once per transport.
pub fn transport_under_test() -> Transport {
    match std::env::var("SECKILL_TEST_TRANSPORT").as_deref() {
        Ok("redis-streams") => Transport::RedisStreams,
        Ok("kafka") | Err(_) => Transport::Kafka,
        Ok(other) => panic!("SECKILL_TEST_TRANSPORT={other}: kafka or redis-streams"),
    }
}

/// Knobs a test may turn; everything else has test-friendly defaults.
#[derive(Clone, Default)]
pub struct StackOptions {
    /// This transport whatever the run's (a test of one transport's own
    /// behaviour); `None`: [`transport_under_test`].
    pub transport: Option<Transport>,
    /// Extra environment for every service (e.g. shorter timeouts).
    pub env: Vec<(String, String)>,
    /// Extra environment for the gateway only.
    pub gateway_env: Vec<(String, String)>,
    /// The broker stores in SQLite in a temporary directory instead of
    /// memory, so a restart keeps topics, messages and committed offsets.
    pub durable_broker: bool,
    /// A redis-server of this stack only ([`Stack::private_redis`]), so the
    /// test may stop it without touching the tests beside it.
    pub private_redis: bool,
    /// With `private_redis`: an append-only file, so a restart comes back
    /// with its data rather than empty.
    pub redis_persistent: bool,
    /// A Redis Cluster of this stack only, three masters
    /// ([`Stack::redis_cluster`]); every service is given its nodes.
    pub redis_cluster: bool,
    /// A PostgreSQL cluster of this stack only ([`Stack::private_postgres`]).
    pub private_postgres: bool,
    /// The gateway reaches Redis through a [`FaultProxy`] ([`Stack::redis_proxy`]);
    /// the other services and the test itself reach Redis directly.
    pub gateway_redis_proxy: bool,
    /// Every client reaches the broker through a [`FaultProxy`]
    /// ([`Stack::broker_proxy`]): the broker advertises the proxy's address.
    pub broker_proxy: bool,
}

pub struct Stack {
    pub id: String,
    pub transport: Transport,
    pub brokers: String,
    pub broker: Process,
    pub gateway: Process,
    pub inventory: Process,
    pub orders: Process,
    pub gateway_url: String,
    pub inventory_url: String,
    pub order_url: String,
    pub topic_prefix: String,
    pub redis_url: String,
    pub inventory_db: DatabaseConnection,
    pub orders_db: DatabaseConnection,
    pub http: reqwest::Client,
    /// Set with [`StackOptions::private_redis`].
    pub private_redis: Option<PrivateRedis>,
    /// Set with [`StackOptions::redis_cluster`].
    pub redis_cluster: Option<RedisCluster>,
    /// Set with [`StackOptions::gateway_redis_proxy`].
    pub redis_proxy: Option<FaultProxy>,
    /// Set with [`StackOptions::broker_proxy`].
    pub broker_proxy: Option<FaultProxy>,
    /// Set with [`StackOptions::private_postgres`]. Declared after the
    /// connections above, so they close before the cluster goes away.
    pub private_postgres: Option<PrivatePostgres>,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(StackOptions::default()).await
    }

    pub async fn start_with(options: StackOptions) -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let transport = options.transport.unwrap_or_else(transport_under_test);
        let private_redis = match options.private_redis {
            true => Some(PrivateRedis::start(&id, options.redis_persistent).await),
            false => None,
        };
        let redis_cluster = match options.redis_cluster {
            true => Some(RedisCluster::start(&id).await),
            false => None,
        };
        let redis_url = match (&private_redis, &redis_cluster) {
            (Some(r), _) => r.url.clone(),
            // `url` is not used with cluster nodes; one node, for tools.
            (None, Some(c)) => format!("redis://127.0.0.1:{}", c.ports[0]),
            (None, None) => required("SECKILL_TEST_REDIS_URL"),
        };
        let private_postgres = match options.private_postgres {
            true => Some(PrivatePostgres::start(&id).await),
            false => None,
        };
        let admin_db = match &private_postgres {
            Some(pg) => pg.admin_url.clone(),
            None => required("SECKILL_TEST_DATABASE_URL"),
        };
        let (inventory_db_url, inventory_db) =
            create_database(&admin_db, &format!("inv_{id}")).await;
        let (orders_db_url, orders_db) = create_database(&admin_db, &format!("ord_{id}")).await;

        let broker_port = free_port();
        let listener = format!("tcp://127.0.0.1:{broker_port}");
        // With a proxy, clients bootstrap through it and the broker tells
        // them to stay there, so every byte to the broker crosses it.
        let broker_proxy = match options.broker_proxy {
            true => Some(FaultProxy::start(format!("127.0.0.1:{broker_port}")).await),
            false => None,
        };
        let brokers = match &broker_proxy {
            Some(proxy) => format!("127.0.0.1:{}", proxy.port),
            None => format!("127.0.0.1:{broker_port}"),
        };
        let advertised = format!("tcp://{brokers}");
        // nisshi resolves a sqlite:// path against its working directory.
        let storage = match options.durable_broker {
            true => "sqlite://nisshi.db",
            false => "memory://nisshi/",
        };
        let mut broker = Process::new(
            &format!("{id}-broker"),
            nisshi(),
            [
                "broker",
                "--listener-url",
                &listener,
                "--advertised-listener-url",
                &advertised,
                "--storage-engine",
                storage,
            ]
            .map(String::from)
            .to_vec(),
            HashMap::from([("GROUP_INITIAL_REBALANCE_DELAY".to_owned(), "0s".to_owned())]),
        );
        if options.durable_broker {
            let dir = state_dir().join(format!("{id}-broker"));
            std::fs::create_dir_all(&dir).expect("broker dir");
            broker = broker.with_cwd(dir);
        }
        // Streams live in Redis: the stack has no broker running.
        if transport == Transport::Kafka {
            broker.start();
            wait_for_port(broker_port).await;
        }

        let (gw_port, inv_port, ord_port) = (free_port(), free_port(), free_port());
        let topic_prefix = format!("t{id}.");
        let mut common: HashMap<String, String> = [
            ("SECKILL_KAFKA__BROKERS", brokers.as_str()),
            ("SECKILL_KAFKA__TOPIC_PREFIX", topic_prefix.as_str()),
            ("SECKILL_KAFKA__PRODUCE_TIMEOUT_MS", "2000"),
            ("SECKILL_KAFKA__SESSION_TIMEOUT_MS", "6000"),
            ("SECKILL_REDIS__URL", redis_url.as_str()),
            ("SECKILL_HTTP__WORKERS", "2"),
            ("SECKILL_HTTP__SHUTDOWN_TIMEOUT_SECS", "5"),
            ("SECKILL_INTERNAL_TOKEN", INTERNAL_TOKEN),
            // Tests shorten the re-warm delay and the orphan grace period far
            // below a real gateway's produce window; they never rely on it.
            ("SECKILL_RECONCILE__GATEWAY_PRODUCE_WINDOW_MS", "0"),
            ("RUST_LOG", "info"),
            (
                "SECKILL_TRANSPORT",
                match transport {
                    Transport::Kafka => "kafka",
                    Transport::RedisStreams => "redis-streams",
                },
            ),
            // A dead consumer's entries are taken over within seconds, and
            // a new sale's stream is joined at once.
            ("SECKILL_STREAMS__CLAIM_IDLE_MS", "3000"),
            ("SECKILL_STREAMS__CLAIM_INTERVAL_MS", "500"),
            ("SECKILL_STREAMS__TRIM_INTERVAL_MS", "500"),
            ("SECKILL_STREAMS__DISCOVER_INTERVAL_MS", "200"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        if let Some(cluster) = &redis_cluster {
            common.insert(
                "SECKILL_REDIS__CLUSTER_NODES".into(),
                cluster.nodes_setting(),
            );
        }
        common.extend(options.env.iter().cloned());

        let service = |name: &str, port: u16, extra: Vec<(String, String)>| {
            let mut env = common.clone();
            env.insert("SECKILL_HTTP__PORT".into(), port.to_string());
            env.extend(extra);
            Process::new(
                &format!("{id}-{name}"),
                binary(name),
                vec!["serve".into()],
                env,
            )
        };
        let mut inventory = service(
            "inventory-service",
            inv_port,
            vec![("SECKILL_DATABASE__URL".into(), inventory_db_url)],
        );
        let mut orders = service(
            "order-service",
            ord_port,
            vec![("SECKILL_DATABASE__URL".into(), orders_db_url)],
        );
        let mut gateway_env = vec![
            ("SECKILL_JWT_SECRET".to_owned(), JWT_SECRET.to_owned()),
            ("SECKILL_ADMIN_TOKEN".to_owned(), ADMIN_TOKEN.to_owned()),
            (
                "SECKILL_INVENTORY_URL".to_owned(),
                format!("http://127.0.0.1:{inv_port}"),
            ),
            (
                "SECKILL_ORDER_URL".to_owned(),
                format!("http://127.0.0.1:{ord_port}"),
            ),
            (
                "SECKILL_RATE_LIMIT__PER_IP_PER_SECOND".to_owned(),
                "1000000".to_owned(),
            ),
            (
                "SECKILL_RATE_LIMIT__PER_USER_PER_SECOND".to_owned(),
                "1000".to_owned(),
            ),
        ];
        let redis_proxy = match options.gateway_redis_proxy {
            true => {
                let upstream = redis_url
                    .trim_start_matches("redis://")
                    .split(['/', '?'])
                    .next()
                    .expect("redis url has an address")
                    .to_owned();
                let proxy = FaultProxy::start(upstream.clone()).await;
                let via = redis_url.replacen(&upstream, &format!("127.0.0.1:{}", proxy.port), 1);
                gateway_env.push(("SECKILL_REDIS__URL".to_owned(), via));
                Some(proxy)
            }
            false => None,
        };
        gateway_env.extend(options.gateway_env.iter().cloned());
        let mut gateway = service("gateway", gw_port, gateway_env);
        inventory.start();
        orders.start();
        gateway.start();

        let stack = Self {
            id,
            transport,
            brokers,
            broker,
            gateway,
            inventory,
            orders,
            gateway_url: format!("http://127.0.0.1:{gw_port}"),
            inventory_url: format!("http://127.0.0.1:{inv_port}"),
            order_url: format!("http://127.0.0.1:{ord_port}"),
            topic_prefix,
            redis_url,
            inventory_db,
            orders_db,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .pool_max_idle_per_host(512)
                .build()
                .expect("client"),
            private_redis,
            redis_cluster,
            redis_proxy,
            broker_proxy,
            private_postgres,
        };
        for url in [&stack.inventory_url, &stack.order_url, &stack.gateway_url] {
            stack.wait_ready(url).await;
        }
        // A ready answer from a process that is not ours (its port taken by
        // someone else) must not pass for a started stack.
        let mut stack = stack;
        for process in [&mut stack.inventory, &mut stack.orders, &mut stack.gateway] {
            assert!(
                process.is_running(),
                "{} exited at start:\n{}",
                process.name,
                process.log_tail(20)
            );
        }
        stack
    }

    /// Waits up to a minute for `base/readyz` to answer 2xx. On timeout the
    /// panic names the last answer (or connection error) and shows the tail
    /// of every service's log, so a failure on CI says which step hung.
    pub async fn wait_ready(&self, base: &str) {
        let url = format!("{base}/readyz");
        let http = self.http.clone();
        let last = poll_until(Duration::from_secs(60), Duration::from_millis(50), || {
            let (http, url) = (http.clone(), url.clone());
            async move {
                match http.get(&url).send().await {
                    Ok(r) if r.status().is_success() => Ok(()),
                    Ok(r) => Err(format!(
                        "{} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => Err(format!("{e}")),
                }
            }
        })
        .await;
        if let Err(last) = last {
            let tails: Vec<String> = [&self.inventory, &self.orders, &self.gateway]
                .iter()
                .map(|p| format!("--- {} ---\n{}", p.name, p.log_tail(25)))
                .collect();
            panic!(
                "timed out after 60s waiting for {url} to be ready; last answer: {last}\n(logs in {})\n{}",
                crate::process::log_dir().display(),
                tails.join("\n")
            );
        }
    }

    pub fn token(&self, user: &str) -> String {
        token_with(user, 3600, JWT_SECRET)
    }

    /// Creates a sale through the admin API; returns its id.
    pub async fn create_sale(
        &self,
        stock: i64,
        starts_at: DateTime<Utc>,
        ends_at: DateTime<Utc>,
    ) -> String {
        let (status, body) = self
            .admin_post("/api/v1/admin/sales", json!({"name": "test sale", "stock": stock, "starts_at": starts_at, "ends_at": ends_at}))
            .await;
        assert_eq!(status, 201, "create sale: {body}");
        body["sale_id"]
            .as_str()
            .expect("sale_id is a string")
            .to_owned()
    }

    /// A sale that is on now, for an hour.
    pub async fn active_sale(&self, stock: i64) -> String {
        let now = Utc::now();
        self.create_sale(
            stock,
            now - chrono::Duration::seconds(5),
            now + chrono::Duration::hours(1),
        )
        .await
    }

    pub async fn admin_post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.gateway_url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("gateway reachable");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// POSTs a purchase with a JSON body; returns status and JSON answer.
    pub async fn purchase(&self, token: &str, sale: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/api/v1/sales/{sale}/orders", self.gateway_url))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("gateway reachable");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A purchase at gateway `base` that reports a connection failure
    /// instead of panicking: fault tests send while processes die.
    /// With the broker proxy stalled: a purchase the gateway answers with
    /// `504 order_outcome_unknown`, and the order id that answer names.
    pub async fn purchase_of_unknown_outcome(&self, token: &str, sale: &str) -> String {
        let proxy = self
            .broker_proxy
            .as_ref()
            .expect("a stack with broker_proxy");
        proxy.stall();
        let (status, body) = self.purchase(token, sale, json!({})).await;
        crate::wait::assert_error(status, &body, 504, "order_outcome_unknown");
        body["error"]["order_id"]
            .as_str()
            .expect("the answer names the order")
            .to_owned()
    }

    pub async fn try_purchase(
        &self,
        base: &str,
        token: &str,
        sale: &str,
        body: &Value,
    ) -> Result<(u16, Value), reqwest::Error> {
        let response = self
            .http
            .post(format!("{base}/api/v1/sales/{sale}/orders"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// Another gateway on the same Redis, broker and services, with extra
    /// environment (e.g. a fault hook). Started and ready; returns its base URL.
    pub async fn extra_gateway(&self, name: &str, extra: &[(&str, &str)]) -> (Process, String) {
        self.extra_replica(&self.gateway, "gateway", name, extra)
            .await
    }

    /// Another replica of `binary` ("inventory-service", "order-service"),
    /// configured as `like` is (same databases, Redis, transport and
    /// groups) plus `extra`. Started and ready; returns its base URL.
    pub async fn extra_replica(
        &self,
        like: &Process,
        binary_name: &str,
        name: &str,
        extra: &[(&str, &str)],
    ) -> (Process, String) {
        let port = free_port();
        let mut env = like.env().clone();
        env.insert("SECKILL_HTTP__PORT".into(), port.to_string());
        for (k, v) in extra {
            env.insert((*k).to_owned(), (*v).to_owned());
        }
        let mut replica = Process::new(
            &format!("{}-{name}", self.id),
            binary(binary_name),
            vec!["serve".into()],
            env,
        );
        replica.start();
        let url = format!("http://127.0.0.1:{port}");
        self.wait_ready(&url).await;
        (replica, url)
    }

    /// Asks for a reconciliation (`POST /api/v1/admin/reconcile`). `None`
    /// when this build has no such route yet.
    pub async fn reconcile(&self) -> Option<(u16, Value)> {
        let (status, body) = self.admin_post("/api/v1/admin/reconcile", json!({})).await;
        let no_route = status == 404 && body["error"]["code"] == "not_found";
        (!no_route).then_some((status, body))
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(format!("{}{path}", self.gateway_url));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.expect("gateway reachable");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A connection to this stack's Redis, as its services make it: to the
    /// cluster when it has one.
    pub async fn redis(&self) -> seckill_common::redis_conn::Conn {
        let settings = seckill_common::settings::RedisSettings {
            url: self.redis_url.as_str().into(),
            cluster_nodes: self
                .redis_cluster
                .as_ref()
                .map(RedisCluster::nodes_setting)
                .unwrap_or_default(),
            // A test's look, not a purchase: it may wait for a busy machine.
            response_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        seckill_common::redis_conn::connect(&settings)
            .await
            .expect("redis reachable")
    }

    /// The sale's remaining stock in Redis.
    pub async fn redis_stock(&self, sale: &str) -> i64 {
        let mut con = self.redis().await;
        redis::cmd("HGET")
            .arg(format!("seckill:{{{sale}}}:sale"))
            .arg("stock")
            .query_async(&mut con)
            .await
            .expect("stock")
    }

    pub async fn redis_buyers(&self, sale: &str) -> i64 {
        let mut con = self.redis().await;
        redis::cmd("HLEN")
            .arg(format!("seckill:{{{sale}}}:buyers"))
            .query_async(&mut con)
            .await
            .expect("buyers")
    }

    /// Waits until Redis holds `stock` units and `buyers` buyers of `sale`
    /// (Redis is updated after the database, so tests poll for it).
    pub async fn wait_redis_holds(&self, sale: &str, stock: i64, buyers: i64) {
        crate::wait_until(
            &format!("Redis to hold stock {stock} and {buyers} buyers of {sale}"),
            std::time::Duration::from_secs(30),
            || async {
                (self.redis_stock(sale).await == stock && self.redis_buyers(sale).await == buyers)
                    .then_some(())
            },
        )
        .await;
    }

    /// Runs a query returning one bigint column `n`.
    pub async fn count(db: &DatabaseConnection, sql: &str) -> i64 {
        let row = db
            .query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .expect("one row");
        row.try_get::<i64>("", "n")
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    pub async fn db_stock(&self, sale: &str) -> i64 {
        Self::count(
            &self.inventory_db,
            &format!("SELECT stock_remaining::bigint AS n FROM sales WHERE id = '{sale}'"),
        )
        .await
    }

    /// Dumps the last log lines of every process, for a failing test's output.
    pub fn logs(&self) -> String {
        let mut all = vec![&self.gateway, &self.inventory, &self.orders, &self.broker];
        all.extend(self.private_redis.as_ref().map(|r| &r.process));
        all.iter()
            .map(|p| {
                format!(
                    "--- {} ({}) ---\n{}",
                    p.name,
                    p.log_path().display(),
                    p.log_tail(30)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub fn token_with(user: &str, ttl_secs: i64, secret: &str) -> String {
    let now = Utc::now().timestamp();
    let claims = json!({"sub": user, "exp": now + ttl_secs, "iat": now});
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()).expect("a secret"),
    )
    .expect("token")
}

async fn create_database(admin_url: &str, name: &str) -> (String, DatabaseConnection) {
    let admin = Database::connect(admin_url)
        .await
        .expect("postgres reachable");
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let _ = admin.close().await;
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .expect("database url has a path");
    let url = format!("{base}/{name}");
    let db = Database::connect(&url).await.expect("test database");
    (url, db)
}

async fn wait_for_port(port: u16) {
    wait_until(
        &format!("port {port} to accept connections"),
        Duration::from_secs(30),
        || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
}
