//! What only the Redis Streams transport does: take over a dead consumer's
//! entries, dead-letter an entry that keeps killing its consumer, trim what
//! every group acknowledged, and share one stream among instances. These
//! stacks run on Streams whatever the run's transport.
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::streams::{StreamInfoConsumersReply, StreamPendingReply};
use serde_json::json;

use seckill_common::domain::SaleId;
use seckill_common::transport::streams::{order_stream, topic_stream};
use seckill_common::transport::Transport;
use seckill_tests::invariants::assert_invariants;
use seckill_tests::scrape::metric_sum;
use seckill_tests::{blocking, dead_letters, poll_until, wait_until, Stack, StackOptions};

use super::Burst;

const GROUP: &str = "inventory-service";

fn streams(env: &[(&str, &str)]) -> StackOptions {
    StackOptions {
        transport: Some(Transport::RedisStreams),
        env: env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..Default::default()
    }
}

/// Pending entries of `group` on `stream`, by consumer name.
async fn pending_by_consumer(stack: &Stack, stream: &str, group: &str) -> Vec<(String, usize)> {
    let mut con = stack.redis().await;
    let reply: StreamInfoConsumersReply = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(stream)
        .arg(group)
        .query_async(&mut con)
        .await
        .unwrap_or_default();
    reply
        .consumers
        .into_iter()
        .map(|c| (c.name, c.pending))
        .collect()
}

async fn stream_len(stack: &Stack, stream: &str) -> i64 {
    let mut con = stack.redis().await;
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut con)
        .await
        .expect("xlen")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_killed_mid_batch_has_its_entries_claimed_by_another() {
    let stack = Stack::start_with(streams(&[])).await;
    // A second inventory-service that holds every batch it reads for a
    // minute: whatever it took is delivered and unacknowledged when it dies.
    let (mut victim, _) = stack
        .extra_replica(
            &stack.inventory,
            "inventory-service",
            "victim",
            &[
                ("HOSTNAME", "victim"),
                ("SECKILL_FAULT__BATCH_DELAY_MS", "60000"),
            ],
        )
        .await;
    let sale = stack.active_sale(300).await;
    let stream = order_stream(&SaleId::parse(&sale).expect("sale id"));
    let burst = Burst::start(&stack, &sale, "claim", 400, 200);
    let held = wait_until(
        "the victim to hold a batch",
        Duration::from_secs(30),
        || async {
            pending_by_consumer(&stack, &stream, GROUP)
                .await
                .into_iter()
                .find(|(name, pending)| name.starts_with("victim-") && *pending > 0)
        },
    )
    .await;
    blocking(|| victim.kill()); // SIGKILL, mid-batch
    let seen = burst.finish().await;
    assert_eq!(seen.accepted.len(), 300, "{seen:?}");

    // The survivor takes the victim's entries over after claim_idle_ms.
    wait_until(
        "the victim's entries to be claimed",
        Duration::from_secs(30),
        || async {
            let now = pending_by_consumer(&stack, &stream, GROUP).await;
            now.iter()
                .all(|(name, pending)| name != &held.0 || *pending == 0)
                .then_some(())
        },
    )
    .await;
    // Every 202 ends `created` exactly once, and Redis and both databases agree.
    assert_invariants(&stack, &sale, &seen.accepted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_that_kills_its_consumer_is_dead_lettered_after_n_deliveries() {
    let mut stack = Stack::start_with(streams(&[("SECKILL_STREAMS__MAX_DELIVERIES", "2")])).await;
    // Only inventory-service dies on this buyer's order; it is restarted
    // each time, as its supervisor would.
    stack
        .inventory
        .env_mut()
        .insert("SECKILL_FAULT__ABORT_ON_USER".into(), "poison".into());
    blocking(|| stack.inventory.kill());
    stack.inventory.start();
    stack.wait_ready(&stack.inventory_url).await;
    let sale = stack.active_sale(10).await;
    let (status, body) = stack
        .purchase(&stack.token("poison"), &sale, json!({}))
        .await;
    assert_eq!(status, 202, "{body}");

    // Delivery 1 and its claim (2) kill the consumer; the third is over
    // max_deliveries and goes to the dead-letter stream instead.
    let mut restarts = 0;
    let lettered = poll_until(Duration::from_secs(90), Duration::from_millis(100), || {
        let done = dead_letters::count(&stack) > 0;
        if !done && !stack.inventory.is_running() {
            stack.inventory.kill(); // reaps the aborted process
            stack.inventory.start();
            restarts += 1;
        }
        std::future::ready(if done { Ok(()) } else { Err(restarts) })
    })
    .await;
    if let Err(restarts) = lettered {
        panic!("no dead letter after {restarts} restarts\n{}", stack.logs());
    }
    assert_eq!(restarts, 2, "the consumer died once per delivery before it");
    let letters = dead_letters::read(&stack, 1).await;
    assert!(
        letters[0].reason().contains("delivered 3 times"),
        "{letters:#?}"
    );
    assert_eq!(
        letters[0].source_topic(),
        format!("{}order-requested", stack.topic_prefix)
    );

    // The stream carries on: the next buyer's order is created.
    stack.wait_ready(&stack.inventory_url).await;
    let (status, body) = stack
        .purchase(&stack.token("after"), &sale, json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    let order = body["order_id"].as_str().expect("order id").to_owned();
    let created = format!(
        "SELECT count(*) AS n FROM orders WHERE order_id = '{order}' AND status = 'created'"
    );
    wait_until(
        "the next order to be created",
        Duration::from_secs(30),
        || async { (Stack::count(&stack.orders_db, &created).await == 1).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trimming_keeps_streams_bounded_and_never_drops_an_unacknowledged_entry() {
    let stack = Stack::start_with(streams(&[])).await;
    let sale = stack.active_sale(2_000).await;
    let orders = order_stream(&SaleId::parse(&sale).expect("sale id"));
    let reserved = topic_stream(&format!("{}inventory-events", stack.topic_prefix));
    let burst = Burst::start(&stack, &sale, "trim", 2_000, 500);
    // The longest the sale's order stream gets while the burst runs: trimmed
    // every 500 ms below what its consumer acknowledged, it never holds all
    // the orders (736 of 2000 at most when measured; its consumer lags on
    // two busy cores).
    let longest = Arc::new(AtomicI64::new(0));
    let sampler = {
        let (con, stream) = (stack.redis().await, orders.clone());
        let (finished, longest) = (burst.finished.clone(), longest.clone());
        tokio::spawn(async move {
            // Until the burst has finished (bounded by the poll's deadline).
            poll_until(Duration::from_secs(120), Duration::from_millis(50), || {
                let (mut con, stream, longest) = (con.clone(), stream.clone(), longest.clone());
                let done = finished.load(Ordering::SeqCst);
                async move {
                    let len: i64 = redis::cmd("XLEN")
                        .arg(&stream)
                        .query_async(&mut con)
                        .await
                        .expect("xlen");
                    longest.fetch_max(len, Ordering::SeqCst);
                    done.then_some(()).ok_or(())
                }
            })
            .await
        })
    };

    // order-service frozen for part of the burst: its stream fills with
    // entries nobody acknowledged, which trimming must keep.
    burst.accepted_at_least(300).await;
    let pid = stack.orders.pid().expect("order-service runs").to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    signal("-STOP");
    burst.accepted_at_least(1_000).await;
    let unacknowledged = stream_len(&stack, &reserved).await;
    signal("-CONT");
    let seen = burst.finish().await;
    assert_eq!(seen.accepted.len(), 2_000, "{seen:?}");
    assert_invariants(&stack, &sale, &seen.accepted).await;
    sampler
        .await
        .expect("sampler")
        .expect("the burst finished within the sampler's deadline");
    let longest = longest.load(Ordering::SeqCst);
    eprintln!(
        "longest order stream: {longest}; inventory-events kept while frozen: {unacknowledged}"
    );
    assert!(
        longest < 1_500,
        "the order stream held at most {longest} entries of 2000 orders"
    );
    assert!(
        unacknowledged >= 300,
        "entries order-service had not acknowledged were kept: {unacknowledged}"
    );

    // Once every group acknowledged everything, at most the last entry of
    // each stream remains (MINID keeps the last one delivered).
    for stream in [&orders, &reserved] {
        wait_until(
            &format!("{stream} to be trimmed"),
            Duration::from_secs(30),
            || async { (stream_len(&stack, stream).await <= 1).then_some(()) },
        )
        .await;
    }
    let mut con = stack.redis().await;
    let pending: StreamPendingReply = redis::cmd("XPENDING")
        .arg(&reserved)
        .arg("order-service")
        .query_async(&mut con)
        .await
        .expect("xpending");
    assert_eq!(pending.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_of_each_consumer_share_one_sale() {
    let stack = Stack::start_with(streams(&[])).await;
    let (_inventory, inventory_url) = stack
        .extra_replica(&stack.inventory, "inventory-service", "inv-2", &[])
        .await;
    let (_orders, order_url) = stack
        .extra_replica(&stack.orders, "order-service", "ord-2", &[])
        .await;
    let sale = stack.active_sale(1_000).await;
    let burst = Burst::start(&stack, &sale, "share", 1_000, 400);
    let seen = burst.finish().await;
    assert_eq!(seen.accepted.len(), 1_000, "{seen:?}");
    assert_invariants(&stack, &sale, &seen.accepted).await;

    let processed = |base: String, topic: String| {
        let http = stack.http.clone();
        async move {
            metric_sum(
                &http,
                &base,
                "seckill_consumer_events_processed_total",
                &[("topic", &topic)],
            )
            .await
        }
    };
    let requested = format!("{}order-requested", stack.topic_prefix);
    let reserved = format!("{}inventory-events", stack.topic_prefix);
    let inventory = [
        processed(stack.inventory_url.clone(), requested.clone()).await,
        processed(inventory_url, requested).await,
    ];
    let orders = [
        processed(stack.order_url.clone(), reserved.clone()).await,
        processed(order_url, reserved).await,
    ];
    assert_eq!(inventory.iter().sum::<f64>(), 1_000.0, "{inventory:?}");
    assert!(
        inventory.iter().all(|n| *n > 0.0),
        "both inventory-services worked: {inventory:?}"
    );
    assert!(orders.iter().sum::<f64>() >= 1_000.0, "{orders:?}");
    // The backlog is a metric, as with Kafka: the group's lag and pending
    // count, both 0 once everything was acknowledged (measured every
    // trim_interval_ms).
    let requested_topic = format!("{}order-requested", stack.topic_prefix);
    let backlog = || async {
        let text = stack
            .http
            .get(format!("{}/metrics", stack.inventory_url))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let lag =
            format!("seckill_consumer_lag{{partition=\"all\",topic=\"{requested_topic}\"}} 0");
        let pending = format!("seckill_consumer_pending{{topic=\"{requested_topic}\"}} 0");
        (text.contains(&lag) && text.contains(&pending)).then_some(())
    };
    wait_until(
        "lag and pending 0 in /metrics",
        Duration::from_secs(10),
        backlog,
    )
    .await;
    assert!(
        orders.iter().all(|n| *n > 0.0),
        "both order-services worked: {orders:?}"
    );
}

/// The purchase script ran but its answer was lost, and so was the settle's
/// (Redis answers after the gateway's timeout). In the Streams mode the
/// order was appended with the stock taken, so it is kept: the buyer hears
/// the outcome is unknown, and the order is then created (Kafka's version
/// of this window undoes it: `every_202_kept::a_lost_script_answer_is_undone`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_script_answer_is_settled_and_the_order_kept() {
    let mut options = streams(&[("SECKILL_RECONCILE__GRACE_MS", "600000")]);
    options.gateway_redis_proxy = true;
    options.gateway_env = vec![("SECKILL_REDIS__RESPONSE_TIMEOUT_MS".into(), "300".into())];
    let stack = Stack::start_with(options).await;
    let sale = stack.active_sale(3).await;
    let token = stack.token("unlucky");
    let proxy = stack.redis_proxy.as_ref().expect("redis proxy");

    proxy.delay(Duration::from_millis(1_500));
    let (status, body) = stack.purchase(&token, &sale, json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (504, Some("order_outcome_unknown")),
        "{body}"
    );
    let order = body["error"]["order_id"]
        .as_str()
        .expect("order id")
        .to_owned();
    proxy.pass();

    let path = format!("/api/v1/orders/{order}");
    wait_until(
        "the order to be created",
        Duration::from_secs(30),
        || async {
            let (status, view) = stack.get(&path, Some(&token)).await;
            (status == 200 && view["status"] == "created").then_some(())
        },
    )
    .await;
    let (status, body) = stack.purchase(&token, &sale, json!({})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("already_purchased")),
        "{body}"
    );
    assert_invariants(&stack, &sale, &[order]).await;
}
