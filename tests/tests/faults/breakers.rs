//! Circuit breakers (`gateway::breaker`): while a dependency is down the
//! gateway fails fast, holds no in-flight slot for it, serves what it has
//! cached marked stale, and closes again once the dependency is back.
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

use seckill_common::transport::Transport;
use seckill_tests::scrape::metric_sum;
use seckill_tests::{wait_until, Stack, StackOptions};

/// Half the shortest timeout a refused call would otherwise have waited
/// out (Redis's response timeout, set to 1 s below; upstream 2 s): an
/// answer this quick did not wait for the dependency. Generous, because the
/// whole suite shares two cores; the exact proof is the breaker's own count
/// of refusals.
const FAST: Duration = Duration::from_millis(500);

struct Answer {
    status: u16,
    took: Duration,
    retry_after: Option<String>,
    body: Value,
}

async fn timed(request: reqwest::RequestBuilder) -> Answer {
    let started = Instant::now();
    let response = request.send().await.expect("gateway reachable");
    let took = started.elapsed();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response.json().await.unwrap_or(Value::Null);
    Answer {
        status,
        took,
        retry_after,
        body,
    }
}

fn is_open(a: &Answer) -> bool {
    a.status == 503
        && a.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("circuit open"))
}

/// Every answer is the open breaker's 503, given without waiting.
fn all_refused_at_once(answers: &[Answer]) {
    for a in answers {
        assert!(is_open(a), "{} {}", a.status, a.body);
        assert!(a.took < FAST, "answered in {:?}", a.took);
    }
}

const REFUSED: &str = "seckill_breaker_rejected_total";
const STATE: &str = "seckill_breaker_state";

/// One of the breaker's metrics for `dependency`, as the gateway at `base` reports it.
async fn breaker(stack: &Stack, base: &str, metric: &str, dependency: &str) -> f64 {
    metric_sum(&stack.http, base, metric, &[("dependency", dependency)]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_purchases_fail_fast_reads_go_stale_and_the_breaker_closes_again() {
    let stack = Stack::start_with(StackOptions {
        gateway_redis_proxy: true,
        gateway_env: vec![
            ("SECKILL_BREAKER__FAILURES".into(), "3".into()),
            // Longer than the crowd below takes on a loaded machine: a
            // half-open trial waits for Redis, and the crowd must not.
            ("SECKILL_BREAKER__COOL_DOWN_MS".into(), "3000".into()),
            ("SECKILL_REDIS__RESPONSE_TIMEOUT_MS".into(), "1000".into()),
        ],
        ..StackOptions::default()
    })
    .await;
    let sale = stack.active_sale(50).await;
    let sale_path = format!("{}/api/v1/sales/{sale}", stack.gateway_url);
    assert_eq!(timed(stack.http.get(&sale_path)).await.status, 200);
    let purchase = |user: String| {
        let url = format!("{}/api/v1/sales/{sale}/orders", stack.gateway_url);
        let token = stack.token(&user);
        timed(stack.http.post(url).bearer_auth(token).json(&json!({})))
    };

    let proxy = stack.redis_proxy.as_ref().expect("redis proxy");
    proxy.cut();
    // A few purchases wait out the Redis timeout; then the breaker opens.
    let mut tried = 0;
    let opened = wait_until("the redis breaker to open", Duration::from_secs(30), || {
        tried += 1;
        let user = format!("early-{tried}");
        let purchase = &purchase;
        async move {
            let answer = purchase(user).await;
            assert_ne!(answer.status, 202, "nothing is sold while Redis is away");
            is_open(&answer).then_some(answer)
        }
    })
    .await;
    assert!(opened.retry_after.is_some(), "503 carries Retry-After");
    assert_eq!(
        breaker(&stack, &stack.gateway_url, STATE, "redis").await,
        2.0
    );

    // Open: a crowd of purchases is answered at once, none waits for Redis,
    // and none is refused for want of an in-flight slot.
    let before = breaker(&stack, &stack.gateway_url, REFUSED, "redis").await;
    let answers: Vec<Answer> = stream::iter(0..200)
        .map(|i| purchase(format!("crowd-{i}")))
        .buffer_unordered(50)
        .collect()
        .await;
    all_refused_at_once(&answers);
    // The warmer's reads may add their own refusals.
    let by_breaker = breaker(&stack, &stack.gateway_url, REFUSED, "redis").await - before;
    assert!(
        by_breaker >= 200.0,
        "every purchase refused by the breaker: {by_breaker}"
    );
    // The gateway's other Redis reads are behind the same breaker.
    let token = timed(
        stack
            .http
            .get(format!("{sale_path}/purchase-token"))
            .bearer_auth(stack.token("reader")),
    )
    .await;
    all_refused_at_once(&[token]);
    // Reads answer the last good copy, marked.
    let read = timed(stack.http.get(&sale_path)).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert!(read.body["stale_age_ms"].is_u64(), "{}", read.body);

    proxy.pass();
    let back = Instant::now();
    wait_until(
        "a purchase to succeed after the cool-down plus one probe",
        Duration::from_secs(8),
        || async { (purchase("after".into()).await.status == 202).then_some(()) },
    )
    .await;
    assert!(back.elapsed() < Duration::from_secs(8));
    assert_eq!(
        breaker(&stack, &stack.gateway_url, STATE, "redis").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn inventory_down_uncached_reads_fail_fast_instead_of_piling_up() {
    let mut stack = Stack::start().await;
    stack.inventory.kill();
    // A gateway that has cached nothing: its warm-up finds inventory-service gone.
    let (_gateway, url) = stack
        .extra_gateway(
            "cold",
            &[
                ("SECKILL_BREAKER__FAILURES", "2"),
                ("SECKILL_BREAKER__COOL_DOWN_MS", "30000"),
            ],
        )
        .await;
    let list = format!("{url}/api/v1/sales");
    let opened = wait_until(
        "the inventory breaker to open",
        Duration::from_secs(30),
        || async {
            let answer = timed(stack.http.get(&list)).await;
            assert_ne!(answer.status, 200, "{}", answer.body);
            is_open(&answer).then_some(answer)
        },
    )
    .await;
    assert!(opened.retry_after.is_some());

    let before = breaker(&stack, &url, REFUSED, "inventory-service").await;
    let answers: Vec<Answer> = stream::iter(0..200)
        .map(|_| timed(stack.http.get(&list)))
        .buffer_unordered(50)
        .collect()
        .await;
    all_refused_at_once(&answers);
    // Concurrent misses of the list share one fill, so fewer refusals than
    // answers; but every answer came from the breaker, none from a timeout.
    let by_breaker = breaker(&stack, &url, REFUSED, "inventory-service").await - before;
    assert!(
        by_breaker >= 1.0,
        "the breaker refused the fills: {by_breaker}"
    );
    assert_eq!(breaker(&stack, &url, STATE, "inventory-service").await, 2.0);
}

/// On Redis Streams a purchase whose script answer is lost is answered 504
/// `order_outcome_unknown`. So a half-open breaker must not make a purchase
/// its trial: it sends a PING, and while Redis is still away every purchase
/// is refused unsent, 503, however many cool-downs pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_half_open_breaker_tries_redis_with_a_ping_not_a_purchase() {
    let stack = Stack::start_with(StackOptions {
        transport: Some(Transport::RedisStreams),
        gateway_redis_proxy: true,
        gateway_env: vec![
            ("SECKILL_BREAKER__FAILURES".into(), "3".into()),
            ("SECKILL_BREAKER__COOL_DOWN_MS".into(), "300".into()),
            ("SECKILL_REDIS__RESPONSE_TIMEOUT_MS".into(), "1000".into()),
        ],
        ..StackOptions::default()
    })
    .await;
    let sale = stack.active_sale(50).await;
    let purchase = |user: String| {
        let url = format!("{}/api/v1/sales/{sale}/orders", stack.gateway_url);
        let token = stack.token(&user);
        timed(stack.http.post(url).bearer_auth(token).json(&json!({})))
    };
    stack.redis_proxy.as_ref().expect("redis proxy").cut();
    // Before it opens, a lost answer may be 504: the script may have run.
    let mut tried = 0;
    wait_until("the redis breaker to open", Duration::from_secs(30), || {
        tried += 1;
        let answer = purchase(format!("early-{tried}"));
        async move { is_open(&answer.await).then_some(()) }
    })
    .await;

    // Open, then half-open every 300 ms: a few trials fail while we ask.
    let failed_before = probes(&stack, "failed").await;
    let started = Instant::now();
    let mut asked = 0;
    while probes(&stack, "failed").await - failed_before < 3.0 {
        assert!(
            asked < 200 && started.elapsed() < Duration::from_secs(30),
            "no half-open trial in {asked} purchases"
        );
        asked += 1;
        let answer = purchase(format!("later-{asked}")).await;
        assert!(is_open(&answer), "{} {}", answer.status, answer.body);
    }
    assert_eq!(probes(&stack, "ok").await, 0.0);
}

/// The redis breaker's half-open probes with `outcome` (ok, failed).
async fn probes(stack: &Stack, outcome: &str) -> f64 {
    let labels = [("dependency", "redis"), ("outcome", outcome)];
    metric_sum(
        &stack.http,
        &stack.gateway_url,
        "seckill_breaker_probes_total",
        &labels,
    )
    .await
}
