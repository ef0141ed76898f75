//! The read path (`gateway::catalog`): what the crowd refreshes before and
//! during a sale never reaches PostgreSQL in proportion to the crowd.
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::stream::{self, StreamExt};
use serde_json::Value;

use seckill_tests::scrape::metric_sum;
use seckill_tests::{wait_until, Stack, StackOptions};

const FILLS: &str = "seckill_read_cache_fill_seconds_count";

async fn sale_fills(stack: &Stack, base: &str) -> f64 {
    metric_sum(&stack.http, base, FILLS, &[("what", "sale")]).await
}

async fn get_at(stack: &Stack, base: &str, path: &str) -> (u16, Option<String>, Value) {
    let response = stack
        .http
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("gateway reachable");
    let status = response.status().as_u16();
    let age = response
        .headers()
        .get("age")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (status, age, response.json().await.unwrap_or(Value::Null))
}

/// Redis holds every unfinished sale once inventory-service has set its
/// warm marker; the read path's filter relies on it.
async fn wait_warm(stack: &Stack) {
    wait_until(
        "Redis to be marked warm",
        Duration::from_secs(30),
        || async {
            let mut redis = stack.redis().await;
            let warm: bool = redis::cmd("EXISTS")
                .arg(seckill_common::stock::WARM_MARKER)
                .query_async(&mut redis)
                .await
                .ok()?;
            warm.then_some(())
        },
    )
    .await;
}

fn stack_with(gateway: &[(&str, &str)]) -> StackOptions {
    StackOptions {
        gateway_env: gateway
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..StackOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_hundred_concurrent_reads_of_a_cold_key_make_one_fill() {
    // Entries live long enough that every read of the burst meets the first
    // fill's entry; the warmer keeps nothing warm (a sale an hour away, and
    // no warm-ahead), so the key is cold until the burst.
    let stack = Stack::start_with(stack_with(&[
        ("SECKILL_READ_CACHE__FRESH_MS", "10000"),
        ("SECKILL_READ_CACHE__WARM_AHEAD_SECS", "0"),
    ]))
    .await;
    let now = Utc::now();
    let sale = stack
        .create_sale(
            10,
            now + chrono::Duration::hours(1),
            now + chrono::Duration::hours(2),
        )
        .await;
    let before = sale_fills(&stack, &stack.gateway_url).await;

    let statuses: Vec<u16> = stream::iter(0..500)
        .map(|_| async {
            get_at(&stack, &stack.gateway_url, &format!("/api/v1/sales/{sale}"))
                .await
                .0
        })
        .buffer_unordered(500)
        .collect()
        .await;

    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let fills = sale_fills(&stack, &stack.gateway_url).await - before;
    assert_eq!(
        fills, 1.0,
        "500 concurrent reads of a cold key made {fills} fills"
    );
    let hits = metric_sum(
        &stack.http,
        &stack.gateway_url,
        "seckill_read_cache_lookups_total",
        &[("result", "hit")],
    )
    .await;
    assert!(
        hits >= 499.0,
        "the other 499 waited for the fill: {hits} hits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_gateway_has_its_coming_sales_in_memory_before_it_is_ready() {
    let stack = Stack::start().await;
    let now = Utc::now();
    // Two hours away: beyond the warm-ahead horizon, so only the warm-up
    // before ready puts it in memory.
    let soon = stack
        .create_sale(
            3,
            now + chrono::Duration::hours(2),
            now + chrono::Duration::hours(3),
        )
        .await;
    // Entries that outlive the test, so that what is measured is the warm-up.
    let (_gateway, url) = stack
        .extra_gateway("warm", &[("SECKILL_READ_CACHE__FRESH_MS", "10000")])
        .await;
    let lookups = |result: &'static str| {
        let url = url.clone();
        let stack = &stack;
        async move {
            metric_sum(
                &stack.http,
                &url,
                "seckill_read_cache_lookups_total",
                &[("result", result)],
            )
            .await
        }
    };
    let (filled, hits) = (lookups("filled").await, lookups("hit").await);
    let (status, _, body) = get_at(&stack, &url, &format!("/api/v1/sales/{soon}")).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("upcoming")),
        "{body}"
    );
    assert_eq!(
        lookups("filled").await - filled,
        0.0,
        "the first read filled nothing"
    );
    assert_eq!(lookups("hit").await - hits, 1.0, "the first read was a hit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_made_up_ids_never_reaches_postgresql() {
    // The warmer would keep an active sale fresh; the real sale beside the
    // made-up ids is an hour away and nothing is warmed ahead, so that every
    // fill counted is one of the flood's.
    let stack = Stack::start_with(stack_with(&[
        ("SECKILL_READ_CACHE__NEGATIVE_MS", "60000"),
        ("SECKILL_READ_CACHE__WARM_AHEAD_SECS", "0"),
    ]))
    .await;
    let now = Utc::now();
    stack
        .create_sale(
            1,
            now + chrono::Duration::hours(1),
            now + chrono::Duration::hours(2),
        )
        .await;
    wait_warm(&stack).await;
    let inventory = stack.inventory_url.clone();
    let selects = || {
        metric_sum(
            &stack.http,
            &inventory,
            "seckill_db_query_duration_seconds_count",
            &[("operation", "SELECT")],
        )
    };
    let sale_reads = || {
        metric_sum(
            &stack.http,
            &inventory,
            "seckill_http_requests_total",
            &[("route", "/internal/sales/{sale_id}")],
        )
    };
    let (selects_before, reads_before) = (selects().await, sale_reads().await);
    let fills_before = sale_fills(&stack, &stack.gateway_url).await;

    let ids: Vec<String> = (0..100)
        .map(|i| format!("madeup{i:04}x{}", stack.id))
        .collect();
    let answers: Vec<(u16, Value)> = stream::iter(0..5_000)
        .map(|i| {
            let path = format!("/api/v1/sales/{}", ids[i % ids.len()]);
            let stack = &stack;
            async move {
                let (status, _, body) = get_at(stack, &stack.gateway_url, &path).await;
                (status, body)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    // Malformed ids are refused by the gateway itself.
    for bad in ["bad%20id", "x%3By", &"z".repeat(65)] {
        let (status, _, body) =
            get_at(&stack, &stack.gateway_url, &format!("/api/v1/sales/{bad}")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (404, Some("sale_not_found"))
        );
    }

    assert!(
        answers
            .iter()
            .all(|(s, b)| *s == 404 && b["error"]["code"] == "sale_not_found"),
        "every made-up id is 404 sale_not_found"
    );
    let fills = sale_fills(&stack, &stack.gateway_url).await - fills_before;
    assert!(
        fills <= 100.0,
        "at most one fill per id per negative TTL: {fills}"
    );
    let reads = sale_reads().await - reads_before;
    assert_eq!(reads, 0.0, "no made-up id reached inventory-service");
    let selects = selects().await - selects_before;
    assert!(
        selects <= 100.0,
        "5,000 reads of 100 made-up ids added {selects} queries (only the background jobs')"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_changes_reach_every_gateway_within_the_bound() {
    let stack = Stack::start().await;
    let (_second, second_url) = stack.extra_gateway("gw2", &[]).await;
    let sale = stack.active_sale(5).await;
    let path = format!("/api/v1/sales/{sale}");
    for base in [&stack.gateway_url, &second_url] {
        let (status, _, body) = get_at(&stack, base, &path).await;
        assert_eq!(
            (status, body["stock_remaining"].as_i64()),
            (200, Some(5)),
            "{body}"
        );
    }

    let (status, body) = stack
        .purchase(&stack.token("alice"), &sale, serde_json::json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let sold = Instant::now();
    // `read_cache.fresh_ms` (250 ms) is the bound; the rest is for a busy
    // machine's HTTP round trips.
    for base in [&stack.gateway_url, &second_url] {
        wait_until(
            "the sale to show 4 left",
            Duration::from_millis(1_000),
            || async {
                let (status, _, body) = get_at(&stack, base, &path).await;
                (status == 200 && body["stock_remaining"] == 4).then_some(())
            },
        )
        .await;
    }
    assert!(sold.elapsed() < Duration::from_millis(1_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_unreachable_a_cached_sale_is_served_stale_and_marked() {
    let stack = Stack::start_with(StackOptions {
        gateway_redis_proxy: true,
        ..StackOptions::default()
    })
    .await;
    let sale = stack.active_sale(3).await;
    let path = format!("/api/v1/sales/{sale}");
    let (status, age, body) = get_at(&stack, &stack.gateway_url, &path).await;
    assert_eq!(
        (status, age, &body["stale_age_ms"]),
        (200, None, &Value::Null),
        "{body}"
    );

    let proxy = stack.redis_proxy.as_ref().expect("redis proxy");
    proxy.cut();
    let stale = wait_until("a stale answer", Duration::from_secs(10), || async {
        let (status, age, body) = get_at(&stack, &stack.gateway_url, &path).await;
        (status == 200 && body["stale_age_ms"].is_u64()).then_some((age, body))
    })
    .await;
    assert!(stale.0.is_some(), "an Age header with the stale answer");
    assert_eq!(stale.1["stock_remaining"], 3);
    // A sale this gateway never read has no copy to fall back on. Created
    // after the cut: before it, the gateway's warmer could have cached it.
    let other = stack.active_sale(3).await;
    let (status, _, body) = get_at(
        &stack,
        &stack.gateway_url,
        &format!("/api/v1/sales/{other}"),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("service_unavailable")),
        "{body}"
    );

    proxy.pass();
    wait_until("a fresh answer again", Duration::from_secs(15), || async {
        let (status, age, body) = get_at(&stack, &stack.gateway_url, &path).await;
        (status == 200 && age.is_none() && body["stale_age_ms"].is_null()).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_list_shows_upcoming_and_active_sales_with_price_and_stock_and_pages() {
    let stack = Stack::start().await;
    let now = Utc::now();
    let active = stack.active_sale(7).await;
    let upcoming = stack
        .create_sale(
            4,
            now + chrono::Duration::hours(1),
            now + chrono::Duration::hours(2),
        )
        .await;

    let (status, _, page) = get_at(&stack, &stack.gateway_url, "/api/v1/sales?limit=100").await;
    assert_eq!(status, 200, "{page}");
    let sales = page["sales"].as_array().expect("sales");
    let ids: Vec<&str> = sales.iter().filter_map(|s| s["sale_id"].as_str()).collect();
    assert_eq!(
        ids,
        [active.as_str(), upcoming.as_str()],
        "by start time: {page}"
    );
    assert_eq!(page["total"], 2);
    assert_eq!(sales[0]["status"], "active");
    assert_eq!(sales[0]["stock_remaining"], 7);
    assert!(sales[0]["unit_price_cents"].is_i64(), "{page}");
    assert_eq!(sales[1]["status"], "upcoming");

    let (_, _, first) = get_at(&stack, &stack.gateway_url, "/api/v1/sales?limit=1").await;
    assert_eq!(
        (
            first["sales"][0]["sale_id"].as_str(),
            first["next_offset"].as_u64()
        ),
        (Some(active.as_str()), Some(1))
    );
    let (_, _, second) = get_at(&stack, &stack.gateway_url, "/api/v1/sales?limit=1&offset=1").await;
    assert_eq!(
        (
            second["sales"][0]["sale_id"].as_str(),
            &second["next_offset"]
        ),
        (Some(upcoming.as_str()), &Value::Null)
    );

    for bad in [
        "limit=0",
        "limit=101",
        "limit=abc",
        "offset=-1",
        "colour=red",
    ] {
        let (status, _, body) =
            get_at(&stack, &stack.gateway_url, &format!("/api/v1/sales?{bad}")).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_query")),
            "{bad}: {body}"
        );
    }
}
