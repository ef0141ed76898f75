//! Clients that misbehave: too fast, too slow, bots without the sale's
//! purchase token, forged or not-yet-valid tokens, users reaching for other
//! users' orders, users on admin routes. None of them changes any state.
use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use gateway::purchase_token::PurchaseTokens;
use seckill_common::domain::{SaleId, UserId};
use seckill_common::settings::Secret;
use seckill_tests::stack::{ADMIN_TOKEN, JWT_SECRET};
use seckill_tests::{assert_error, poll_until, wait_until, Stack, StackOptions};

/// Restarts the stack's gateway with `vars` set (blocking bits off the runtime).
async fn restart_gateway_with(stack: &mut Stack, vars: &[(&str, &str)]) {
    seckill_tests::blocking(|| stack.gateway.kill());
    for (k, v) in vars {
        stack
            .gateway
            .env_mut()
            .insert((*k).to_owned(), (*v).to_owned());
    }
    stack.gateway.start();
    stack.wait_ready(&stack.gateway_url).await;
}

/// Fires `tokens.len()` purchases at once; returns (status, body, Retry-After).
async fn fire(stack: &Stack, sale: &str, tokens: &[String]) -> Vec<(u16, Value, Option<u64>)> {
    let requests = tokens.iter().map(|t| async move {
        let response = stack
            .http
            .post(format!("{}/api/v1/sales/{sale}/orders", stack.gateway_url))
            .bearer_auth(t)
            .json(&json!({}))
            .send()
            .await
            .expect("gateway reachable");
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        (
            status,
            response.json().await.unwrap_or(Value::Null),
            retry_after,
        )
    });
    futures::future::join_all(requests).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_per_user_per_client_and_global_answer_429_with_retry_after() {
    let mut stack = Stack::start().await;
    let sale = stack.active_sale(100).await;
    let cases = [
        ("SECKILL_RATE_LIMIT__PER_USER_PER_SECOND", "per-user", true),
        ("SECKILL_RATE_LIMIT__PER_IP_PER_SECOND", "per-client", false),
        ("SECKILL_RATE_LIMIT__GLOBAL_PER_SECOND", "global", false),
    ];
    let mut sold = 0;
    for (n, (var, scope, same_user)) in cases.into_iter().enumerate() {
        // Generous limits everywhere, then a small one for the scope under test.
        restart_gateway_with(
            &mut stack,
            &[
                ("SECKILL_RATE_LIMIT__PER_USER_PER_SECOND", "1000"),
                ("SECKILL_RATE_LIMIT__PER_IP_PER_SECOND", "1000000"),
                ("SECKILL_RATE_LIMIT__GLOBAL_PER_SECOND", "1000000"),
                (var, "3"),
            ],
        )
        .await;
        let tokens: Vec<String> = (0..12)
            .map(|i| match same_user {
                true => stack.token(&format!("limited-{n}")),
                false => stack.token(&format!("limited-{n}-{i}")),
            })
            .collect();
        let answers = fire(&stack, &sale, &tokens).await;
        let limited: Vec<_> = answers.iter().filter(|(s, _, _)| *s == 429).collect();
        assert!(!limited.is_empty(), "{scope}: {answers:?}");
        for (_, body, retry_after) in &limited {
            assert_eq!(body["error"]["code"], "rate_limited", "{body}");
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.starts_with(scope), "{scope}: {message}");
            assert!(
                retry_after.is_some_and(|s| s >= 1),
                "Retry-After: {retry_after:?}"
            );
        }
        sold += answers.iter().filter(|(s, _, _)| *s == 202).count() as i64;
        // A refused request took nothing.
        assert_eq!(stack.redis_stock(&sale).await, 100 - sold, "{scope}");
        assert_eq!(stack.redis_buyers(&sale).await, sold, "{scope}");
    }
}

/// Fires one `GET` per `X-Forwarded-For` value at once; returns the statuses.
async fn get_as(stack: &Stack, path: &str, forwarded_for: &[String]) -> Vec<u16> {
    let requests = forwarded_for.iter().map(|client| async move {
        stack
            .http
            .get(format!("{}{path}", stack.gateway_url))
            .header("X-Forwarded-For", client.as_str())
            .send()
            .await
            .expect("gateway reachable")
            .status()
            .as_u16()
    });
    futures::future::join_all(requests).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_client_limit_believes_x_forwarded_for_only_from_a_trusted_proxy() {
    let mut stack = Stack::start().await;
    let sale = stack.active_sale(5).await;
    // One request per second and client; the test is the proxy.
    restart_gateway_with(
        &mut stack,
        &[
            ("SECKILL_RATE_LIMIT__PER_IP_PER_SECOND", "1"),
            ("SECKILL_RATE_LIMIT__TRUSTED_PROXIES", "127.0.0.1/32"),
        ],
    )
    .await;
    // The list, not the sale: a read the read cache answers is served by the
    // front door before any limit (`gateway::front_door`); the list always
    // takes the full path.
    let _ = sale;
    let path = "/api/v1/sales".to_owned();
    // Behind a trusted proxy, ten clients are ten buckets...
    let clients: Vec<String> = (1..=10).map(|i| format!("198.51.100.{i}")).collect();
    assert_eq!(get_as(&stack, &path, &clients).await, vec![200; 10]);
    // ...and one client is still one bucket.
    let same = vec!["203.0.113.7".to_owned(); 5];
    let statuses = get_as(&stack, &path, &same).await;
    assert!(statuses.contains(&429), "{statuses:?}");

    // Trusting no proxy, the header is ignored: everyone shares the peer's bucket.
    restart_gateway_with(&mut stack, &[("SECKILL_RATE_LIMIT__TRUSTED_PROXIES", "")]).await;
    let clients: Vec<String> = (1..=10).map(|i| format!("192.0.2.{i}")).collect();
    let statuses = get_as(&stack, &path, &clients).await;
    assert!(statuses.contains(&429), "{statuses:?}");
}

fn gateway_port(stack: &Stack) -> u16 {
    stack
        .gateway_url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .expect("port")
}

/// True while the server has not answered: the request still holds its slot.
fn still_waiting(socket: &tokio::net::TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(socket.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A purchase whose head arrives but whose body never does (slowloris).
async fn slow_purchase(stack: &Stack, sale: &str, user: &str) -> tokio::net::TcpStream {
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", gateway_port(stack)))
        .await
        .expect("connect");
    let head = format!(
        "POST /api/v1/sales/{sale}/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 64\r\n\r\n{{\"quan",
        stack.token(user)
    );
    socket.write_all(head.as_bytes()).await.expect("write");
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_body_never_arrives_times_out() {
    let stack = Stack::start_with(StackOptions {
        gateway_env: vec![("SECKILL_REQUEST_TIMEOUT_MS".into(), "2500".into())],
        ..Default::default()
    })
    .await;
    let sale = stack.active_sale(5).await;
    let mut socket = slow_purchase(&stack, &sale, "slowloris").await;
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&answer).contains("request_timeout") {
        let n = tokio::time::timeout(Duration::from_secs(15), socket.read(&mut buf))
            .await
            .expect("an answer before the client gives up")
            .expect("read");
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "{took:?}"
    );
    assert_eq!(stack.redis_stock(&sale).await, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_the_in_flight_bound_fail_fast_instead_of_queueing() {
    let stack = Stack::start_with(StackOptions {
        gateway_env: vec![
            ("SECKILL_MAX_IN_FLIGHT".into(), "2".into()),
            // Long enough that the hogs surely hold their slots while we poll,
            // even when a loaded machine is slow to dispatch them.
            ("SECKILL_REQUEST_TIMEOUT_MS".into(), "12000".into()),
        ],
        ..Default::default()
    })
    .await;
    let sale = stack.active_sale(5).await;
    // The list, not the sale: a read the read cache answers is served by the
    // front door before admission (`gateway::front_door`); the list always
    // takes the full path.
    let path = "/api/v1/sales";
    // Two requests that never finish sending hold both slots, so any other
    // request is refused at once rather than queued. A hog can itself lose
    // the race for a slot to one of our probes; it is then answered at once
    // and holds nothing, so it is replaced until two are truly waiting.
    let hogs = tokio::sync::Mutex::new(Vec::new());
    let (took, body) = poll_until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || async {
            let mut hogs = hogs.lock().await;
            hogs.retain(still_waiting);
            while hogs.len() < 2 {
                let user = format!("hog-{}", hogs.len());
                hogs.push(slow_purchase(&stack, &sale, &user).await);
            }
            let started = std::time::Instant::now();
            let (status, body) = stack.get(path, None).await;
            if status == 503 {
                Ok((started.elapsed(), body))
            } else {
                Err((status, body))
            }
        },
    )
    .await
    .unwrap_or_else(|last| {
        panic!("the in-flight bound never refused a request; last answer {last:?}")
    });
    assert_eq!(body["error"]["code"], "overloaded", "{body}");
    assert!(took < Duration::from_millis(500), "refused in {took:?}");
    // Probes and scrapes still get through: Kubernetes must not restart a busy gateway.
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let status = stack
            .http
            .get(format!("{}{probe}", stack.gateway_url))
            .send()
            .await
            .expect("gateway reachable")
            .status();
        assert_eq!(status.as_u16(), 200, "{probe} while saturated");
    }
    drop(hogs);
    // The slots come back (the hogs time out at the latest), and nothing was taken.
    wait_until(
        "the slots to be free again",
        Duration::from_secs(30),
        || async { (stack.get(path, None).await.0 == 200).then_some(()) },
    )
    .await;
    assert_eq!(stack.redis_stock(&sale).await, 5);
}

async fn purchase_with(
    stack: &Stack,
    token: &str,
    sale: &str,
    purchase_token: Option<&str>,
) -> (u16, Value) {
    let mut request = stack
        .http
        .post(format!("{}/api/v1/sales/{sale}/orders", stack.gateway_url))
        .bearer_auth(token)
        .json(&json!({}));
    if let Some(t) = purchase_token {
        request = request.header("X-Purchase-Token", t);
    }
    let response = request.send().await.expect("gateway reachable");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn fetch_purchase_token(stack: &Stack, token: &str, sale: &str) -> (u16, Value) {
    stack
        .get(&format!("/api/v1/sales/{sale}/purchase-token"), Some(token))
        .await
}

async fn sale_with_token(stack: &Stack, starts_in_secs: i64) -> String {
    let now = Utc::now();
    let (status, body) = stack
        .admin_post(
            "/api/v1/admin/sales",
            json!({
                "name": "bot-proof sale",
                "stock": 10,
                "starts_at": now + chrono::Duration::seconds(starts_in_secs),
                "ends_at": now + chrono::Duration::seconds(starts_in_secs) + chrono::Duration::hours(1),
                "require_purchase_token": true,
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["sale_id"].as_str().expect("sale id").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sale_can_require_a_short_lived_user_bound_purchase_token() {
    let stack = Stack::start().await;
    let sale = sale_with_token(&stack, -5).await;
    let other_sale = sale_with_token(&stack, -5).await;
    let alice = stack.token("alice");
    let bob = stack.token("bob");

    let (status, view) = stack.get(&format!("/api/v1/sales/{sale}"), None).await;
    assert_eq!(
        (status, &view["require_purchase_token"]),
        (200, &json!(true)),
        "{view}"
    );

    // A bot firing the order endpoint blind is refused, and takes nothing.
    let (status, body) = purchase_with(&stack, &alice, &sale, None).await;
    assert_error(status, &body, 403, "purchase_token_required");

    let (status, issued) = fetch_purchase_token(&stack, &alice, &sale).await;
    assert_eq!(status, 200, "{issued}");
    let alices = issued["purchase_token"].as_str().expect("token").to_owned();
    assert!(issued["expires_at"].is_string(), "{issued}");
    let (_, other) = fetch_purchase_token(&stack, &alice, &other_sale).await;
    let alices_other_sale = other["purchase_token"].as_str().expect("token").to_owned();

    // Bound to its user and its sale; forged or expired ones do not pass.
    let (status, body) = purchase_with(&stack, &bob, &sale, Some(&alices)).await;
    assert_error(status, &body, 403, "invalid_purchase_token");
    let (status, body) = purchase_with(&stack, &alice, &sale, Some(&alices_other_sale)).await;
    assert_error(status, &body, 403, "invalid_purchase_token");
    let sale_id = SaleId::parse(&sale).expect("sale id");
    let alice_id = UserId::parse("alice").expect("user");
    let now = u64::try_from(Utc::now().timestamp()).expect("now");
    let (expired, _) =
        PurchaseTokens::new(Secret::from(JWT_SECRET), 30, 60).issue(&sale_id, &alice_id, now - 31);
    let (forged, _) = PurchaseTokens::new(Secret::from("not-the-gateway-secret"), 30, 60)
        .issue(&sale_id, &alice_id, now);
    for bad in [expired.as_str(), forged.as_str(), "garbage", ""] {
        let (status, body) = purchase_with(&stack, &alice, &sale, Some(bad)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (403, Some("invalid_purchase_token")),
            "{bad}: {body}"
        );
    }
    assert_eq!(
        stack.redis_stock(&sale).await,
        10,
        "no refused request took stock"
    );
    assert_eq!(stack.redis_buyers(&sale).await, 0);

    // With her own token, Alice buys.
    let (status, body) = purchase_with(&stack, &alice, &sale, Some(&alices)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(stack.redis_stock(&sale).await, 9);

    // Tokens are handed out only shortly before the start, never long ahead.
    let later = sale_with_token(&stack, 3600).await;
    let (status, body) = fetch_purchase_token(&stack, &alice, &later).await;
    assert_error(status, &body, 403, "sale_not_started");
    let soon = sale_with_token(&stack, 30).await;
    let (status, issued) = fetch_purchase_token(&stack, &alice, &soon).await;
    assert_eq!(status, 200, "within the lead time: {issued}");
    let early = issued["purchase_token"].as_str().expect("token");
    let (status, body) = purchase_with(&stack, &alice, &soon, Some(early)).await;
    assert_error(status, &body, 403, "sale_not_started");
    let (status, body) = fetch_purchase_token(&stack, &alice, "no-such-sale").await;
    assert_error(status, &body, 404, "sale_not_found");
    assert_eq!(
        fetch_purchase_token(&stack, "not.a.jwt", &sale).await.0,
        401
    );
}

fn jwt(claims: Value, alg: Algorithm) -> String {
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()).expect("a secret"),
    )
    .expect("token")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_algorithm_is_pinned_and_exp_and_nbf_allow_only_a_small_skew() {
    let stack = Stack::start().await;
    let now = Utc::now().timestamp();
    let claims = |mut c: Value| {
        c["iat"] = json!(now);
        c
    };
    // Authentication passes when the answer is 404 order_not_found.
    let path = "/api/v1/orders/no-such-sale.0190";
    let cases = [
        (
            "valid",
            json!({"sub": "u", "exp": now + 60}),
            Algorithm::HS256,
            404,
        ),
        (
            "nbf in the past",
            json!({"sub": "u", "exp": now + 60, "nbf": now - 10}),
            Algorithm::HS256,
            404,
        ),
        (
            "nbf within the skew",
            json!({"sub": "u", "exp": now + 60, "nbf": now + 2}),
            Algorithm::HS256,
            404,
        ),
        (
            "nbf beyond the skew",
            json!({"sub": "u", "exp": now + 600, "nbf": now + 300}),
            Algorithm::HS256,
            401,
        ),
        (
            "exp within the skew",
            json!({"sub": "u", "exp": now - 2}),
            Algorithm::HS256,
            404,
        ),
        (
            "exp beyond the skew",
            json!({"sub": "u", "exp": now - 60}),
            Algorithm::HS256,
            401,
        ),
        ("no exp", json!({"sub": "u"}), Algorithm::HS256, 401),
        ("no sub", json!({"exp": now + 60}), Algorithm::HS256, 401),
        (
            "invalid sub",
            json!({"sub": "a b", "exp": now + 60}),
            Algorithm::HS256,
            401,
        ),
        (
            "other algorithm, same secret",
            json!({"sub": "u", "exp": now + 60}),
            Algorithm::HS512,
            401,
        ),
    ];
    for (name, c, alg, want) in cases {
        let (status, body) = stack.get(path, Some(&jwt(claims(c), alg))).await;
        assert_eq!(status, want, "{name}: {body}");
        if want == 401 {
            assert_eq!(body["error"]["code"], "unauthorized", "{name}: {body}");
        }
    }
    assert_eq!(
        stack.get(path, Some(ADMIN_TOKEN)).await.0,
        401,
        "the admin token is no user token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_cannot_touch_each_others_orders_and_admin_routes_reject_user_tokens() {
    let stack = Stack::start().await;
    let sale = stack.active_sale(5).await;
    let alice = stack.token("alice");
    let mallory = stack.token("mallory");
    let (status, body) = stack.purchase(&alice, &sale, json!({})).await;
    assert_eq!(status, 202, "{body}");
    let order = body["order_id"].as_str().expect("order id").to_owned();
    let path = format!("/api/v1/orders/{order}");
    let (_, before) = stack.get(&path, Some(&alice)).await;

    let (status, body) = stack.get(&path, Some(&mallory)).await;
    assert_error(status, &body, 404, "order_not_found");
    for action in ["pay", "cancel"] {
        let response = stack
            .http
            .post(format!("{}{path}/{action}", stack.gateway_url))
            .bearer_auth(&mallory)
            .header("Idempotency-Key", "mallory-1")
            .json(&json!({}))
            .send()
            .await
            .expect("gateway reachable");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert!(
            (400..500).contains(&status) && status != 409,
            "{action} by another user: {status} {body}"
        );
    }
    let (status, after) = stack.get(&path, Some(&alice)).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["order_id"], before["order_id"]);
    assert!(
        ["queued", "created"].contains(&after["status"].as_str().unwrap_or_default()),
        "{after}"
    );

    // Admin routes: a user JWT is not the admin token.
    for (path, body) in [
        (
            "/api/v1/admin/sales",
            json!({"name": "x", "stock": 1, "starts_at": Utc::now(), "ends_at": Utc::now() + chrono::Duration::hours(1)}),
        ),
        ("/api/v1/admin/reconcile", json!({})),
    ] {
        let response = stack
            .http
            .post(format!("{}{path}", stack.gateway_url))
            .bearer_auth(&alice)
            .json(&body)
            .send()
            .await
            .expect("gateway reachable");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let no_such_route = status == 404 && body["error"]["code"] == "not_found";
        assert!(
            no_such_route || (status == 403 && body["error"]["code"] == "forbidden"),
            "{path}: {status} {body}"
        );
    }
    assert_eq!(stack.redis_stock(&sale).await, 4);
}

/// The services' internal routes take the user id from the request (cancel
/// anyone's order, create a sale): only the gateway, with the internal
/// token, may call them. Anything else that reaches the port gets 401, and
/// with a separate metrics port Prometheus never needs the HTTP port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_routes_answer_the_gateway_only() {
    use seckill_tests::stack::INTERNAL_TOKEN;
    let stack = Stack::start().await;
    let sale = stack.active_sale(3).await;
    let token = stack.token("victim");
    let (status, body) = stack.purchase(&token, &sale, json!({})).await;
    assert_eq!(status, 202, "{body}");
    let order = body["order_id"].as_str().expect("order id").to_owned();

    let order_routes = [
        (
            reqwest::Method::GET,
            format!("{}/internal/orders?user_id=victim", stack.order_url),
        ),
        (
            reqwest::Method::GET,
            format!("{}/internal/orders/{order}", stack.order_url),
        ),
        (
            reqwest::Method::POST,
            format!("{}/internal/orders/{order}/cancel", stack.order_url),
        ),
        (
            reqwest::Method::POST,
            format!("{}/internal/sales", stack.inventory_url),
        ),
        (
            reqwest::Method::GET,
            format!("{}/internal/sales/{sale}", stack.inventory_url),
        ),
        (
            reqwest::Method::POST,
            format!("{}/internal/reconcile", stack.inventory_url),
        ),
    ];
    for (method, url) in &order_routes {
        for bearer in [None, Some("not-the-internal-token-at-all")] {
            let mut request = stack
                .http
                .request(method.clone(), url)
                .json(&json!({"user_id": "victim"}));
            if let Some(b) = bearer {
                request = request.bearer_auth(b);
            }
            let response = request.send().await.expect("service reachable");
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap_or(Value::Null);
            assert_error(status, &body, 401, "unauthorized");
        }
    }
    // The gateway's own calls carry the token: the order is still there,
    // not cancelled, and the owner sees it through the gateway.
    let answer = stack
        .http
        .get(format!("{}/internal/orders/{order}", stack.order_url))
        .bearer_auth(INTERNAL_TOKEN)
        .send()
        .await
        .expect("order-service reachable");
    assert!(answer.status().is_success() || answer.status().as_u16() == 404);
    let (status, seen) = stack
        .get(&format!("/api/v1/orders/{order}"), Some(&token))
        .await;
    assert_eq!(status, 200, "{seen}");
    assert_ne!(seen["status"], "cancelled");
    // Probes and metrics stay open.
    for base in [&stack.order_url, &stack.inventory_url] {
        for path in ["/healthz", "/metrics"] {
            let status = stack
                .http
                .get(format!("{base}{path}"))
                .send()
                .await
                .expect("reachable")
                .status();
            assert!(status.is_success(), "{base}{path}: {status}");
        }
    }
}
