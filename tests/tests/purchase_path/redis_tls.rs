//! Production Redis: TLS (`rediss://`) with the operator's CA, and an ACL
//! user with a password, given apart from the URL as Kubernetes gives
//! secrets. A redis-server of the test's own, with a CA made here.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use seckill_common::settings::{RedisSettings, Secret};
use seckill_tests::process::{free_port, Process};
use seckill_tests::servers::state_dir;
use seckill_tests::{poll_until, Stack};

const USER: &str = "seckill";
const PASSWORD: &str = "tls-test-password-1";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, and a certificate for 127.0.0.1 signed by it. Returns the CA's path.
fn certificates(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).expect("cert dir");
    std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=seckill-test-ca",
            "-days",
            "1",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "1",
            "-extfile",
            "ext",
        ],
    );
    dir.join("ca.crt")
}

fn settings(url: String, password: &str, ca: &Path) -> RedisSettings {
    RedisSettings {
        url: Secret::from(url.as_str()),
        username: Some(USER.into()),
        password: Some(Secret::from(password)),
        tls_ca_file: Some(ca.to_owned()),
        ..RedisSettings::default()
    }
}

async fn ping(settings: &RedisSettings) -> Result<String, String> {
    let client = seckill_common::redis_conn::client(settings).map_err(|e| e.to_string())?;
    let mut con = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .map_err(|_| "connect timed out".to_owned())?
    .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query_async::<String>(&mut con)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reach_a_redis_that_requires_tls_and_an_acl_user() {
    let stack = Stack::start().await;
    let dir = state_dir().join(format!("{}-tls-redis", stack.id));
    let ca = certificates(&dir);
    let port = free_port();
    let file = |name: &str| dir.join(name).display().to_string();
    let mut args: Vec<String> = vec![
        "--port",
        "0",
        "--tls-port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    args.extend([
        "--tls-cert-file".into(),
        file("server.crt"),
        "--tls-key-file".into(),
        file("server.key"),
        "--tls-ca-cert-file".into(),
        file("ca.crt"),
        "--tls-auth-clients".into(),
        "no".into(),
        "--save".into(),
        String::new(),
        "--appendonly".into(),
        "no".into(),
        "--dir".into(),
        dir.display().to_string(),
    ]);
    args.extend(
        [
            "--user",
            USER,
            "on",
            &format!(">{PASSWORD}"),
            "~*",
            "&*",
            "+@all",
            "--user",
            "default",
            "off",
        ]
        .map(String::from),
    );
    let mut redis = Process::new(
        &format!("{}-tls-redis", stack.id),
        PathBuf::from("redis-server"),
        args,
        Default::default(),
    );
    redis.start();

    let url = format!("rediss://127.0.0.1:{port}");
    let good = settings(url.clone(), PASSWORD, &ca);
    poll_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async { ping(&good).await.map(|_| ()).map_err(|_| ()) },
    )
    .await
    .expect("TLS Redis answers PING with the ACL user");
    assert!(
        ping(&settings(url.clone(), "wrong-password-1", &ca))
            .await
            .is_err(),
        "a wrong password is refused"
    );
    let plain = RedisSettings {
        tls_ca_file: None,
        ..settings(format!("redis://127.0.0.1:{port}"), PASSWORD, &ca)
    };
    assert!(
        ping(&plain).await.is_err(),
        "plain TCP to the TLS port fails"
    );
    let unknown_ca = RedisSettings {
        tls_ca_file: None,
        ..good.clone()
    };
    assert!(
        ping(&unknown_ca).await.is_err(),
        "a server certificate the trust store does not know is refused"
    );

    // A gateway configured the way Kubernetes configures it becomes ready:
    // its readiness pings Redis over TLS as the ACL user.
    let ca_path = ca.display().to_string();
    let (gateway, _) = stack
        .extra_gateway(
            "tls",
            &[
                ("SECKILL_REDIS__URL", url.as_str()),
                ("SECKILL_REDIS__USERNAME", USER),
                ("SECKILL_REDIS__PASSWORD", PASSWORD),
                ("SECKILL_REDIS__TLS_CA_FILE", ca_path.as_str()),
            ],
        )
        .await;
    let log = std::fs::read_to_string(gateway.log_path()).expect("gateway log");
    assert!(
        !log.contains(PASSWORD),
        "the Redis password is never logged"
    );
    redis.kill();
}
