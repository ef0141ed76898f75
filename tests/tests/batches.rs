//! Multi-order batches in the two consumers: the set-based fast path, and the
//! per-order fallback when the set cannot be decided as a whole.
//!
//! To make the events of one step arrive in ONE batch, the consumer that
//! should batch them is stopped (cleanly: it commits its offsets), the events
//! are produced to one partition, and it is started again: its first fetch
//! then finds them all waiting, and a long batch linger gathers them. The services
//! log each batch's path at debug level, which these tests turn on, so each
//! test also checks which path decided its batch.
use std::time::Duration;

use chrono::Utc;
use futures::future::join_all;
use sea_orm::ConnectionTrait;

use seckill_common::domain::{OrderId, Quantity};
use seckill_common::events::{
    Envelope, Event, OrderRef, OrderRequested, RejectReason, Rejection, Reserved,
};
use seckill_common::kafka::EventProducer;
use seckill_common::settings::{KafkaSettings, Topics};
use seckill_tests::fixtures::order;
use seckill_tests::process::Process;
use seckill_tests::{wait_until, Stack, StackOptions};

const SET_INVENTORY: &str = "reservation batch decided";
const FALLBACK_INVENTORY: &str = "reservation batch cannot be decided as a set";
const SET_ORDERS: &str = "order batch stored as a set";
const FALLBACK_ORDERS: &str = "order batch cannot be stored as a set";

async fn batching_stack() -> Stack {
    Stack::start_with(StackOptions {
        env: vec![
            (
                "RUST_LOG".into(),
                "info,inventory_service=debug,order_service=debug".into(),
            ),
            ("SECKILL_KAFKA__BATCH_LINGER_MS".into(), "1000".into()),
        ],
        ..Default::default()
    })
    .await
}

fn kafka(stack: &Stack) -> (EventProducer, Topics) {
    let settings = KafkaSettings {
        brokers: stack.brokers.clone(),
        topic_prefix: stack.topic_prefix.clone(),
        ..Default::default()
    };
    let producer = EventProducer::new(&settings).expect("producer");
    (producer, settings.topics())
}

fn requested(order: &OrderRef) -> Envelope {
    Envelope::new(Event::OrderRequested(OrderRequested {
        order: order.clone(),
        requested_at: Utc::now(),
    }))
}

/// Stops `consumer`, produces `events`, and starts it again: they reach it
/// as one batch. They share one key, so one partition holds them all and
/// one fetch brings them all (the handlers read the order from the payload).
async fn deliver_as_one_batch(
    consumer: &mut Process,
    producer: &EventProducer,
    topic: &str,
    events: &[Envelope],
) {
    consumer.terminate(Duration::from_secs(20));
    let key = events[0].event.order_id().to_string();
    let sends = events
        .iter()
        .map(|envelope| producer.send(topic, &key, envelope));
    for sent in join_all(sends).await {
        sent.expect("produce");
    }
    consumer.start();
}

/// The log lines of `process` that carry `message`.
fn logged(process: &Process, message: &str) -> Vec<String> {
    std::fs::read_to_string(process.log_path())
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(message))
        .map(str::to_owned)
        .collect()
}

async fn orders_in(stack: &Stack, sale: &str, condition: &str) -> i64 {
    let sql = format!("SELECT count(*) AS n FROM orders WHERE sale_id = '{sale}' AND {condition}");
    Stack::count(&stack.orders_db, &sql).await
}

async fn reservations_in(stack: &Stack, sale: &str, condition: &str) -> i64 {
    let sql =
        format!("SELECT count(*) AS n FROM reservations WHERE sale_id = '{sale}' AND {condition}");
    Stack::count(&stack.inventory_db, &sql).await
}

async fn wait_for_orders(stack: &Stack, sale: &str, n: i64) {
    wait_until(
        &format!("{n} orders of {sale} to be persisted"),
        Duration::from_secs(60),
        || async { (orders_in(stack, sale, "true").await >= n).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_mixing_new_and_redelivered_orders_stores_each_once() {
    let mut stack = batching_stack().await;
    let sale = stack.active_sale(10).await;
    let (producer, topics) = kafka(&stack);
    let first: Vec<OrderRef> = ["m-a", "m-b", "m-c"]
        .iter()
        .map(|u| order(&sale, u))
        .collect();
    let first_events: Vec<Envelope> = first.iter().map(requested).collect();
    let topic = topics.order_requested.as_str();
    deliver_as_one_batch(&mut stack.inventory, &producer, topic, &first_events).await;
    wait_for_orders(&stack, &sale, 3).await;

    // Two of them again (same envelopes: a redelivery), with three new orders.
    let new: Vec<OrderRef> = ["m-d", "m-e", "m-f"]
        .iter()
        .map(|u| order(&sale, u))
        .collect();
    let mut mixed: Vec<Envelope> = first_events[..2].to_vec();
    mixed.extend(new.iter().map(requested));
    deliver_as_one_batch(&mut stack.inventory, &producer, topic, &mixed).await;
    wait_for_orders(&stack, &sale, 6).await;

    assert_eq!(
        reservations_in(&stack, &sale, "status = 'reserved'").await,
        6
    );
    assert_eq!(reservations_in(&stack, &sale, "true").await, 6);
    assert_eq!(
        stack.db_stock(&sale).await,
        4,
        "one decrement per new order"
    );
    assert_eq!(orders_in(&stack, &sale, "status = 'created'").await, 6);
    let distinct = format!(
        "SELECT count(DISTINCT order_id) AS n FROM orders WHERE sale_id = '{sale}' AND expires_at > now()"
    );
    assert_eq!(Stack::count(&stack.orders_db, &distinct).await, 6);

    // The redelivered orders were announced again, as reserved.
    let announced = logged(&stack.inventory, "stock decision announced");
    for o in &first[..2] {
        let id = o.order_id.to_string();
        let again = announced.iter().filter(|l| l.contains(&id)).count();
        assert_eq!(again, 2, "{id} announced in both batches");
    }
    // Both batches went the set-based way, the second with all five orders.
    let set = logged(&stack.inventory, SET_INVENTORY);
    assert!(
        set.iter().any(|l| l.contains("\"size\":5")),
        "one set-based batch of 5: {set:#?}\n{}",
        stack.logs()
    );
    assert_eq!(
        logged(&stack.inventory, FALLBACK_INVENTORY),
        Vec::<String>::new()
    );
    assert_eq!(logged(&stack.orders, FALLBACK_ORDERS), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_running_out_mid_batch_reserves_exactly_the_remainder() {
    let mut stack = batching_stack().await;
    let short = stack.active_sale(10).await;
    let plenty = stack.active_sale(10).await;
    // Redis drift: PostgreSQL can deliver only 3 of the 5 orders Redis let through.
    stack
        .inventory_db
        .execute_unprepared(&format!(
            "UPDATE sales SET stock_remaining = 3 WHERE id = '{short}'"
        ))
        .await
        .expect("lower the stock");
    let (producer, topics) = kafka(&stack);
    let mut events: Vec<Envelope> = (0..5)
        .map(|i| requested(&order(&short, &format!("s-{i}"))))
        .collect();
    // Another sale in the same batch: the fallback decides it the same way.
    events.extend((0..2).map(|i| requested(&order(&plenty, &format!("p-{i}")))));
    deliver_as_one_batch(
        &mut stack.inventory,
        &producer,
        &topics.order_requested,
        &events,
    )
    .await;
    wait_for_orders(&stack, &short, 5).await;
    wait_for_orders(&stack, &plenty, 2).await;

    assert_eq!(
        reservations_in(&stack, &short, "status = 'reserved'").await,
        3
    );
    let rejected = "status = 'rejected' AND reason = 'insufficient_stock'";
    assert_eq!(reservations_in(&stack, &short, rejected).await, 2);
    assert_eq!(stack.db_stock(&short).await, 0, "never below zero");
    assert_eq!(orders_in(&stack, &short, "status = 'created'").await, 3);
    let failed = "status = 'failed' AND reason = 'insufficient_stock'";
    assert_eq!(orders_in(&stack, &short, failed).await, 2);

    assert_eq!(
        reservations_in(&stack, &plenty, "status = 'reserved'").await,
        2
    );
    assert_eq!(stack.db_stock(&plenty).await, 8);
    assert_eq!(orders_in(&stack, &plenty, "status = 'created'").await, 2);

    let fallbacks = logged(&stack.inventory, FALLBACK_INVENTORY);
    assert!(
        fallbacks
            .iter()
            .any(|l| l.contains("stock_short") && l.contains("\"size\":7")),
        "the batch of 7 fell back because stock was short: {fallbacks:#?}\n{}",
        stack.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_service_stores_a_mixed_batch_as_a_set_with_its_terms() {
    let mut stack = batching_stack().await;
    let sale = stack.active_sale(10).await;
    let (producer, topics) = kafka(&stack);
    let topic = topics.inventory_events.as_str();
    let stored = order(&sale, "o-stored");
    let stored_event = Envelope::new(Event::StockReserved(Reserved::new(stored.clone())));
    deliver_as_one_batch(
        &mut stack.orders,
        &producer,
        topic,
        std::slice::from_ref(&stored_event),
    )
    .await;
    wait_for_orders(&stack, &sale, 1).await;

    let mut paid = order(&sale, "o-priced");
    paid.quantity = Quantity::parse(2).expect("quantity");
    let rejected = order(&sale, "o-rejected");
    let batch = [
        stored_event,
        Envelope::new(Event::StockReserved(Reserved {
            order: paid.clone(),
            payment_window_secs: 60,
            unit_price_cents: 250,
        })),
        Envelope::new(Event::StockRejected(Rejection {
            order: rejected.clone(),
            reason: RejectReason::InsufficientStock,
        })),
    ];
    deliver_as_one_batch(&mut stack.orders, &producer, topic, &batch).await;
    wait_for_orders(&stack, &sale, 3).await;

    let one = |id: &OrderId, condition: &str| {
        format!("SELECT count(*) AS n FROM orders WHERE order_id = '{id}' AND {condition}")
    };
    let checks = [
        (
            &paid.order_id,
            "status = 'created' AND amount_cents = 500 AND reason IS NULL \
             AND expires_at BETWEEN now() + interval '30 seconds' AND now() + interval '61 seconds'",
        ),
        (
            &rejected.order_id,
            "status = 'failed' AND reason = 'insufficient_stock' AND expires_at IS NULL \
             AND amount_cents = 0",
        ),
        (&stored.order_id, "status = 'created'"),
    ];
    for (id, condition) in checks {
        assert_eq!(
            Stack::count(&stack.orders_db, &one(id, condition)).await,
            1,
            "{id}: {condition}"
        );
    }
    assert_eq!(
        orders_in(&stack, &sale, "true").await,
        3,
        "no duplicate row"
    );
    let set = logged(&stack.orders, SET_ORDERS);
    assert!(
        set.iter().any(|l| l.contains("\"size\":3")),
        "one set-based batch of 3: {set:#?}\n{}",
        stack.logs()
    );
    assert_eq!(logged(&stack.orders, FALLBACK_ORDERS), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orders_of_one_buyer_in_a_batch_give_one_created_and_one_duplicate_buyer() {
    let mut stack = batching_stack().await;
    let sale = stack.active_sale(10).await;
    let (producer, topics) = kafka(&stack);
    let (first, second, other) = (
        order(&sale, "twice"),
        order(&sale, "twice"),
        order(&sale, "once"),
    );
    let events: Vec<Envelope> = [&first, &second, &other]
        .into_iter()
        .map(|o| Envelope::new(Event::StockReserved(Reserved::new(o.clone()))))
        .collect();
    deliver_as_one_batch(
        &mut stack.orders,
        &producer,
        &topics.inventory_events,
        &events,
    )
    .await;
    wait_for_orders(&stack, &sale, 3).await;

    let user = |u: &str, condition: &str| {
        format!(
            "SELECT count(*) AS n FROM orders WHERE sale_id = '{sale}' AND user_id = '{u}' AND {condition}"
        )
    };
    let db = &stack.orders_db;
    assert_eq!(
        Stack::count(db, &user("twice", "status = 'created'")).await,
        1
    );
    let duplicate = "status = 'failed' AND reason = 'duplicate_buyer'";
    assert_eq!(Stack::count(db, &user("twice", duplicate)).await, 1);
    assert_eq!(
        Stack::count(db, &user("once", "status = 'created'")).await,
        1
    );
    let fallbacks = logged(&stack.orders, FALLBACK_ORDERS);
    assert!(
        fallbacks
            .iter()
            .any(|l| l.contains("live_duplicate") && l.contains("\"size\":3")),
        "the batch of 3 fell back on the duplicate: {fallbacks:#?}\n{}",
        stack.logs()
    );
}
