//! The storefront and the console in a real browser: Debian's Chromium,
//! driven by Playwright (`tests/browser/*.test.mjs`, run with Node's test
//! runner) against a whole stack started here. What the scenarios cover is
//! at the top of each file; this test gives them the stack, fails with their
//! output, and then checks that every sale they touched is consistent:
//! Redis holds what PostgreSQL holds, and both services agree.
//!
//! Needs `/usr/bin/chromium` and `tests/browser/node_modules`, which the
//! test command installs (`deploy/local/lib.sh`, `ensure_browser`).
//! `SECKILL_UPDATE_SCREENSHOTS=1` writes the screenshots into
//! `docs/screenshots/` (the README links them); otherwise they go to the
//! run's state directory.
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use seckill_tests::invariants::Snapshot;
use seckill_tests::process::binary;
use seckill_tests::stack::{ADMIN_TOKEN, JWT_SECRET};
use seckill_tests::{poll_until, Stack, StackOptions};

/// Every scenario together, Chromium start-ups included.
const SUITE_LIMIT: Duration = Duration::from_secs(600);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

fn screenshots() -> PathBuf {
    if std::env::var("SECKILL_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1") {
        return repo().join("docs/screenshots");
    }
    let state = std::env::var("SECKILL_TEST_STATE_DIR").unwrap_or_else(|_| "/tmp".into());
    PathBuf::from(state).join("screenshots")
}

#[tokio::test]
async fn shoppers_and_an_operator_in_a_real_browser() {
    let suite = repo().join("tests/browser");
    assert!(
        suite.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: `npm ci` there (deploy/local/test.sh does)"
    );
    let chromium = std::env::var("SECKILL_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        PathBuf::from(&chromium).exists(),
        "{chromium} is missing: `apt-get install chromium` (deploy/local/test.sh does)"
    );
    let stack = Stack::start_with(StackOptions {
        gateway_env: vec![
            ("SECKILL_DEV_MODE".into(), "true".into()),
            ("SECKILL_DEV_SIGN_IN".into(), "true".into()),
        ],
        ..StackOptions::default()
    })
    .await;

    let mut node = tokio::process::Command::new("node");
    node.current_dir(&suite)
        .args(["--test", "--test-concurrency=1", "--test-reporter=spec"])
        .env("SECKILL_GATEWAY_URL", &stack.gateway_url)
        .env("SECKILL_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("SECKILL_JWT_SECRET", JWT_SECRET)
        .env("SECKILL_BENCH_BIN", binary("bench"))
        .env("SECKILL_CHROMIUM", &chromium)
        .env("SECKILL_SCREENSHOTS_DIR", screenshots())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let ran = tokio::time::timeout(SUITE_LIMIT, node.output())
        .await
        .unwrap_or_else(|_| panic!("the browser suite took over {SUITE_LIMIT:?}"))
        .expect("node runs (Node.js 20 or later)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    println!("{report}");
    assert!(
        ran.status.success(),
        "the browser suite failed:\n{report}\n{}",
        stack.logs()
    );

    // Every sale the shoppers and the operator touched settles consistent.
    let sales: Vec<String> = {
        use sea_orm::{ConnectionTrait, Statement};
        let rows = stack
            .inventory_db
            .query_all_raw(Statement::from_string(
                sea_orm::DbBackend::Postgres,
                "SELECT id AS sale_id FROM sales",
            ))
            .await
            .expect("list sales");
        rows.iter()
            .map(|r| r.try_get::<String>("", "sale_id").expect("sale_id"))
            .collect()
    };
    assert!(
        sales.len() >= 3,
        "the scenarios created their sales: {sales:?}"
    );
    for sale in &sales {
        let settled = poll_until(
            Duration::from_secs(30),
            Duration::from_millis(200),
            || async {
                let s = Snapshot::take(&stack, sale).await;
                let consistent =
                    s.redis_agrees() && s.databases_agree() && s.sold + s.db_stock == s.total;
                if consistent {
                    Ok(())
                } else {
                    Err(format!("{s:?}"))
                }
            },
        )
        .await;
        if let Err(last) = settled {
            panic!(
                "sale {sale} did not settle consistent: {last}\n{}",
                stack.logs()
            );
        }
    }
}
