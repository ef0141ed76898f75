//! The purchase path end to end, on real Redis, PostgreSQL and broker:
//! sell exactly the stock, one per user, and lose nothing.
// The read path is tested beside the purchase path: one binary less to link.
#[path = "purchase_path/read_path.rs"]
mod read_path;
#[path = "purchase_path/redis_cluster.rs"]
mod redis_cluster;
#[path = "purchase_path/redis_tls.rs"]
mod redis_tls;

use std::time::Duration;

use chrono::Utc;
use futures::stream::{self, StreamExt};
use serde_json::json;

use seckill_tests::{assert_error, wait_until, Stack};

/// Fires one purchase per token, `in_flight` at a time; returns the statuses.
async fn burst(stack: &Stack, sale: &str, tokens: &[String], in_flight: usize) -> Vec<u16> {
    stream::iter(tokens)
        .map(|t| async move { stack.purchase(t, sale, json!({})).await.0 })
        .buffer_unordered(in_flight)
        .collect()
        .await
}

fn count(statuses: &[u16], code: u16) -> usize {
    statuses.iter().filter(|s| **s == code).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_oversell_under_a_burst() {
    let stack = Stack::start().await;
    let sale = stack.active_sale(100).await;
    let tokens: Vec<String> = (0..2000)
        .map(|i| stack.token(&format!("buyer-{i}")))
        .collect();

    let statuses = burst(&stack, &sale, &tokens, 200).await;

    assert_eq!(
        count(&statuses, 202),
        100,
        "exactly the stock is accepted; statuses: {:?}\n{}",
        statuses
            .iter()
            .filter(|s| **s != 202 && **s != 410)
            .collect::<Vec<_>>(),
        stack.logs()
    );
    assert_eq!(count(&statuses, 410), 1900, "everyone else hears sold_out");
    let orders_sql =
        format!("SELECT count(*) AS n FROM orders WHERE sale_id = '{sale}' AND status = 'created'");
    wait_until(
        "all 100 orders to be persisted",
        Duration::from_secs(60),
        || async { (Stack::count(&stack.orders_db, &orders_sql).await == 100).then_some(()) },
    )
    .await;
    let reservations = format!(
        "SELECT count(*) AS n FROM reservations WHERE sale_id = '{sale}' AND status = 'reserved'"
    );
    assert_eq!(Stack::count(&stack.inventory_db, &reservations).await, 100);
    let users = format!("SELECT count(DISTINCT user_id) AS n FROM orders WHERE sale_id = '{sale}'");
    assert_eq!(Stack::count(&stack.orders_db, &users).await, 100);
    assert_eq!(stack.db_stock(&sale).await, 0);
    assert_eq!(stack.redis_stock(&sale).await, 0);
    assert_eq!(stack.redis_buyers(&sale).await, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_purchase_per_user() {
    let stack = Stack::start().await;
    let sale = stack.active_sale(10).await;
    let tokens: Vec<String> = (0..50).map(|_| stack.token("greedy")).collect();

    let statuses = burst(&stack, &sale, &tokens, 50).await;

    assert_eq!(count(&statuses, 202), 1, "{statuses:?}");
    assert_eq!(count(&statuses, 409), 49, "{statuses:?}");
    assert_eq!(stack.redis_stock(&sale).await, 9);
    let sql = format!("SELECT count(*) AS n FROM orders WHERE sale_id = '{sale}'");
    wait_until(
        "the one order to be persisted",
        Duration::from_secs(30),
        || async { (Stack::count(&stack.orders_db, &sql).await == 1).then_some(()) },
    )
    .await;
    assert_eq!(stack.db_stock(&sale).await, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_status_moves_from_queued_to_created_for_its_owner_only() {
    let stack = Stack::start().await;
    let sale = stack.active_sale(5).await;
    let alice = stack.token("alice");
    let (status, body) = stack.purchase(&alice, &sale, json!({"quantity": 1})).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "queued");
    let order_id = body["order_id"].as_str().expect("order id").to_owned();
    let path = format!("/api/v1/orders/{order_id}");

    let (status, body) = stack.get(&path, Some(&alice)).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        ["queued", "created"].contains(&body["status"].as_str().unwrap_or_default()),
        "{body}"
    );
    assert_eq!(body["sale_id"], sale.as_str());

    wait_until(
        "the order to be created",
        Duration::from_secs(30),
        || async { (stack.get(&path, Some(&alice)).await.1["status"] == "created").then_some(()) },
    )
    .await;
    let (status, body) = stack.get(&path, Some(&stack.token("mallory"))).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("order_not_found"))
    );
    assert_eq!(stack.get(&path, None).await.0, 401);

    // The read path may lag the stock by its cache's bound (`read_cache.fresh_ms`).
    let body = wait_until(
        "the sale's answer to show the unit sold",
        Duration::from_secs(2),
        || async {
            let (status, body) = stack.get(&format!("/api/v1/sales/{sale}"), None).await;
            (status == 200 && body["stock_remaining"] == 4).then_some(body)
        },
    )
    .await;
    assert_eq!(body["sale_id"], sale.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sale_window_is_enforced_and_stock_untouched() {
    let stack = Stack::start().await;
    let now = Utc::now();
    let later = stack
        .create_sale(
            10,
            now + chrono::Duration::hours(1),
            now + chrono::Duration::hours(2),
        )
        .await;
    let over = stack
        .create_sale(
            10,
            now - chrono::Duration::hours(2),
            now - chrono::Duration::hours(1),
        )
        .await;
    let token = stack.token("early-bird");

    let (status, body) = stack.purchase(&token, &later, json!({})).await;
    assert_error(status, &body, 403, "sale_not_started");
    let (status, body) = stack.purchase(&token, &over, json!({})).await;
    assert_error(status, &body, 403, "sale_ended");

    for sale in [&later, &over] {
        assert_eq!(stack.redis_stock(sale).await, 10);
        assert_eq!(stack.redis_buyers(sale).await, 0);
        assert_eq!(stack.db_stock(sale).await, 10);
    }
}

/// With the broker gone the gateway cannot know whether an order reached
/// it: it answers in time that the outcome is unknown, names the order, and
/// keeps the unit for it (never resold while the order may still arrive).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_answers_outcome_unknown_in_time_and_keeps_the_unit() {
    let stack = Stack::start().await;
    let sale = stack.active_sale(10).await;
    let token = stack.token("unlucky");
    let mut stack = stack;
    stack.broker.kill();

    let started = std::time::Instant::now();
    let (status, body) = stack.purchase(&token, &sale, json!({})).await;
    let took = started.elapsed();

    assert_error(status, &body, 504, "order_outcome_unknown");
    // Configured produce timeout is 2 s; the answer comes within it plus slack.
    assert!(took < Duration::from_secs(6), "504 took {took:?}");
    let order = body["error"]["order_id"].as_str().expect("order id");
    assert_eq!(stack.redis_stock(&sale).await, 9, "the unit is kept");
    let (status, seen) = stack
        .get(&format!("/api/v1/orders/{order}"), Some(&token))
        .await;
    assert_eq!(
        (status, seen["status"].as_str()),
        (200, Some("queued")),
        "{seen}"
    );
    let (status, body) = stack.purchase(&token, &sale, json!({})).await;
    assert_error(status, &body, 409, "already_purchased");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_accepted_order_is_persisted_once_across_an_order_service_restart() {
    let mut stack = Stack::start().await;
    let sale = stack.active_sale(300).await;
    let tokens: Vec<String> = (0..300).map(|i| stack.token(&format!("r-{i}"))).collect();

    let first = burst(&stack, &sale, &tokens[..150], 50).await;
    stack.orders.kill();
    let second = burst(&stack, &sale, &tokens[150..], 50).await;
    stack.orders.start();
    let accepted = count(&first, 202) + count(&second, 202);
    assert_eq!(
        accepted, 300,
        "all purchases are accepted while order-service is down"
    );

    let sql = format!("SELECT count(*) AS n FROM orders WHERE sale_id = '{sale}'");
    wait_until(
        "every accepted order to be persisted",
        Duration::from_secs(90),
        || async { (Stack::count(&stack.orders_db, &sql).await == 300).then_some(()) },
    )
    .await;
    let distinct = format!("SELECT count(DISTINCT order_id) AS n FROM orders WHERE sale_id = '{sale}' AND status = 'created'");
    assert_eq!(Stack::count(&stack.orders_db, &distinct).await, 300);
    assert_eq!(stack.db_stock(&sale).await, 0);
}

/// EVALSHA calls Redis has served so far (`INFO commandstats`).
async fn script_calls(stack: &Stack) -> u64 {
    let mut redis = stack.redis().await;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut redis)
        .await
        .expect("INFO commandstats");
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// One raw HTTP/1.1 request on `socket`; returns the response head and body.
async fn raw_request(socket: &mut tokio::net::TcpStream, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    socket.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // The error body is small and ends the response: read until it is complete.
    while !String::from_utf8_lossy(&answer).ends_with('}') {
        let n = tokio::time::timeout(Duration::from_secs(10), socket.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed after {:?}",
            String::from_utf8_lossy(&answer)
        );
        answer.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_sold_out_sale_is_answered_from_memory_on_a_kept_alive_connection() {
    let stack = Stack::start_with(seckill_tests::StackOptions {
        // A private Redis, so its command counts are this test's alone; a
        // sold-out memory that outlives the test.
        private_redis: true,
        gateway_env: vec![("SECKILL_SOLD_OUT_CACHE_MS".into(), "600000".into())],
        ..Default::default()
    })
    .await;
    let sale = stack.active_sale(1).await;
    assert_eq!(
        stack
            .purchase(&stack.token("first"), &sale, json!({}))
            .await
            .0,
        202
    );
    // Redis says sold out once; the gateway remembers it.
    let (status, body) = stack
        .purchase(&stack.token("second"), &sale, json!({}))
        .await;
    assert_error(status, &body, 410, "sold_out");
    let calls_before = script_calls(&stack).await;

    let tokens: Vec<String> = (0..40).map(|i| stack.token(&format!("late-{i}"))).collect();
    let statuses = burst(&stack, &sale, &tokens, 10).await;
    assert_eq!(count(&statuses, 410), 40, "{statuses:?}");
    // Several answers on one connection: the body is read, keep-alive holds.
    let port = stack.gateway_url.rsplit(':').next().expect("port");
    let mut socket = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("connect");
    for user in ["kept-0", "kept-1", "kept-2"] {
        let answer = raw_request(
            &mut socket,
            &format!(
                "POST /api/v1/sales/{sale}/orders HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
                 Content-Type: application/json\r\nContent-Length: 15\r\n\r\n{{\"quantity\": 1}}",
                stack.token(user)
            ),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 410"), "{answer}");
        assert!(answer.contains("\"code\":\"sold_out\""), "{answer}");
        assert!(
            !answer.to_ascii_lowercase().contains("connection: close"),
            "{answer}"
        );
    }
    // Answered before authentication: the answer is public and costs nothing.
    let anonymous = stack
        .http
        .post(format!("{}/api/v1/sales/{sale}/orders", stack.gateway_url))
        .json(&json!({}))
        .send()
        .await
        .expect("gateway reachable");
    assert_eq!(anonymous.status().as_u16(), 410);
    assert_eq!(script_calls(&stack).await, calls_before, "no Redis call");
    // Other routes of the same sale are not affected.
    assert_eq!(
        stack.get(&format!("/api/v1/sales/{sale}"), None).await.0,
        200
    );
    assert_eq!(stack.redis_stock(&sale).await, 0);
}

/// The front door reads a sold-out purchase's body before answering, so
/// keep-alive holds; a body that never arrives is cut at the request
/// deadline instead of holding the connection for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sold_out_answer_does_not_wait_for_ever_for_a_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stack = Stack::start_with(seckill_tests::StackOptions {
        gateway_env: vec![
            ("SECKILL_SOLD_OUT_CACHE_MS".into(), "600000".into()),
            ("SECKILL_REQUEST_TIMEOUT_MS".into(), "3000".into()),
        ],
        ..Default::default()
    })
    .await;
    let sale = stack.active_sale(1).await;
    assert_eq!(
        stack.purchase(&stack.token("a"), &sale, json!({})).await.0,
        202
    );
    let (status, body) = stack.purchase(&stack.token("b"), &sale, json!({})).await;
    assert_error(status, &body, 410, "sold_out");

    let port = stack.gateway_url.rsplit(':').next().expect("port");
    let mut socket = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .expect("connect");
    // Promises 100 bytes, sends 2, and then nothing.
    let head = format!(
        "POST /api/v1/sales/{sale}/orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: 100\r\n\r\n{{}}"
    );
    socket.write_all(head.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), socket.read_to_end(&mut answer)).await;
    assert!(
        read.is_ok(),
        "the connection was held past the request deadline"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 410"), "{answer}");
}
