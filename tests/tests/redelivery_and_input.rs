//! At-least-once delivery changes nothing, and bad input changes nothing.
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};

use seckill_common::events::{Envelope, Event, OrderRequested, Reserved};
use seckill_tests::bus::Bus;
use seckill_tests::fixtures::order;
use seckill_tests::stack::{token_with, ADMIN_TOKEN, JWT_SECRET};
use seckill_tests::{wait_until, Stack};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_events_change_nothing() {
    let stack = Stack::start().await;
    let sale = stack.active_sale(10).await;
    let bus = Bus::of(&stack).await;
    let topics = bus.topics.clone();

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
        bus.publish_order_requested(&sale, &key, envelope).await;
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
    let reserved = Envelope::new(Event::StockReserved(Reserved::new(a.clone())));
    let late = order(&sale, "dup-late");
    for envelope in [
        &reserved,
        &reserved,
        &Envelope::new(Event::StockReserved(Reserved::new(late.clone()))),
    ] {
        bus.publish(&topics.inventory_events, &key, envelope).await;
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

/// One request the gateway must refuse: the documented status and error code.
struct Case {
    name: &'static str,
    method: reqwest::Method,
    path: String,
    token: Option<String>,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    status: u16,
    code: &'static str,
}

impl Case {
    fn new(
        name: &'static str,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: impl Into<Vec<u8>>,
        status: u16,
        code: &'static str,
    ) -> Self {
        Self {
            name,
            method,
            path: path.to_owned(),
            token: token.map(str::to_owned),
            body: body.into(),
            content_type: Some("application/json"),
            headers: Vec::new(),
            status,
            code,
        }
    }

    fn content_type(mut self, value: Option<&'static str>) -> Self {
        self.content_type = value;
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// Everything a refused request could have changed.
async fn state(stack: &Stack, sale: &str) -> [i64; 5] {
    [
        stack.redis_stock(sale).await,
        stack.redis_buyers(sale).await,
        Stack::count(&stack.inventory_db, "SELECT count(*) AS n FROM sales").await,
        Stack::count(
            &stack.inventory_db,
            "SELECT count(*) AS n FROM reservations",
        )
        .await,
        Stack::count(&stack.orders_db, "SELECT count(*) AS n FROM orders").await,
    ]
}

fn claims_token(claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()).expect("a secret"),
    )
    .expect("token")
}

/// The one table of bad requests (at least 40): each gets its documented
/// status and error code in the JSON error shape, and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_documented_4xx_and_changes_nothing() {
    use reqwest::Method;
    let stack = Stack::start().await;
    let sale = stack.active_sale(5).await;
    let good = stack.token("valid-user");
    let forged = token_with("valid-user", 3600, "some-other-secret-entirely");
    let expired = token_with("valid-user", -600, JWT_SECRET);
    let now = Utc::now().timestamp();
    let not_yet =
        claims_token(json!({"sub": "valid-user", "exp": now + 3600, "nbf": now + 600, "iat": now}));
    let bad_sub = claims_token(json!({"sub": "has space", "exp": now + 3600, "iat": now}));
    let alg_none =
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ2YWxpZC11c2VyIiwiZXhwIjo5OTk5OTk5OTk5fQ.";
    let orders = format!("/api/v1/sales/{sale}/orders");
    let big = format!("{{\"quantity\":1,\"pad\":\"{}\"}}", "x".repeat(64 * 1024));
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let admin = Some(ADMIN_TOKEN);
    let user = Some(good.as_str());
    let starts = (Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let ends = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let new_sale = |stock: &str, starts: &str, ends: &str, extra: &str| {
        format!(
            r#"{{"name":"n","stock":{stock},"starts_at":"{starts}","ends_at":"{ends}"{extra}}}"#
        )
    };
    let other_order = format!("/api/v1/orders/{sale}.0190b5c6-4e1a-7000-8000-000000000000");
    use Method as M;

    let cases = vec![
        // Authentication.
        Case::new(
            "no token",
            M::POST,
            &orders,
            None,
            "{}",
            401,
            "unauthorized",
        ),
        Case::new(
            "forged token",
            M::POST,
            &orders,
            Some(&forged),
            "{}",
            401,
            "unauthorized",
        ),
        Case::new(
            "expired token",
            M::POST,
            &orders,
            Some(&expired),
            "{}",
            401,
            "unauthorized",
        ),
        Case::new(
            "not yet valid (nbf)",
            M::POST,
            &orders,
            Some(&not_yet),
            "{}",
            401,
            "unauthorized",
        ),
        Case::new(
            "alg none",
            M::POST,
            &orders,
            Some(alg_none),
            "{}",
            401,
            "unauthorized",
        ),
        Case::new(
            "garbage token",
            M::POST,
            &orders,
            Some("not.a.jwt"),
            "{}",
            401,
            "unauthorized",
        ),
        Case::new(
            "empty bearer",
            M::POST,
            &orders,
            Some(""),
            "{}",
            401,
            "unauthorized",
        ),
        Case::new(
            "invalid subject",
            M::POST,
            &orders,
            Some(&bad_sub),
            "{}",
            401,
            "unauthorized",
        ),
        Case::new(
            "admin token as a user",
            M::POST,
            &orders,
            admin,
            "{}",
            401,
            "unauthorized",
        ),
        Case::new(
            "basic auth",
            M::POST,
            &orders,
            None,
            "{}",
            401,
            "unauthorized",
        )
        .header("authorization", "Basic dXNlcjpwYXNz"),
        // The purchase body.
        Case::new(
            "malformed json",
            M::POST,
            &orders,
            user,
            "{\"quantity\":",
            400,
            "malformed_body",
        ),
        Case::new(
            "empty body",
            M::POST,
            &orders,
            user,
            "",
            400,
            "malformed_body",
        ),
        Case::new(
            "not utf-8",
            M::POST,
            &orders,
            user,
            b"{\"quantity\":\xff}".to_vec(),
            400,
            "malformed_body",
        ),
        Case::new(
            "text/plain",
            M::POST,
            &orders,
            user,
            "{}",
            400,
            "malformed_body",
        )
        .content_type(Some("text/plain")),
        Case::new(
            "no content type",
            M::POST,
            &orders,
            user,
            "{}",
            400,
            "malformed_body",
        )
        .content_type(None),
        Case::new(
            "nested too deep",
            M::POST,
            &orders,
            user,
            deep,
            400,
            "malformed_body",
        ),
        Case::new(
            "trailing garbage",
            M::POST,
            &orders,
            user,
            "{} {}",
            400,
            "malformed_body",
        ),
        Case::new(
            "wrong type",
            M::POST,
            &orders,
            user,
            "{\"quantity\":\"one\"}",
            422,
            "invalid_body",
        ),
        Case::new(
            "unknown field",
            M::POST,
            &orders,
            user,
            "{\"qty\":1}",
            422,
            "invalid_body",
        ),
        Case::new(
            "array body",
            M::POST,
            &orders,
            user,
            "[1]",
            422,
            "invalid_body",
        ),
        Case::new(
            "null body",
            M::POST,
            &orders,
            user,
            "null",
            422,
            "invalid_body",
        ),
        Case::new(
            "string body",
            M::POST,
            &orders,
            user,
            "\"buy\"",
            422,
            "invalid_body",
        ),
        Case::new(
            "number body",
            M::POST,
            &orders,
            user,
            "1",
            422,
            "invalid_body",
        ),
        Case::new(
            "fractional quantity",
            M::POST,
            &orders,
            user,
            "{\"quantity\":1.5}",
            422,
            "invalid_body",
        ),
        Case::new(
            "huge quantity",
            M::POST,
            &orders,
            user,
            "{\"quantity\":1e30}",
            422,
            "invalid_body",
        ),
        Case::new(
            "object quantity",
            M::POST,
            &orders,
            user,
            "{\"quantity\":{\"n\":1}}",
            422,
            "invalid_body",
        ),
        Case::new(
            "quantity 0",
            M::POST,
            &orders,
            user,
            "{\"quantity\":0}",
            422,
            "invalid_quantity",
        ),
        Case::new(
            "negative quantity",
            M::POST,
            &orders,
            user,
            "{\"quantity\":-3}",
            422,
            "invalid_quantity",
        ),
        Case::new(
            "quantity over maximum",
            M::POST,
            &orders,
            user,
            "{\"quantity\":1000}",
            422,
            "invalid_quantity",
        ),
        Case::new(
            "quantity i64::MAX",
            M::POST,
            &orders,
            user,
            "{\"quantity\":9223372036854775807}",
            422,
            "invalid_quantity",
        ),
        Case::new(
            "quantity over per-user limit",
            M::POST,
            &orders,
            user,
            "{\"quantity\":2}",
            422,
            "quantity_over_limit",
        ),
        Case::new(
            "oversized body",
            M::POST,
            &orders,
            user,
            big,
            413,
            "payload_too_large",
        ),
        Case::new(
            "bad purchase token",
            M::POST,
            &orders,
            user,
            "{}",
            403,
            "invalid_purchase_token",
        )
        .header("x-purchase-token", "123.abc"),
        // Paths and methods.
        Case::new(
            "unknown sale",
            M::POST,
            "/api/v1/sales/no-such-sale/orders",
            user,
            "{}",
            404,
            "sale_not_found",
        ),
        Case::new(
            "invalid sale id",
            M::POST,
            "/api/v1/sales/bad%20id/orders",
            user,
            "{}",
            404,
            "sale_not_found",
        ),
        Case::new(
            "sale id too long",
            M::POST,
            &format!("/api/v1/sales/{}/orders", "s".repeat(65)),
            user,
            "{}",
            404,
            "sale_not_found",
        ),
        Case::new(
            "sale id with unicode",
            M::POST,
            "/api/v1/sales/%E7%A7%92/orders",
            user,
            "{}",
            404,
            "sale_not_found",
        ),
        Case::new(
            "unknown route",
            M::POST,
            "/api/v1/nope",
            user,
            "{}",
            404,
            "not_found",
        ),
        // A route that does not take the method is no route at all.
        Case::new(
            "GET on the order route",
            M::GET,
            &orders,
            user,
            "",
            404,
            "not_found",
        ),
        Case::new(
            "PUT on the order route",
            M::PUT,
            &orders,
            user,
            "{}",
            404,
            "not_found",
        ),
        Case::new(
            "DELETE a sale",
            M::DELETE,
            &format!("/api/v1/sales/{sale}"),
            user,
            "",
            404,
            "not_found",
        ),
        // Reading.
        Case::new(
            "unknown sale (read)",
            M::GET,
            "/api/v1/sales/no-such-sale",
            None,
            "",
            404,
            "sale_not_found",
        ),
        Case::new(
            "invalid sale id (read)",
            M::GET,
            "/api/v1/sales/bad%20id",
            None,
            "",
            404,
            "sale_not_found",
        ),
        Case::new(
            "order without token",
            M::GET,
            &other_order,
            None,
            "",
            401,
            "unauthorized",
        ),
        Case::new(
            "malformed order id",
            M::GET,
            "/api/v1/orders/garbage",
            user,
            "",
            404,
            "order_not_found",
        ),
        Case::new(
            "nobody's order",
            M::GET,
            &other_order,
            user,
            "",
            404,
            "order_not_found",
        ),
        Case::new(
            "purchase token, unknown sale",
            M::GET,
            "/api/v1/sales/no-such-sale/purchase-token",
            user,
            "",
            404,
            "sale_not_found",
        ),
        Case::new(
            "purchase token without token",
            M::GET,
            &format!("/api/v1/sales/{sale}/purchase-token"),
            None,
            "",
            401,
            "unauthorized",
        ),
        // Admin.
        Case::new(
            "user token on admin route",
            M::POST,
            "/api/v1/admin/sales",
            user,
            new_sale("5", &starts, &ends, ""),
            403,
            "forbidden",
        ),
        Case::new(
            "no token on admin route",
            M::POST,
            "/api/v1/admin/sales",
            None,
            new_sale("5", &starts, &ends, ""),
            401,
            "unauthorized",
        ),
        Case::new(
            "admin: malformed json",
            M::POST,
            "/api/v1/admin/sales",
            admin,
            "{\"name\":",
            400,
            "malformed_body",
        ),
        Case::new(
            "admin: unknown field",
            M::POST,
            "/api/v1/admin/sales",
            admin,
            new_sale("5", &starts, &ends, r#","price":1"#),
            422,
            "invalid_body",
        ),
        Case::new(
            "admin: bad date",
            M::POST,
            "/api/v1/admin/sales",
            admin,
            new_sale("5", "yesterday", &ends, ""),
            422,
            "invalid_body",
        ),
        Case::new(
            "admin: stock 0",
            M::POST,
            "/api/v1/admin/sales",
            admin,
            new_sale("0", &starts, &ends, ""),
            422,
            "invalid_sale",
        ),
        Case::new(
            "admin: stock too big",
            M::POST,
            "/api/v1/admin/sales",
            admin,
            new_sale("10000001", &starts, &ends, ""),
            422,
            "invalid_sale",
        ),
        Case::new(
            "admin: ends before it starts",
            M::POST,
            "/api/v1/admin/sales",
            admin,
            new_sale("5", &ends, &starts, ""),
            422,
            "invalid_sale",
        ),
        Case::new(
            "admin: blank name",
            M::POST,
            "/api/v1/admin/sales",
            admin,
            format!(r#"{{"name":"  ","stock":5,"starts_at":"{starts}","ends_at":"{ends}"}}"#),
            422,
            "invalid_sale",
        ),
        // Refused by the gateway itself, by the rules inventory-service also
        // runs: it used to pass here and come back as 422 upstream_rejected.
        Case::new(
            "admin: a control character in the name",
            M::POST,
            "/api/v1/admin/sales",
            admin,
            format!(
                r#"{{"name":"bell\u0007","stock":5,"starts_at":"{starts}","ends_at":"{ends}"}}"#
            ),
            422,
            "invalid_sale",
        ),
        Case::new(
            "admin: per-user limit 0",
            M::POST,
            "/api/v1/admin/sales",
            admin,
            new_sale("5", &starts, &ends, r#","per_user_limit":0"#),
            422,
            "invalid_sale",
        ),
    ];
    assert!(cases.len() >= 40, "{} cases", cases.len());

    let before = state(&stack, &sale).await;
    for case in cases {
        let mut request = stack
            .http
            .request(
                case.method.clone(),
                format!("{}{}", stack.gateway_url, case.path),
            )
            .body(case.body.clone());
        if let Some(ct) = case.content_type {
            request = request.header("content-type", ct);
        }
        if let Some(t) = &case.token {
            request = request.header("authorization", format!("Bearer {t}"));
        }
        for (name, value) in &case.headers {
            request = request.header(*name, value);
        }
        let response = request.send().await.expect("gateway reachable");
        let got = response.status().as_u16();
        let json: Value = response.json().await.unwrap_or(Value::Null);
        let name = case.name;
        assert_eq!(got, case.status, "{name}: {json}");
        assert_eq!(json["error"]["code"], case.code, "{name}: {json}");
        assert!(json["error"]["message"].is_string(), "{name}: {json}");
        assert_eq!(state(&stack, &sale).await, before, "{name} changed state");
    }
    let (status, _) = stack.purchase(&good, &sale, json!({})).await;
    assert_eq!(
        status, 202,
        "the same user can still buy with a good request"
    );
}
