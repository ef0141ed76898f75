//! Redis against PostgreSQL: drift injected by hand is repaired in the safe
//! direction and reported, and a Redis that comes back empty mid-sale is
//! warmed again without selling more than the real remainder.
#[path = "lifecycle/support.rs"]
mod support;

use std::time::Duration;

use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

use seckill_common::domain::{OrderId, SaleId};
use seckill_tests::{assert_error, poll_until, wait_until, Stack, StackOptions};

use support::*;

const GRACE_MS: i64 = 500;

fn options(extra: &[(&str, &str)], private_redis: bool) -> StackOptions {
    let grace = GRACE_MS.to_string();
    let ours = [
        ("SECKILL_RECONCILE__GRACE_MS", grace.as_str()),
        // Periodic runs would race the on-demand ones whose reports we read.
        ("SECKILL_RECONCILE__INTERVAL_MS", "3600000"),
    ];
    StackOptions {
        env: fast_lifecycle_with(&[ours.as_slice(), extra].concat()),
        private_redis,
        ..Default::default()
    }
}

/// Runs a reconciliation; the report's entry for `sale`.
async fn reconcile(stack: &Stack, sale: &str) -> (Value, Value) {
    let (status, report) = stack.admin_post("/api/v1/admin/reconcile", json!({})).await;
    assert_eq!(status, 200, "{report}");
    let entry = report["sales"]
        .as_array()
        .expect("sales")
        .iter()
        .find(|s| s["sale_id"] == sale)
        .cloned()
        .unwrap_or(Value::Null);
    (report, entry)
}

async fn redis_cmd<T: redis::FromRedisValue>(stack: &Stack, cmd: &mut redis::Cmd) -> T {
    let mut con = stack.redis().await;
    cmd.query_async(&mut con).await.expect("redis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_repairs_injected_drift_and_reports_what_it_changed() {
    let stack = Stack::start_with(options(&[], false)).await;
    let sale = sale_with(&stack, 10, 900, 100).await;
    let (alice, bob) = (stack.token("alice"), stack.token("bob"));
    let a = buy(&stack, &alice, &sale).await;
    let b = buy(&stack, &bob, &sale).await;
    wait_order_status(&stack, &a, "created").await;
    wait_order_status(&stack, &b, "created").await;

    let (_, clean) = reconcile(&stack, &sale).await;
    assert_eq!(clean["orphan_buyers_removed"], json!([]), "{clean}");
    assert_eq!(clean["stock_adjustment"], 0, "{clean}");

    // A gateway that died between the Lua step and Kafka: a buyer and a
    // taken unit in Redis, no order anywhere. And a counter 3 too high.
    let ghost = OrderId::new(&SaleId::parse(&sale).expect("sale id"));
    let buyers = format!("seckill:{{{sale}}}:buyers");
    let hash = format!("seckill:{{{sale}}}:sale");
    let _: i64 = redis_cmd(
        &stack,
        redis::cmd("HSET")
            .arg(&buyers)
            .arg("ghost")
            .arg(ghost.to_string()),
    )
    .await;
    let _: i64 = redis_cmd(
        &stack,
        redis::cmd("HINCRBY").arg(&hash).arg("stock").arg(-1 + 3),
    )
    .await;
    assert_eq!(stack.redis_stock(&sale).await, 10);

    // Seen for the first time, the ghost may still be in flight: pending, and
    // its unit counts against the stock (10 is lowered to 8 - 1).
    let (report, entry) = reconcile(&stack, &sale).await;
    assert_eq!(entry["pending_buyers"], 1, "{report}");
    assert_eq!(entry["orphan_buyers_removed"], json!([]), "{report}");
    assert_eq!(entry["stock_adjustment"], -3, "{entry}");
    // Seen again after the grace period (by the reconciler's own clock), with
    // the reservation consumer caught up: an orphan, and its unit comes back.
    let entry = wait_until(
        "the ghost to be judged an orphan",
        Duration::from_secs(10),
        || async {
            let (_, entry) = reconcile(&stack, &sale).await;
            (entry["orphan_buyers_removed"] == json!([ghost.to_string()])).then_some(entry)
        },
    )
    .await;
    assert_eq!(entry["db_stock_remaining"], 8, "{entry}");
    assert_eq!(entry["redis_stock"], 7, "{entry}");
    assert_eq!(entry["stock_adjustment"], 1, "{entry}");
    assert_eq!(
        stack.redis_stock(&sale).await,
        8,
        "Redis holds what the database holds"
    );
    assert_eq!(stack.redis_buyers(&sale).await, 2);
    let (status, _) = stack
        .purchase(&stack.token("ghost"), &sale, json!({}))
        .await;
    assert_eq!(status, 202, "the ghost's purchase record is gone");

    // A counter that is too low is raised, to what the database allows.
    let ghost_order = wait_until("the ghost's real order", Duration::from_secs(30), || async {
        text(&stack.orders_db, &format!("SELECT order_id AS v FROM orders WHERE sale_id = '{sale}' AND user_id = 'ghost' AND status = 'created'")).await
    })
    .await;
    let _: i64 = redis_cmd(
        &stack,
        redis::cmd("HINCRBY").arg(&hash).arg("stock").arg(-4),
    )
    .await;
    let (_, entry) = reconcile(&stack, &sale).await;
    assert_eq!(entry["stock_adjustment"], 4, "{entry}");
    assert_eq!(stack.redis_stock(&sale).await, 7);

    // A reservation Redis forgot: the buyer is written back, so they cannot buy twice.
    let _: i64 = redis_cmd(&stack, redis::cmd("HDEL").arg(&buyers).arg("alice")).await;
    let (_, entry) = reconcile(&stack, &sale).await;
    assert_eq!(entry["buyers_restored"], json!([a]), "{entry}");
    let (status, body) = stack.purchase(&alice, &sale, json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_purchased"))
    );

    let (report, entry) = reconcile(&stack, &sale).await;
    assert_eq!(
        (
            entry["stock_adjustment"].as_i64(),
            entry["redis_stock"].as_i64(),
            entry["db_stock_remaining"].as_i64()
        ),
        (Some(0), Some(7), Some(7)),
        "{report}"
    );
    assert_eq!(entry["orphan_buyers_removed"], json!([]));
    assert_eq!(entry["buyers_restored"], json!([]));
    assert!(!ghost_order.is_empty());

    // The repairs are counted for Prometheus.
    let metrics = stack
        .http
        .get(format!("{}/metrics", stack.inventory_url))
        .send()
        .await
        .expect("inventory-service")
        .text()
        .await
        .expect("text");
    for line in [
        "seckill_reconcile_repairs_total{kind=\"orphan_buyer\"} 1",
        "seckill_reconcile_repairs_total{kind=\"buyer_restored\"} 1",
        "seckill_reconcile_repairs_total{kind=\"stock_raised\"} 2",
        "seckill_reconcile_repairs_total{kind=\"stock_lowered\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_flushed_mid_sale_is_warmed_again_without_overselling() {
    const STOCK: i64 = 40;
    let stack = Stack::start_with(options(
        &[
            ("SECKILL_RECONCILE__REWARM_CHECK_MS", "100"),
            ("SECKILL_RECONCILE__REWARM_DELAY_MS", "2000"),
        ],
        true,
    ))
    .await;
    let sale = sale_with(&stack, STOCK, 900, 100).await;
    let tokens: Vec<String> = (0..200).map(|i| stack.token(&format!("f-{i}"))).collect();
    let purchase = |token: &String| {
        let (stack, sale) = (&stack, &sale);
        let token = token.clone();
        async move { stack.purchase(&token, sale, json!({})).await }
    };

    // First wave, with Redis emptied in the middle of it.
    let first = stream::iter(&tokens[..30])
        .map(purchase)
        .buffer_unordered(10);
    let flush = async {
        wait_until(
            "a few purchases before the flush",
            Duration::from_secs(30),
            || async { (stack.redis_buyers(&sale).await >= 5).then_some(()) },
        )
        .await;
        let _: () = redis_cmd(&stack, &mut redis::cmd("FLUSHALL")).await;
    };
    let (first, ()) = tokio::join!(first.collect::<Vec<(u16, Value)>>(), flush);

    // Gone from Redis, the sale sells nothing until it is warmed again.
    wait_until(
        "the sale to be warmed again",
        Duration::from_secs(60),
        || async {
            let exists: bool = redis_cmd(
                &stack,
                redis::cmd("EXISTS").arg(format!("seckill:{{{sale}}}:sale")),
            )
            .await;
            exists.then_some(())
        },
    )
    .await;
    let second: Vec<(u16, Value)> = stream::iter(&tokens[30..])
        .map(purchase)
        .buffer_unordered(20)
        .collect()
        .await;

    let accepted: Vec<String> = first
        .iter()
        .chain(&second)
        .filter(|(s, _)| *s == 202)
        .map(|(_, b)| b["order_id"].as_str().expect("order id").to_owned())
        .collect();
    // While the sale is missing, a purchase hears "retry" (503), never "no such sale".
    let unexpected: Vec<_> = first
        .iter()
        .chain(&second)
        .filter(|(s, b)| {
            let restoring = *s == 503 && b["error"]["code"] == "service_unavailable";
            ![202, 410].contains(s) && !restoring
        })
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    wait_orders(&stack, &sale, accepted.len() as i64).await;

    let reserved = format!(
        "SELECT count(*) AS n FROM reservations WHERE sale_id = '{sale}' AND status = 'reserved'"
    );
    let sold = Stack::count(&stack.inventory_db, &reserved).await;
    let remaining = stack.db_stock(&sale).await;
    let restoring = first
        .iter()
        .chain(&second)
        .filter(|(s, _)| *s == 503)
        .count();
    println!(
        "{} accepted, {restoring} refused while the sale was missing, {sold} sold, {remaining} remaining",
        accepted.len()
    );
    assert!(sold <= STOCK, "oversold: {sold} of {STOCK}");
    assert_eq!(sold + remaining, STOCK, "sold plus remaining is the total");
    assert_eq!(sold, STOCK, "the sale sold out after the warm-up");
    let created =
        format!("SELECT count(*) AS n FROM orders WHERE sale_id = '{sale}' AND status = 'created'");
    assert_eq!(
        Stack::count(&stack.orders_db, &created).await,
        sold,
        "one order per unit sold"
    );
    stack.wait_redis_holds(&sale, remaining, sold).await;
    let (_, entry) = reconcile(&stack, &sale).await;
    assert_eq!(
        entry["stock_adjustment"], 0,
        "nothing left to repair: {entry}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_redis_lost_answers_retry_until_it_is_restored() {
    let mut stack = Stack::start_with(options(&[], true)).await;
    let sale = sale_with(&stack, 5, 900, 1).await;
    // Redis loses everything while nobody can restore it.
    seckill_tests::blocking(|| stack.inventory.kill());
    let _: () = redis_cmd(&stack, &mut redis::cmd("FLUSHALL")).await;
    let token = stack.token("patient");
    let (status, body) = stack.purchase(&token, &sale, json!({})).await;
    assert_error(status, &body, 503, "service_unavailable");

    stack.inventory.start();
    let order = wait_until(
        "the restored sale to sell",
        Duration::from_secs(30),
        || async {
            let (status, body) = stack.purchase(&token, &sale, json!({})).await;
            (status == 202).then_some(body)
        },
    )
    .await;
    assert!(order["order_id"].is_string(), "{order}");
    // With Redis whole again, an unknown sale is simply unknown.
    let (status, body) = stack.purchase(&token, "no-such-sale", json!({})).await;
    assert_error(status, &body, 404, "sale_not_found");
}

/// Redis emptied after inventory-service found every sale there and before
/// it marked Redis warm (held open here by a test-only hook): the marker
/// must not stay, or the gateways would answer `sale_not_found` for a sale
/// that is only being restored. (Seen once in the flush test above, before
/// the marker was checked again after it is set.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_emptied_while_it_is_marked_warm_is_not_marked_warm() {
    let mut stack = Stack::start_with(options(
        &[
            ("SECKILL_RECONCILE__REWARM_CHECK_MS", "100"),
            ("SECKILL_RECONCILE__REWARM_DELAY_MS", "4000"),
        ],
        true,
    ))
    .await;
    let sale = sale_with(&stack, 5, 900, 1).await;
    let holds = |stack: &Stack| {
        std::fs::read_to_string(stack.inventory.log_path())
            .unwrap_or_default()
            .matches("holding the warm marker")
            .count()
    };
    seckill_tests::blocking(|| stack.inventory.kill());
    stack
        .inventory
        .env_mut()
        .insert("SECKILL_FAULT__MARK_WARM_DELAY_MS".into(), "1500".into());
    stack.inventory.start();
    stack.wait_ready(&stack.inventory_url).await;

    // A hold that begins now found the sale in Redis; empty Redis within it.
    let before = holds(&stack);
    wait_until(
        "a hold of the warm marker",
        Duration::from_secs(30),
        || async { (holds(&stack) > before).then_some(()) },
    )
    .await;
    let _: () = redis_cmd(&stack, &mut redis::cmd("FLUSHALL")).await;

    // Until the re-warm (after its 4 s delay), a purchase hears "retry": for
    // 3 s, or until one is accepted (re-warmed already: nothing more to see).
    let token = stack.token("patient");
    let _ = poll_until(
        Duration::from_secs(3),
        Duration::from_millis(100),
        || async {
            let (status, body) = stack.purchase(&token, &sale, json!({})).await;
            if status == 202 {
                return Ok(());
            }
            assert_error(status, &body, 503, "service_unavailable");
            Err(())
        },
    )
    .await;
}
