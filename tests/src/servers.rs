//! Private Redis and PostgreSQL servers for one stack.
//!
//! `deploy/local/test.sh` starts one Redis and one PostgreSQL that every test
//! shares, in parallel. A fault test that stops a server must stop its own,
//! or it would break the tests running beside it: [`crate::StackOptions`]
//! asks for these instead. Each lives in a temporary directory of its own on
//! a free port, and is stopped and deleted on drop.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{free_port, Process};
use crate::wait::wait_until;

/// Where this run keeps its state (`SECKILL_TEST_STATE_DIR`, deleted by test.sh).
pub fn state_dir() -> PathBuf {
    crate::process::log_dir()
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(std::env::temp_dir)
}

/// A redis-server child process of this test only.
pub struct PrivateRedis {
    pub process: Process,
    pub port: u16,
    pub url: String,
}

impl PrivateRedis {
    /// `persistent`: append-only file with fsync on every write, so a restart
    /// (even after SIGKILL) comes back with every key. Otherwise nothing is
    /// saved and a restart comes back empty.
    pub async fn start(name: &str, persistent: bool) -> Self {
        let port = free_port();
        let dir = state_dir().join(format!("{name}-redis"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let mut args = vec![
            "--port".to_owned(),
            port.to_string(),
            "--bind".to_owned(),
            "127.0.0.1".to_owned(),
            "--save".to_owned(),
            String::new(),
            "--dir".to_owned(),
            dir.display().to_string(),
        ];
        if persistent {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"].map(String::from));
        } else {
            args.extend(["--appendonly", "no"].map(String::from));
        }
        let mut process = Process::new(
            &format!("{name}-redis"),
            PathBuf::from("redis-server"),
            args,
            Default::default(),
        );
        process.start();
        let mut redis = Self {
            process,
            port,
            url: format!("redis://127.0.0.1:{port}"),
        };
        redis.wait_up().await;
        redis
    }

    /// SIGTERM: redis-server writes what it persists and exits.
    pub fn stop(&mut self) {
        self.process.terminate(Duration::from_secs(10));
    }

    pub async fn restart(&mut self) {
        self.process.start();
        self.wait_up().await;
    }

    async fn wait_up(&mut self) {
        wait_for_ping(self.port).await;
    }
}

/// A Redis Cluster of this test only: three masters, no replicas, made
/// with `redis-cli --cluster create` as an operator would. Its nodes are
/// given to the services as `SECKILL_REDIS__CLUSTER_NODES`.
pub struct RedisCluster {
    pub nodes: Vec<Process>,
    pub ports: Vec<u16>,
}

impl RedisCluster {
    pub async fn start(name: &str) -> Self {
        let mut nodes = Vec::new();
        let mut ports = Vec::new();
        for i in 0..3 {
            // The bus port is given too: port + 10000 may not exist.
            let (port, bus) = (free_port(), free_port());
            let dir = state_dir().join(format!("{name}-cluster-{i}"));
            std::fs::create_dir_all(&dir).expect("cluster node dir");
            let args = [
                "--port",
                &port.to_string(),
                "--cluster-port",
                &bus.to_string(),
                "--bind",
                "127.0.0.1",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &dir.display().to_string(),
            ]
            .map(String::from)
            .to_vec();
            let mut node = Process::new(
                &format!("{name}-cluster-{i}"),
                PathBuf::from("redis-server"),
                args,
                Default::default(),
            );
            node.start();
            nodes.push(node);
            ports.push(port);
        }
        for &port in &ports {
            wait_for_ping(port).await;
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let out = crate::wait::blocking(|| {
            create
                .args(["--cluster-replicas", "0", "--cluster-yes"])
                .output()
                .expect("redis-cli runs")
        });
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Every node must agree the cluster is up before a client maps it.
        for &port in &ports {
            wait_until(
                &format!("cluster node :{port} to report cluster_state:ok"),
                Duration::from_secs(30),
                || async move {
                    let info: String = query(port, redis::cmd("CLUSTER").arg("INFO")).await?;
                    info.contains("cluster_state:ok").then_some(())
                },
            )
            .await;
        }
        Self { nodes, ports }
    }

    /// `SECKILL_REDIS__CLUSTER_NODES`: every node.
    pub fn nodes_setting(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the master that holds `key`'s slot: the one node that
    /// answers a command on it (the others answer MOVED).
    pub async fn port_of(&self, key: &str) -> u16 {
        for &port in &self.ports {
            if query::<i64>(port, redis::cmd("EXISTS").arg(key))
                .await
                .is_some()
            {
                return port;
            }
        }
        panic!("no node owns {key}")
    }
}

/// One command to one node, answered or `None`.
async fn query<T: redis::FromRedisValue>(port: u16, cmd: &mut redis::Cmd) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut con = client.get_multiplexed_async_connection().await.ok()?;
    cmd.query_async(&mut con).await.ok()
}

async fn wait_for_ping(port: u16) {
    wait_until(
        &format!("redis :{port} to answer PING"),
        Duration::from_secs(30),
        || async move {
            query::<String>(port, &mut redis::cmd("PING"))
                .await
                .map(|_| ())
        },
    )
    .await;
}

/// A PostgreSQL cluster of this test only: initdb'd into a temporary
/// directory as the `postgres` OS user (the server refuses to run as root),
/// fsync off (a test's throwaway cluster can afford losing itself in a crash).
pub struct PrivatePostgres {
    pub port: u16,
    /// Superuser URL of the `postgres` database (trust auth, loopback only).
    pub admin_url: String,
    base: PathBuf,
    bin: PathBuf,
}

impl PrivatePostgres {
    pub async fn start(name: &str) -> Self {
        let port = free_port();
        // Under the system temp dir: the postgres user must be able to reach it.
        let base = std::env::temp_dir().join(format!("seckill-pg-{name}"));
        let bin = pg_bin_dir();
        let pg = Self {
            port,
            admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            base,
            bin,
        };
        let setup = {
            let (base, bin) = (pg.base.clone(), pg.bin.clone());
            move || {
                std::fs::create_dir_all(base.join("sock")).expect("pg dir");
                if is_root() {
                    run(
                        "chown",
                        &["-R", "postgres:postgres", &base.display().to_string()],
                    );
                }
                as_postgres(
                    &bin.join("initdb"),
                    &[
                        "-D",
                        &base.join("data").display().to_string(),
                        "-U",
                        "postgres",
                        "-E",
                        "UTF8",
                        "--no-locale",
                        "--auth=trust",
                        "--no-sync",
                    ],
                );
            }
        };
        tokio::task::spawn_blocking(setup).await.expect("initdb");
        pg.start_again().await;
        pg
    }

    /// `pg_ctl stop -m fast`: clients are disconnected, the server exits cleanly.
    pub async fn stop(&self) {
        let (ctl, data) = (self.bin.join("pg_ctl"), self.data());
        tokio::task::spawn_blocking(move || {
            as_postgres(&ctl, &["-D", &data, "-m", "fast", "-w", "-t", "60", "stop"])
        })
        .await
        .expect("pg_ctl stop");
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub async fn start_again(&self) {
        let (ctl, data) = (self.bin.join("pg_ctl"), self.data());
        let log = self.base.join("postgres.log").display().to_string();
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c max_connections=100 \
             -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.base.join("sock").display()
        );
        tokio::task::spawn_blocking(move || {
            as_postgres(
                &ctl,
                &[
                    "-D", &data, "-l", &log, "-o", &opts, "-w", "-t", "60", "start",
                ],
            )
        })
        .await
        .expect("pg_ctl start");
    }

    fn data(&self) -> String {
        self.base.join("data").display().to_string()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let ctl = self.bin.join("pg_ctl");
        let _ = postgres_command(&ctl, &["-D", &self.data(), "-m", "immediate", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// The newest installed server's bin dir (Debian's /usr/bin wrappers need a
/// cluster registry we do not use), as deploy/local/lib.sh picks it.
fn pg_bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("postgresql is installed (deploy/local/test.sh installs it)")
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").exists())
        .collect();
    dirs.sort_by_key(|p| {
        p.parent()
            .and_then(Path::file_name)
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    dirs.pop()
        .expect("a postgresql server under /usr/lib/postgresql")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.trim_ascii() == b"0")
        .unwrap_or(false)
}

fn postgres_command(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

fn as_postgres(program: &Path, args: &[&str]) {
    let output = postgres_command(program, args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?} failed: {}{}",
        program.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}
