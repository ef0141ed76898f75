//! Property test over the gateway's input: random methods, paths, headers and
//! bodies against one running stack. Whatever arrives, the gateway never
//! answers 5xx, and a 4xx never changes any state. Bounded: 200 cases.
// The schemathesis run belongs here: same question (no input gives a 5xx,
// every answer is documented), and one binary less to link.
#[path = "input_properties/contract.rs"]
mod contract;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::time::Duration;

use proptest::collection::{hash_map, vec};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::Value;

use seckill_tests::stack::ADMIN_TOKEN;
use seckill_tests::{wait_until, Stack};

/// Replaced by the stack's real sale id, so some requests reach real data.
const SALE: &str = "{SALE}";

#[derive(Debug, Clone)]
struct Request {
    method: reqwest::Method,
    path: String,
    auth: Auth,
    content_type: Option<&'static str>,
    body: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
enum Auth {
    None,
    User(u8),
    Admin,
    Garbage,
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,24}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            hash_map("[a-z_]{0,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..300),
        json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        any::<i64>().prop_map(|q| format!("{{\"quantity\":{q}}}").into_bytes()),
        json_value().prop_map(|v| {
            serde_json::to_vec(&serde_json::json!({ "quantity": v })).unwrap_or_default()
        }),
        Just(b"{}".to_vec()),
    ]
}

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._~-]{0,70}",
        vec(any::<u8>(), 0..24)
            .prop_map(|bytes| bytes.iter().map(|b| format!("%{b:02X}")).collect()),
        Just(SALE.to_owned()),
        Just(format!("{SALE}.0190b5c6-4e1a-7000-8000-000000000000")),
    ]
}

/// Anything under a few prefixes, mostly not a route at all.
fn random_path() -> impl Strategy<Value = String> {
    let prefix = prop_oneof![
        Just("/api/v1/sales/"),
        Just("/api/v1/orders/"),
        Just("/api/v1/admin/"),
        Just("/api/v1/"),
        Just("/"),
    ];
    let suffix = prop_oneof![
        Just(""),
        Just("/orders"),
        Just("/purchase-token"),
        Just("/pay"),
        Just("/cancel"),
        Just("/x/y"),
    ];
    (prefix, segment(), suffix).prop_map(|(p, s, x)| format!("{p}{s}{x}"))
}

fn any_method() -> impl Strategy<Value = reqwest::Method> {
    prop_oneof![
        Just(reqwest::Method::POST),
        Just(reqwest::Method::GET),
        Just(reqwest::Method::PUT),
        Just(reqwest::Method::DELETE),
    ]
}

/// Mostly the real routes with their own method (so the handlers, not only
/// the router, see the random input), sometimes anything at all.
fn method_and_path() -> impl Strategy<Value = (reqwest::Method, String)> {
    use reqwest::Method as M;
    prop_oneof![
        6 => Just((M::POST, format!("/api/v1/sales/{SALE}/orders"))),
        2 => segment().prop_map(|s| (M::POST, format!("/api/v1/sales/{s}/orders"))),
        2 => Just((M::GET, format!("/api/v1/sales/{SALE}/purchase-token"))),
        2 => segment().prop_map(|s| (M::GET, format!("/api/v1/orders/{s}"))),
        1 => segment().prop_map(|s| (M::GET, format!("/api/v1/sales/{s}"))),
        3 => Just((M::POST, "/api/v1/admin/sales".to_owned())),
        1 => segment().prop_map(|s| (M::POST, format!("/api/v1/orders/{s}/pay"))),
        1 => segment().prop_map(|s| (M::POST, format!("/api/v1/orders/{s}/cancel"))),
        3 => (any_method(), random_path()),
    ]
}

fn request() -> impl Strategy<Value = Request> {
    let auth = prop_oneof![
        1 => Just(Auth::None),
        4 => (0u8..4).prop_map(Auth::User),
        2 => Just(Auth::Admin),
        1 => Just(Auth::Garbage),
    ];
    let content_type = prop_oneof![
        4 => Just(Some("application/json")),
        1 => Just(None),
        1 => Just(Some("text/plain")),
    ];
    (method_and_path(), auth, content_type, body()).prop_map(
        |((method, path), auth, content_type, body)| Request {
            method,
            path,
            auth,
            content_type,
            body,
        },
    )
}

/// What a refused request must not change.
async fn state(stack: &Stack, sale: &str) -> (i64, i64, i64) {
    (
        stack.redis_stock(sale).await,
        stack.redis_buyers(sale).await,
        Stack::count(&stack.inventory_db, "SELECT count(*) AS n FROM sales").await,
    )
}

#[test]
fn random_requests_never_get_a_5xx_and_a_4xx_changes_nothing() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let stack = rt.block_on(Stack::start());
    let sale = rt.block_on(stack.active_sale(1_000));
    let users: Vec<String> = (0..4).map(|i| stack.token(&format!("prop-{i}"))).collect();
    let accepted = Cell::new(0i64);
    let statuses: RefCell<BTreeMap<u16, u32>> = RefCell::default();
    let baseline = Cell::new(rt.block_on(state(&stack, &sale)));

    let mut runner = TestRunner::new(Config {
        cases: 200,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&request(), |req| {
        rt.block_on(async {
            let url = format!("{}{}", stack.gateway_url, req.path.replace(SALE, &sale));
            let Ok(url) = reqwest::Url::parse(&url) else {
                return Err(TestCaseError::reject("not a URL"));
            };
            let mut builder = stack
                .http
                .request(req.method.clone(), url)
                .body(req.body.clone());
            if let Some(ct) = req.content_type {
                builder = builder.header("content-type", ct);
            }
            builder = match req.auth {
                Auth::None => builder,
                Auth::User(i) => builder.bearer_auth(&users[usize::from(i)]),
                Auth::Admin => builder.bearer_auth(ADMIN_TOKEN),
                Auth::Garbage => builder.bearer_auth("eyJhbGciOiJIUzI1NiJ9.e30.x"),
            };
            let response = builder
                .send()
                .await
                .map_err(|e| TestCaseError::fail(format!("no answer: {e}")))?;
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            *statuses.borrow_mut().entry(status).or_default() += 1;
            prop_assert!(status < 500, "{status} {text} for {req:?}");
            let now = state(&stack, &sale).await;
            if (400..500).contains(&status) {
                prop_assert_eq!(
                    now,
                    baseline.get(),
                    "{} {} changed state: {:?}",
                    status,
                    text,
                    req
                );
                if !text.is_empty() {
                    let json: Value = serde_json::from_str(&text)
                        .map_err(|e| TestCaseError::fail(format!("{status} {text:?}: {e}")))?;
                    prop_assert!(json["error"]["code"].is_string(), "{status} {text}");
                }
            } else {
                if status == 202 && req.path.ends_with("/orders") {
                    accepted.set(accepted.get() + 1);
                }
                baseline.set(now);
            }
            Ok(())
        })
    });
    if let Err(failure) = result {
        panic!("{failure}\n{}", stack.logs());
    }

    // The cases reached the handlers, not only the router.
    let statuses = statuses.into_inner();
    eprintln!("statuses: {statuses:?}");
    let answered_by_handlers = statuses
        .iter()
        .filter(|(s, _)| ![404u16, 401].contains(s))
        .map(|(_, n)| n)
        .sum::<u32>();
    assert!(answered_by_handlers >= 20, "{statuses:?}");

    // What was accepted along the way is persisted, and nothing else.
    let sql = format!("SELECT count(*) AS n FROM orders WHERE sale_id = '{sale}'");
    let want = accepted.get();
    rt.block_on(wait_until(
        "the accepted orders to be persisted",
        Duration::from_secs(60),
        || async { (Stack::count(&stack.orders_db, &sql).await == want).then_some(()) },
    ));
}
