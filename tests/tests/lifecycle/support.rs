//! What the lifecycle and reconciliation tests share: sales with payment
//! terms, buying, paying, cancelling, and reading the two databases.
#![allow(dead_code)] // Each test crate uses part of it.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde_json::{json, Value};

use seckill_common::settings::KafkaSettings;
use seckill_tests::{wait_until, Stack};

/// A sale on now for an hour, with a payment window and a unit price.
pub async fn sale_with(stack: &Stack, stock: i64, window_secs: i64, price_cents: i64) -> String {
    let now = Utc::now();
    let (status, body) = stack
        .admin_post(
            "/api/v1/admin/sales",
            json!({
                "name": "lifecycle sale",
                "stock": stock,
                "starts_at": now - chrono::Duration::seconds(5),
                "ends_at": now + chrono::Duration::hours(1),
                "payment_window_secs": window_secs,
                "unit_price_cents": price_cents,
            }),
        )
        .await;
    assert_eq!(status, 201, "create sale: {body}");
    assert_eq!(body["payment_window_secs"], window_secs, "{body}");
    body["sale_id"].as_str().expect("sale id").to_owned()
}

/// Buys one unit; the order id of the 202.
pub async fn buy(stack: &Stack, token: &str, sale: &str) -> String {
    let (status, body) = stack.purchase(token, sale, json!({})).await;
    assert_eq!(status, 202, "purchase: {body}\n{}", stack.logs());
    body["order_id"].as_str().expect("order id").to_owned()
}

pub async fn pay(stack: &Stack, token: &str, order: &str, key: &str) -> (u16, Value) {
    let response = stack
        .http
        .post(format!("{}/api/v1/orders/{order}/pay", stack.gateway_url))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .send()
        .await
        .expect("gateway reachable");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn cancel(stack: &Stack, token: &str, order: &str) -> (u16, Value) {
    let response = stack
        .http
        .post(format!(
            "{}/api/v1/orders/{order}/cancel",
            stack.gateway_url
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("gateway reachable");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// One text column `v` of the first row, if any.
pub async fn text(db: &DatabaseConnection, sql: &str) -> Option<String> {
    db.query_one_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .map(|row| row.try_get::<String>("", "v").expect("column v"))
}

/// Every row's text columns `a` and `b`.
pub async fn pairs(db: &DatabaseConnection, sql: &str) -> Vec<(String, String)> {
    db.query_all_raw(Statement::from_string(DbBackend::Postgres, sql.to_owned()))
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|row| {
            (
                row.try_get::<String>("", "a").expect("column a"),
                row.try_get::<String>("", "b").expect("column b"),
            )
        })
        .collect()
}

pub async fn order_status(stack: &Stack, order: &str) -> Option<String> {
    text(
        &stack.orders_db,
        &format!("SELECT status AS v FROM orders WHERE order_id = '{order}'"),
    )
    .await
}

pub async fn reservation_status(stack: &Stack, order: &str) -> Option<String> {
    text(
        &stack.inventory_db,
        &format!("SELECT status AS v FROM reservations WHERE order_id = '{order}'"),
    )
    .await
}

pub async fn wait_order_status(stack: &Stack, order: &str, status: &str) {
    wait_until(
        &format!("order {order} to be {status}"),
        Duration::from_secs(60),
        || async { (order_status(stack, order).await.as_deref() == Some(status)).then_some(()) },
    )
    .await;
}

pub async fn wait_reservation_status(stack: &Stack, order: &str, status: &str) {
    wait_until(
        &format!("reservation {order} to be {status}"),
        Duration::from_secs(60),
        || async {
            (reservation_status(stack, order).await.as_deref() == Some(status)).then_some(())
        },
    )
    .await;
}

/// Waits until `n` orders of the sale are persisted, whatever their status.
pub async fn wait_orders(stack: &Stack, sale: &str, n: i64) {
    let sql = format!("SELECT count(*) AS n FROM orders WHERE sale_id = '{sale}'");
    wait_until(
        &format!("{n} orders of {sale} to be persisted"),
        // Generous: on a loaded 2-core machine a consumer may sit out a rebalance.
        Duration::from_secs(120),
        || async { (Stack::count(&stack.orders_db, &sql).await == n).then_some(()) },
    )
    .await;
}

pub async fn expires_at(stack: &Stack, order: &str) -> DateTime<Utc> {
    let raw = text(
        &stack.orders_db,
        &format!("SELECT to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS v FROM orders WHERE order_id = '{order}'"),
    )
    .await
    .expect("order exists");
    raw.parse().expect("timestamp")
}

pub fn kafka(stack: &Stack) -> KafkaSettings {
    KafkaSettings {
        brokers: stack.brokers.clone(),
        topic_prefix: stack.topic_prefix.clone(),
        ..Default::default()
    }
}

/// Environment for every service of a lifecycle stack: quick expiry and relay.
pub fn fast_lifecycle() -> Vec<(String, String)> {
    [
        ("SECKILL_EXPIRY__INTERVAL_MS", "100"),
        ("SECKILL_OUTBOX__INTERVAL_MS", "100"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// `fast_lifecycle()` and then `extra` (a later setting wins).
pub fn fast_lifecycle_with(extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = fast_lifecycle();
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    env
}

/// Keeps every event of `topic` from now on for [`read_events`] (Streams
/// trims what every group acknowledged; Kafka keeps it anyway).
pub async fn keep_history(stack: &Stack, topic: &str) {
    seckill_tests::bus::Bus::of(stack)
        .await
        .keep_history(topic)
        .await;
}

/// Every event in `topic` from the beginning up to its current end.
pub async fn read_events(stack: &Stack, topic: &str) -> Vec<seckill_common::events::Envelope> {
    use rdkafka::consumer::{BaseConsumer, Consumer};

    if stack.transport == seckill_common::transport::Transport::RedisStreams {
        let bus = seckill_tests::bus::Bus::of(stack).await;
        return bus
            .stream_entries(&bus.stream_of(topic))
            .await
            .into_iter()
            .filter_map(|mut fields| {
                seckill_common::events::Envelope::from_json(&fields.remove("payload")?).ok()
            })
            .collect();
    }
    use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};

    let brokers = stack.brokers.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", format!("t-read-{}", uuid::Uuid::new_v4()))
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let timeout = Duration::from_secs(10);
        let metadata = consumer
            .fetch_metadata(Some(&topic), timeout)
            .expect("metadata");
        let mut ends = std::collections::HashMap::new();
        let mut assignment = TopicPartitionList::new();
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            let (low, high) = consumer
                .fetch_watermarks(&topic, p.id(), timeout)
                .expect("watermarks");
            if high > low {
                ends.insert(p.id(), high);
                assignment
                    .add_partition_offset(&topic, p.id(), Offset::Beginning)
                    .expect("partition");
            }
        }
        consumer.assign(&assignment).expect("assign");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut out = Vec::new();
        while !ends.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "{topic} not read in time"
            );
            let Some(message) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message.expect("message");
            if let Ok(envelope) =
                seckill_common::events::Envelope::from_json(message.payload().unwrap_or_default())
            {
                out.push(envelope);
            }
            if ends
                .get(&message.partition())
                .is_some_and(|end| message.offset() + 1 >= *end)
            {
                ends.remove(&message.partition());
            }
        }
        out
    })
    .await
    .expect("reader task")
}
