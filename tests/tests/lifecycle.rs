//! The order lifecycle on real servers: payment, cancellation, expiry, and
//! the stock that goes back on sale exactly once.
#[path = "lifecycle/support.rs"]
mod support;

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

use seckill_common::domain::OrderId;
use seckill_common::events::{Envelope, Event, OrderRef};
use seckill_tests::bus::Bus;
use seckill_tests::process::{binary, free_port, Process};
use seckill_tests::{assert_error, wait_until, Stack, StackOptions};

use support::*;

fn env(extra: &[(&str, &str)]) -> StackOptions {
    StackOptions {
        env: fast_lifecycle_with(extra),
        ..Default::default()
    }
}

async fn count(stack: &Stack, inventory: bool, sql: &str) -> i64 {
    let db = if inventory {
        &stack.inventory_db
    } else {
        &stack.orders_db
    };
    Stack::count(db, sql).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paying_marks_the_order_paid_with_its_payment_reference() {
    let stack = Stack::start_with(env(&[])).await;
    keep_history(&stack, &kafka(&stack).topics().order_events).await;
    let sale = sale_with(&stack, 5, 900, 1_250).await;
    let alice = stack.token("alice");
    let order = buy(&stack, &alice, &sale).await;
    wait_order_status(&stack, &order, "created").await;

    let path = format!("/api/v1/orders/{order}");
    let (status, view) = stack.get(&path, Some(&alice)).await;
    assert_eq!(status, 200, "{view}");
    assert_eq!(view["status"], "created");
    assert_eq!(view["amount_cents"], 1_250);
    assert!(view["payment_ref"].is_null(), "{view}");
    let expires: DateTime<Utc> = view["expires_at"]
        .as_str()
        .expect("expires_at")
        .parse()
        .expect("a timestamp");
    let left = expires - Utc::now();
    assert!(
        left > chrono::Duration::seconds(800) && left <= chrono::Duration::seconds(900),
        "{view}"
    );

    let (status, body) = pay(&stack, &stack.token("mallory"), &order, "k-1").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("order_not_found"))
    );
    let no_key = stack
        .http
        .post(format!("{}/api/v1/orders/{order}/pay", stack.gateway_url))
        .bearer_auth(&alice)
        .send()
        .await
        .expect("gateway");
    assert_eq!(no_key.status().as_u16(), 400);
    let body: Value = no_key.json().await.expect("json");
    assert_eq!(body["error"]["code"], "missing_idempotency_key");
    let (status, body) = pay(&stack, &alice, &order, &"k".repeat(129)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_idempotency_key"))
    );

    let (status, paid) = pay(&stack, &alice, &order, "alice-key-1").await;
    assert_eq!(status, 200, "{paid}\n{}", stack.logs());
    assert_eq!(paid["status"], "paid");
    let reference = paid["payment_ref"]
        .as_str()
        .expect("payment_ref")
        .to_owned();
    assert!(reference.starts_with("fakepay_"), "{paid}");

    let (status, view) = stack.get(&path, Some(&alice)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (view["status"].as_str(), view["payment_ref"].as_str()),
        (Some("paid"), Some(reference.as_str()))
    );
    let (status, mine) = stack.get("/api/v1/users/me/orders", Some(&alice)).await;
    assert_eq!(status, 200, "{mine}");
    let listed = mine["orders"].as_array().expect("orders");
    assert_eq!(listed.len(), 1, "{mine}");
    assert_eq!(listed[0]["order_id"], order.as_str());
    assert_eq!(listed[0]["status"], "paid");
    let (_, theirs) = stack
        .get("/api/v1/users/me/orders", Some(&stack.token("mallory")))
        .await;
    assert_eq!(theirs["orders"], json!([]));

    let payments = format!("SELECT count(*) AS n FROM payments WHERE order_id = '{order}' AND status = 'succeeded' AND amount_cents = 1250 AND payment_ref = '{reference}'");
    assert_eq!(count(&stack, false, &payments).await, 1);
    let (status, body) = pay(&stack, &alice, &order, "alice-key-2").await;
    assert_error(status, &body, 409, "order_not_payable");
    let (status, body) = cancel(&stack, &alice, &order).await;
    assert_error(status, &body, 409, "order_not_cancellable");
    assert_eq!(
        reservation_status(&stack, &order).await.as_deref(),
        Some("reserved")
    );

    // OrderPaid left through the outbox.
    let outbox = "SELECT count(*) AS n FROM outbox";
    wait_until("the outbox to drain", Duration::from_secs(30), || async {
        (count(&stack, false, outbox).await == 0).then_some(())
    })
    .await;
    let events = read_events(&stack, &kafka(&stack).topics().order_events).await;
    let paid_events: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::OrderPaid(p) if p.order.order_id.to_string() == order => Some(p),
            _ => None,
        })
        .collect();
    assert_eq!(paid_events.len(), 1);
    assert_eq!(
        (
            paid_events[0].payment_ref.as_str(),
            paid_events[0].amount_cents
        ),
        (reference.as_str(), 1_250)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decline_then_a_success_and_a_repeated_key_gets_the_same_answer() {
    let stack = Stack::start_with(env(&[("SECKILL_PAYMENT__TIMEOUT_MS", "300")])).await;
    let sale = sale_with(&stack, 5, 900, 500).await;
    let alice = stack.token("alice");
    let order = buy(&stack, &alice, &sale).await;
    wait_order_status(&stack, &order, "created").await;

    let (status, declined) = pay(&stack, &alice, &order, "fake-decline-1").await;
    assert_eq!(
        (status, declined["error"]["code"].as_str()),
        (402, Some("payment_declined")),
        "{declined}"
    );
    assert_eq!(
        pay(&stack, &alice, &order, "fake-decline-1").await,
        (402, declined.clone())
    );
    assert_eq!(
        order_status(&stack, &order).await.as_deref(),
        Some("created"),
        "a decline leaves the order payable"
    );
    let (status, body) = pay(&stack, &alice, &order, "fake-timeout-1").await;
    assert_error(status, &body, 504, "payment_timeout");

    let (status, paid) = pay(&stack, &alice, &order, "good-1").await;
    assert_eq!(status, 200, "{paid}");
    assert_eq!(paid["status"], "paid");
    assert_eq!(
        pay(&stack, &alice, &order, "good-1").await,
        (200, paid.clone()),
        "same key, same answer"
    );
    assert_eq!(
        pay(&stack, &alice, &order, "fake-decline-1").await,
        (402, declined),
        "the earlier key keeps its answer"
    );
    // The timed-out attempt never got an answer: repeated now, the provider
    // is asked again (it may have taken the money), and still does not answer.
    let (status, body) = pay(&stack, &alice, &order, "fake-timeout-1").await;
    assert_error(status, &body, 504, "payment_timeout");
    let per_status = pairs(
        &stack.orders_db,
        &format!("SELECT status AS a, count(*)::text AS b FROM payments WHERE order_id = '{order}' GROUP BY status ORDER BY status"),
    )
    .await;
    assert_eq!(
        per_status,
        [("declined", "1"), ("pending", "1"), ("succeeded", "1")]
            .map(|(a, b)| (a.to_owned(), b.to_owned())),
        "one decline, one attempt still without an outcome, one success"
    );

    // The same key, many times at once: one payment, one answer.
    let bob = stack.token("bob");
    let order = buy(&stack, &bob, &sale).await;
    wait_order_status(&stack, &order, "created").await;
    let answers: Vec<(u16, Value)> = stream::iter(0..8)
        .map(|_| pay(&stack, &bob, &order, "bob-key"))
        .buffer_unordered(8)
        .collect()
        .await;
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0].0, 200, "{answers:?}");
    let sql = format!("SELECT count(*) AS n FROM payments WHERE order_id = '{order}'");
    assert_eq!(count(&stack, false, &sql).await, 1, "one payment recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_charge_whose_answer_was_lost_pays_the_order_or_is_refunded_without_the_client() {
    let stack = Stack::start_with(env(&[
        ("SECKILL_PAYMENT__TIMEOUT_MS", "300"),
        // Longer than the short window: that attempt is asked again only
        // once its order is past paying, however fast the client paid.
        ("SECKILL_PAYMENT__RESOLVE_AFTER_MS", "4000"),
    ]))
    .await;
    let long = sale_with(&stack, 5, 900, 700).await;
    let short = sale_with(&stack, 5, 3, 700).await;
    let carol = stack.token("carol");
    let expiring = buy(&stack, &carol, &short).await;
    let payable = buy(&stack, &carol, &long).await;
    for order in [&expiring, &payable] {
        wait_order_status(&stack, order, "created").await;
        // The provider takes the money; its answer never arrives.
        let (status, body) = pay(&stack, &carol, order, "fake-lost-answer-1").await;
        assert_error(status, &body, 504, "payment_timeout");
    }
    // The client gives up. The expiry worker asks the provider again once
    // the attempt is older than RESOLVE_AFTER_MS: one order is still within
    // its window and becomes paid, the other is past it and gets its money back.
    wait_order_status(&stack, &payable, "paid").await;
    let refunded = |order: &str| {
        format!(
            "SELECT count(*) AS n FROM payments WHERE order_id = '{order}' AND status = 'refunded'"
        )
    };
    wait_until(
        "the refund of the expired order's charge",
        Duration::from_secs(30),
        || async { (count(&stack, false, &refunded(&expiring)).await == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        order_status(&stack, &expiring).await.as_deref(),
        Some("expired")
    );
    // The client's retry with the same key now gets the settled answers.
    let (status, body) = pay(&stack, &carol, &payable, "fake-lost-answer-1").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("paid")),
        "{body}"
    );
    let (status, body) = pay(&stack, &carol, &expiring, "fake-lost-answer-1").await;
    assert_error(status, &body, 409, "order_not_payable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pay_and_expire_race_and_exactly_one_wins_each_race() {
    const ORDERS: usize = 100;
    const PRICE: i64 = 100;
    let stack = Stack::start_with(env(&[
        ("SECKILL_EXPIRY__INTERVAL_MS", "20"),
        ("SECKILL_PAYMENT__LATENCY_MS", "40"),
        // A hundred payments land at once on a loaded 2-core machine: give
        // the gateway's call to order-service room, so a slow answer is not
        // mistaken for an outage (503). The race itself is decided in PostgreSQL.
        ("SECKILL_UPSTREAM_TIMEOUT_MS", "10000"),
    ]))
    .await;
    let sale = sale_with(&stack, ORDERS as i64, 4, PRICE).await;
    let tokens: Vec<String> = (0..ORDERS)
        .map(|i| stack.token(&format!("racer-{i}")))
        .collect();
    let orders: Vec<String> = stream::iter(&tokens)
        .map(|t| buy(&stack, t, &sale))
        .buffer_unordered(50)
        .collect()
        .await;
    wait_orders(&stack, &sale, ORDERS as i64).await;
    // `buy` ran out of order: each order's owner comes from the database.
    let users = pairs(
        &stack.orders_db,
        &format!("SELECT order_id AS a, user_id AS b FROM orders WHERE sale_id = '{sale}'"),
    )
    .await;
    let token_of: HashMap<String, String> = users
        .into_iter()
        .map(|(order, user)| (order, stack.token(&user)))
        .collect();

    // Each payment is sent around its order's deadline, from 1 s before to
    // 45 ms after (a hundred at once take a few hundred ms to serve):
    // some charges finish before it, some straddle it, some start after.
    let mut schedule = Vec::with_capacity(ORDERS);
    for (i, order) in orders.iter().enumerate() {
        let offset = chrono::Duration::milliseconds(-1_000 + (i as i64 % 20) * 55);
        schedule.push((order.clone(), expires_at(&stack, order).await + offset, i));
    }
    let results: Vec<(String, u16, Value)> = stream::iter(schedule)
        .map(|(order, at, i)| {
            let token = token_of[&order].clone();
            let stack = &stack;
            async move {
                // A race needs both sides at the same moment: the payment is
                // sent at its planned instant, around the order's deadline.
                // This stages the race; it synchronises nothing.
                let wait = (at - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep_until(tokio::time::Instant::now() + wait).await;
                let (status, body) = pay(stack, &token, &order, &format!("race-{i}")).await;
                (order, status, body)
            }
        })
        .buffer_unordered(ORDERS)
        .collect()
        .await;

    let open =
        format!("SELECT count(*) AS n FROM orders WHERE sale_id = '{sale}' AND status = 'created'");
    wait_until(
        "every order to be paid or expired",
        Duration::from_secs(60),
        || async { (count(&stack, false, &open).await == 0).then_some(()) },
    )
    .await;
    let refunding = format!("SELECT count(*) AS n FROM payments p JOIN orders o USING (order_id) WHERE o.sale_id = '{sale}' AND p.status = 'refund_pending'");
    wait_until("refunds to finish", Duration::from_secs(60), || async {
        (count(&stack, false, &refunding).await == 0).then_some(())
    })
    .await;

    let (mut paid, mut expired) = (0i64, 0i64);
    for (order, status, body) in &results {
        let state = order_status(&stack, order).await.expect("order");
        let succeeded = pairs(
            &stack.orders_db,
            &format!("SELECT coalesce(payment_ref, '') AS a, amount_cents::text AS b FROM payments WHERE order_id = '{order}' AND status = 'succeeded'"),
        )
        .await;
        match state.as_str() {
            "paid" => {
                paid += 1;
                assert_eq!(*status, 200, "{order} is paid, so its payment won: {body}");
                let reference = text(
                    &stack.orders_db,
                    &format!("SELECT payment_ref AS v FROM orders WHERE order_id = '{order}'"),
                )
                .await;
                assert_eq!(body["payment_ref"].as_str(), reference.as_deref());
                assert_eq!(
                    succeeded,
                    vec![(reference.unwrap_or_default(), PRICE.to_string())],
                    "{order}: one kept payment"
                );
            }
            "expired" => {
                expired += 1;
                assert_eq!(
                    (*status, body["error"]["code"].as_str()),
                    (409, Some("order_not_payable")),
                    "{order} expired, so its payment lost: {body}"
                );
                assert!(
                    succeeded.is_empty(),
                    "{order}: no money kept for an expired order"
                );
            }
            other => panic!("{order} ended {other}"),
        }
    }
    let refunded = count(&stack, false, &format!("SELECT count(*) AS n FROM payments p JOIN orders o USING (order_id) WHERE o.sale_id = '{sale}' AND p.status = 'refunded'")).await;
    let kept = count(&stack, false, &format!("SELECT coalesce(sum(p.amount_cents), 0)::bigint AS n FROM payments p JOIN orders o USING (order_id) WHERE o.sale_id = '{sale}' AND p.status = 'succeeded'")).await;
    println!("{paid} paid, {expired} expired ({refunded} charged after the deadline and refunded)");
    assert_eq!(paid + expired, ORDERS as i64);
    assert!(
        paid > 0 && expired > 0,
        "both sides won some races: {paid} paid, {expired} expired"
    );
    assert_eq!(
        kept,
        paid * PRICE,
        "the money kept is exactly the paid orders'"
    );

    // The stock agrees: every expired unit is back, once; paid ones stay sold.
    let released = format!(
        "SELECT count(*) AS n FROM reservations WHERE sale_id = '{sale}' AND status = 'released'"
    );
    wait_until(
        "every expired order's stock to return",
        Duration::from_secs(60),
        || async { (count(&stack, true, &released).await == expired).then_some(()) },
    )
    .await;
    assert_eq!(stack.db_stock(&sale).await, expired);
    let reserved = format!(
        "SELECT count(*) AS n FROM reservations WHERE sale_id = '{sale}' AND status = 'reserved'"
    );
    assert_eq!(count(&stack, true, &reserved).await, paid);
    stack.wait_redis_holds(&sale, expired, paid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_order_returns_its_stock_once_and_a_new_buyer_takes_it() {
    let stack = Stack::start_with(env(&[])).await;
    let sale = sale_with(&stack, 2, 2, 100).await;
    // Dave holds one unit for good, so a second return would show as extra stock.
    let dave = stack.token("dave");
    let held = buy(&stack, &dave, &sale).await;
    wait_order_status(&stack, &held, "created").await;
    assert_eq!(pay(&stack, &dave, &held, "dave-1").await.0, 200);

    let alice = stack.token("alice");
    let order = buy(&stack, &alice, &sale).await;
    let (status, body) = stack
        .purchase(&stack.token("carol"), &sale, json!({}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("sold_out"))
    );
    wait_order_status(&stack, &order, "expired").await;
    wait_reservation_status(&stack, &order, "released").await;
    wait_until(
        "the unit to be back in Redis",
        Duration::from_secs(30),
        || async { (stack.redis_stock(&sale).await == 1).then_some(()) },
    )
    .await;
    assert_eq!(stack.db_stock(&sale).await, 1);
    assert_eq!(
        stack.redis_buyers(&sale).await,
        1,
        "alice's purchase record is cleared; dave's stays"
    );

    let (status, view) = stack
        .get(&format!("/api/v1/orders/{order}"), Some(&alice))
        .await;
    assert_eq!(
        (status, view["status"].as_str()),
        (200, Some("expired")),
        "{view}"
    );
    let (status, body) = pay(&stack, &alice, &order, "too-late").await;
    assert_error(status, &body, 409, "order_not_payable");
    let (status, body) = cancel(&stack, &alice, &order).await;
    assert_error(status, &body, 409, "order_not_cancellable");
    let sql = format!("SELECT count(*) AS n FROM payments WHERE order_id = '{order}'");
    assert_eq!(
        count(&stack, false, &sql).await,
        0,
        "nothing charged for an expired order"
    );

    // The sold-out flag expired by itself; the unit sells again, once.
    let bob = stack.token("bob");
    let again = buy(&stack, &bob, &sale).await;
    wait_order_status(&stack, &again, "created").await;
    assert_eq!(pay(&stack, &bob, &again, "bob-1").await.0, 200);
    assert_eq!(stack.db_stock(&sale).await, 0);
    assert_eq!(stack.redis_stock(&sale).await, 0);
    let (status, _) = stack.purchase(&stack.token("erin"), &sale, json!({})).await;
    assert_eq!(status, 410, "no more than the returned unit was sold");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_returns_the_stock_and_duplicate_events_return_it_once() {
    let stack = Stack::start_with(env(&[])).await;
    let sale = sale_with(&stack, 5, 900, 100).await;
    let alice = stack.token("alice");
    let first = buy(&stack, &alice, &sale).await;
    wait_order_status(&stack, &first, "created").await;
    let (status, cancelled) = cancel(&stack, &alice, &first).await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled")),
        "{cancelled}"
    );
    assert_eq!(
        cancel(&stack, &alice, &first).await,
        (200, cancelled),
        "a repeat answers the same"
    );
    let (status, _) = cancel(&stack, &stack.token("mallory"), &first).await;
    assert_eq!(status, 404);
    wait_reservation_status(&stack, &first, "released").await;
    wait_until(
        "the unit to be back in Redis",
        Duration::from_secs(30),
        || async { (stack.redis_stock(&sale).await == 5).then_some(()) },
    )
    .await;

    // Alice may buy again; her new order holds a unit that no duplicate may free.
    let second = buy(&stack, &alice, &sale).await;
    wait_order_status(&stack, &second, "created").await;
    let bob = stack.token("bob");
    let sentinel = buy(&stack, &bob, &sale).await;
    wait_order_status(&stack, &sentinel, "created").await;
    assert_eq!(stack.db_stock(&sale).await, 3);

    // The first order's events again, twice each, then one about the
    // sentinel with the same key (same partition, so it is consumed after).
    let bus = Bus::of(&stack).await;
    let topic = bus.topics.order_events.clone();
    let first_ref = order_ref(&stack, &first).await;
    let sentinel_ref = order_ref(&stack, &sentinel).await;
    for event in [
        Event::OrderCancelled(first_ref.clone()),
        Event::OrderCancelled(first_ref.clone()),
        Event::OrderExpired(first_ref.clone()),
        Event::OrderExpired(first_ref),
        Event::OrderExpired(sentinel_ref),
    ] {
        bus.publish(&topic, &first, &Envelope::new(event)).await;
    }
    wait_reservation_status(&stack, &sentinel, "released").await;
    // Keep order-service in step with the forged expiry: its own cancel
    // event is one more duplicate for inventory-service.
    assert_eq!(cancel(&stack, &bob, &sentinel).await.0, 200);

    assert_eq!(
        stack.db_stock(&sale).await,
        4,
        "5 - alice's second order; the duplicates changed nothing"
    );
    assert_eq!(
        reservation_status(&stack, &second).await.as_deref(),
        Some("reserved")
    );
    let cause = text(
        &stack.inventory_db,
        &format!("SELECT release_cause AS v FROM reservations WHERE order_id = '{first}'"),
    )
    .await;
    assert_eq!(cause.as_deref(), Some("OrderCancelled"));
    stack.wait_redis_holds(&sale, 4, 1).await;
    let mut redis = stack.redis().await;
    let holder: Option<String> = redis::cmd("HGET")
        .arg(format!("seckill:{{{sale}}}:buyers"))
        .arg("alice")
        .query_async(&mut redis)
        .await
        .expect("redis");
    assert_eq!(
        holder.as_deref(),
        Some(second.as_str()),
        "alice still holds her second order"
    );
}

async fn order_ref(stack: &Stack, order: &str) -> OrderRef {
    let user = text(
        &stack.orders_db,
        &format!("SELECT user_id AS v FROM orders WHERE order_id = '{order}'"),
    )
    .await
    .expect("order");
    let order_id = OrderId::parse(order).expect("order id");
    OrderRef {
        sale_id: order_id.sale_id().clone(),
        order_id,
        user_id: seckill_common::domain::UserId::parse(&user).expect("user"),
        quantity: seckill_common::domain::Quantity::ONE,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_order_services_expire_each_order_exactly_once() {
    const ORDERS: i64 = 60;
    let stack = Stack::start_with(env(&[
        ("SECKILL_EXPIRY__INTERVAL_MS", "30"),
        ("SECKILL_EXPIRY__BATCH", "3"),
        ("SECKILL_OUTBOX__INTERVAL_MS", "30"),
    ]))
    .await;
    keep_history(&stack, &kafka(&stack).topics().order_events).await;
    let port = free_port();
    let mut env = stack.orders.env().clone();
    env.insert("SECKILL_HTTP__PORT".into(), port.to_string());
    let mut replica = Process::new(
        &format!("{}-order-service-2", stack.id),
        binary("order-service"),
        vec!["serve".into()],
        env,
    );
    replica.start();
    stack.wait_ready(&format!("http://127.0.0.1:{port}")).await;

    let sale = sale_with(&stack, ORDERS, 2, 100).await;
    let tokens: Vec<String> = (0..ORDERS)
        .map(|i| stack.token(&format!("e-{i}")))
        .collect();
    let orders: Vec<String> = stream::iter(&tokens)
        .map(|t| buy(&stack, t, &sale))
        .buffer_unordered(30)
        .collect()
        .await;
    let expired =
        format!("SELECT count(*) AS n FROM orders WHERE sale_id = '{sale}' AND status = 'expired'");
    wait_until("every order to expire", Duration::from_secs(60), || async {
        (count(&stack, false, &expired).await == ORDERS).then_some(())
    })
    .await;
    wait_until("the outbox to drain", Duration::from_secs(30), || async {
        (count(&stack, false, "SELECT count(*) AS n FROM outbox").await == 0).then_some(())
    })
    .await;

    let events = read_events(&stack, &kafka(&stack).topics().order_events).await;
    let mut per_order: HashMap<String, usize> = HashMap::new();
    for e in &events {
        if let Event::OrderExpired(o) = &e.event {
            *per_order.entry(o.order_id.to_string()).or_default() += 1;
        }
    }
    for order in &orders {
        assert_eq!(
            per_order.get(order),
            Some(&1),
            "{order} expired exactly once"
        );
    }
    assert_eq!(per_order.len(), orders.len());
    let worked = [&stack.orders, &replica].map(|p| {
        std::fs::read_to_string(p.log_path())
            .unwrap_or_default()
            .matches("expired unpaid orders")
            .count()
    });
    println!("expiry rounds per instance: {worked:?}");

    let released = format!(
        "SELECT count(*) AS n FROM reservations WHERE sale_id = '{sale}' AND status = 'released'"
    );
    wait_until("all stock to return", Duration::from_secs(60), || async {
        (count(&stack, true, &released).await == ORDERS).then_some(())
    })
    .await;
    assert_eq!(stack.db_stock(&sale).await, ORDERS);
    stack.wait_redis_holds(&sale, ORDERS, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_survives_an_order_service_restart() {
    let mut stack = Stack::start_with(env(&[])).await;
    let sale = sale_with(&stack, 5, 2, 100).await;
    let mut orders = Vec::new();
    for i in 0..5 {
        orders.push(buy(&stack, &stack.token(&format!("r-{i}")), &sale).await);
    }
    wait_orders(&stack, &sale, 5).await;
    stack.orders.kill();
    let due = format!(
        "SELECT count(*) AS n FROM orders WHERE sale_id = '{sale}' AND expires_at <= now()"
    );
    wait_until(
        "every deadline to pass while order-service is down",
        Duration::from_secs(30),
        || async { (count(&stack, false, &due).await == 5).then_some(()) },
    )
    .await;
    let open =
        format!("SELECT count(*) AS n FROM orders WHERE sale_id = '{sale}' AND status = 'created'");
    assert_eq!(
        count(&stack, false, &open).await,
        5,
        "nobody expired them meanwhile"
    );

    stack.orders.start();
    stack.wait_ready(&stack.order_url).await;
    for order in &orders {
        wait_order_status(&stack, order, "expired").await;
    }
    wait_until("the stock to return", Duration::from_secs(60), || async {
        (stack.db_stock(&sale).await == 5 && stack.redis_stock(&sale).await == 5).then_some(())
    })
    .await;
}
