//! At-least-once delivery changes nothing, and bad input changes nothing.
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};

use seckill_common::domain::{OrderId, Quantity, SaleId, UserId};
use seckill_common::events::{Envelope, Event, OrderRef, OrderRequested};
use seckill_common::kafka::EventProducer;
use seckill_common::settings::KafkaSettings;
use seckill_tests::stack::{token_with, JWT_SECRET};
use seckill_tests::{wait_until, Stack};

fn order(sale: &str, user: &str) -> OrderRef {
    let sale = SaleId::parse(sale).expect("sale id");
    OrderRef {
        order_id: OrderId::new(&sale),
        sale_id: sale,
        user_id: UserId::parse(user).expect("user"),
        quantity: Quantity::ONE,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_events_change_nothing() {
    let stack = Stack::start().await;
    let sale = stack.active_sale(10).await;
    let settings = KafkaSettings {
        brokers: stack.brokers.clone(),
        topic_prefix: stack.topic_prefix.clone(),
        ..Default::default()
    };
    let topics = settings.topics();
    let producer = EventProducer::new(&settings).expect("producer");

    // The same OrderRequested twice, then a sentinel on the same partition
    // (same key): once the sentinel is applied, both copies were consumed.
    let a = order(&sale, "dup-a");
    let key = a.order_id.to_string();
    let requested = Envelope::new(Event::OrderRequested(OrderRequested {
        order: a.clone(),
        requested_at: Utc::now(),
    }));
    let sentinel = order(&sale, "dup-sentinel");
    let sentinel_event = Envelope::new(Event::OrderRequested(OrderRequested {
        order: sentinel.clone(),
        requested_at: Utc::now(),
    }));
    for envelope in [&requested, &requested, &sentinel_event] {
        producer
            .send(&topics.order_requested, &key, envelope)
            .await
            .expect("produce");
    }
    let created = |id: String| {
        format!("SELECT count(*) AS n FROM orders WHERE order_id = '{id}' AND status = 'created'")
    };
    wait_until(
        "the sentinel order to be created",
        Duration::from_secs(30),
        || async {
            (Stack::count(&stack.orders_db, &created(sentinel.order_id.to_string())).await == 1)
                .then_some(())
        },
    )
    .await;
    let reservations = format!("SELECT count(*) AS n FROM reservations WHERE sale_id = '{sale}'");
    assert_eq!(
        Stack::count(&stack.inventory_db, &reservations).await,
        2,
        "one reservation per order"
    );
    assert_eq!(
        stack.db_stock(&sale).await,
        8,
        "stock decremented once per order"
    );

    // The same StockReserved twice, then a sentinel with the same key.
    let reserved = Envelope::new(Event::StockReserved(a.clone()));
    let late = order(&sale, "dup-late");
    for envelope in [
        &reserved,
        &reserved,
        &Envelope::new(Event::StockReserved(late.clone())),
    ] {
        producer
            .send(&topics.inventory_events, &key, envelope)
            .await
            .expect("produce");
    }
    wait_until(
        "the second sentinel order to be created",
        Duration::from_secs(30),
        || async {
            (Stack::count(&stack.orders_db, &created(late.order_id.to_string())).await == 1)
                .then_some(())
        },
    )
    .await;
    let rows = format!(
        "SELECT count(*) AS n FROM orders WHERE order_id = '{}'",
        a.order_id
    );
    assert_eq!(
        Stack::count(&stack.orders_db, &rows).await,
        1,
        "no duplicate order row"
    );
    assert_eq!(stack.db_stock(&sale).await, 8);
}

/// (name, path, token, body, expected status, expected error code)
type Case<'a> = (&'a str, String, Option<&'a str>, String, u16, &'a str);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_documented_4xx_and_changes_nothing() {
    let stack = Stack::start().await;
    let sale = stack.active_sale(5).await;
    let good = stack.token("valid-user");
    let forged = token_with("valid-user", 3600, "some-other-secret-entirely");
    let expired = token_with("valid-user", -600, JWT_SECRET);
    let alg_none =
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ2YWxpZC11c2VyIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
    let orders = format!("/api/v1/sales/{sale}/orders");
    let big = format!("{{\"quantity\":1,\"pad\":\"{}\"}}", "x".repeat(64 * 1024));

    // (name, path, token, body, status, error code)
    let cases: Vec<Case> = vec![
        (
            "no token",
            orders.clone(),
            None,
            "{}".into(),
            401,
            "unauthorized",
        ),
        (
            "forged token",
            orders.clone(),
            Some(&forged),
            "{}".into(),
            401,
            "unauthorized",
        ),
        (
            "expired token",
            orders.clone(),
            Some(&expired),
            "{}".into(),
            401,
            "unauthorized",
        ),
        (
            "alg none",
            orders.clone(),
            Some(alg_none),
            "{}".into(),
            401,
            "unauthorized",
        ),
        (
            "garbage token",
            orders.clone(),
            Some("not.a.jwt"),
            "{}".into(),
            401,
            "unauthorized",
        ),
        (
            "malformed json",
            orders.clone(),
            Some(&good),
            "{\"quantity\":".into(),
            400,
            "malformed_body",
        ),
        (
            "wrong type",
            orders.clone(),
            Some(&good),
            "{\"quantity\":\"one\"}".into(),
            422,
            "invalid_body",
        ),
        (
            "unknown field",
            orders.clone(),
            Some(&good),
            "{\"qty\":1}".into(),
            422,
            "invalid_body",
        ),
        (
            "array body",
            orders.clone(),
            Some(&good),
            "[1]".into(),
            422,
            "invalid_body",
        ),
        (
            "quantity 0",
            orders.clone(),
            Some(&good),
            "{\"quantity\":0}".into(),
            422,
            "invalid_quantity",
        ),
        (
            "negative quantity",
            orders.clone(),
            Some(&good),
            "{\"quantity\":-3}".into(),
            422,
            "invalid_quantity",
        ),
        (
            "quantity over per-user limit",
            orders.clone(),
            Some(&good),
            "{\"quantity\":2}".into(),
            422,
            "quantity_over_limit",
        ),
        (
            "quantity over maximum",
            orders.clone(),
            Some(&good),
            "{\"quantity\":1000}".into(),
            422,
            "invalid_quantity",
        ),
        (
            "oversized body",
            orders.clone(),
            Some(&good),
            big,
            413,
            "payload_too_large",
        ),
        (
            "unknown sale",
            "/api/v1/sales/no-such-sale/orders".into(),
            Some(&good),
            "{}".into(),
            404,
            "sale_not_found",
        ),
        (
            "invalid sale id",
            "/api/v1/sales/bad%20id/orders".into(),
            Some(&good),
            "{}".into(),
            404,
            "sale_not_found",
        ),
        (
            "user token on admin route",
            "/api/v1/admin/sales".into(),
            Some(&good),
            "{}".into(),
            403,
            "forbidden",
        ),
    ];
    for (name, path, token, body, status, code) in cases {
        let mut request = stack
            .http
            .post(format!("{}{path}", stack.gateway_url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        let response = request.send().await.expect("gateway reachable");
        let got = response.status().as_u16();
        let json: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(got, status, "{name}: {json}");
        assert_eq!(json["error"]["code"], code, "{name}: {json}");
        assert!(json["error"]["message"].is_string(), "{name}: {json}");
    }
    assert_eq!(
        stack.redis_stock(&sale).await,
        5,
        "no bad request took stock"
    );
    assert_eq!(stack.redis_buyers(&sale).await, 0);
    let (status, _) = stack.purchase(&good, &sale, json!({})).await;
    assert_eq!(
        status, 202,
        "the same user can still buy with a good request"
    );
}
