//! The purchase script's decisions, against a real Redis.
use seckill_common::redis_conn::{self, Conn};
use seckill_common::settings::{RedisSettings, Secret};

use gateway::purchase::{
    reserve, reserve_and_enqueue, reserve_with_token, settle, Decision, StreamEntry,
};
use seckill_common::domain::{OrderId, Quantity, SaleId, UserId};
use seckill_common::stock::{release, SaleKeys};

async fn redis() -> Conn {
    let url = std::env::var("SECKILL_TEST_REDIS_URL").expect("run with deploy/local/test.sh");
    let settings = RedisSettings {
        url: Secret::from(url.as_str()),
        ..RedisSettings::default()
    };
    redis_conn::connect(&settings).await.expect("redis")
}

/// A fresh sale hash: `stock` units, window relative to now (ms), limit 2.
async fn sale(con: &mut Conn, stock: i64, start_offset_ms: i64, end_offset_ms: i64) -> SaleId {
    let id = SaleId::generate();
    let now = chrono::Utc::now().timestamp_millis();
    let keys = SaleKeys::new(&id);
    let _: () = redis::cmd("HSET")
        .arg(&keys.sale)
        .arg(&[
            "stock",
            &stock.to_string(),
            "total",
            &stock.to_string(),
            "per_user_limit",
            "2",
        ])
        .arg(&[
            "starts_at",
            &(now + start_offset_ms).to_string(),
            "ends_at",
            &(now + end_offset_ms).to_string(),
        ])
        .query_async(con)
        .await
        .expect("hset");
    id
}

fn user(name: &str) -> UserId {
    UserId::parse(name).expect("user")
}

async fn buy(con: &mut Conn, sale: &SaleId, who: &str, qty: u32) -> Decision {
    let quantity = Quantity::parse(i64::from(qty)).expect("quantity");
    reserve(con, sale, &user(who), quantity, &OrderId::new(sale))
        .await
        .expect("script")
}

#[tokio::test]
async fn decides_every_case() {
    let mut con = redis().await;
    let missing = SaleId::generate();
    assert_eq!(buy(&mut con, &missing, "u", 1).await, Decision::NotFound);

    let future = sale(&mut con, 5, 60_000, 120_000).await;
    assert_eq!(buy(&mut con, &future, "u", 1).await, Decision::NotStarted);
    let past = sale(&mut con, 5, -120_000, -60_000).await;
    assert_eq!(buy(&mut con, &past, "u", 1).await, Decision::Ended);

    let live = sale(&mut con, 3, -1_000, 60_000).await;
    assert_eq!(buy(&mut con, &live, "a", 3).await, Decision::OverLimit);
    assert_eq!(
        buy(&mut con, &live, "a", 2).await,
        Decision::Accepted { remaining: 1 }
    );
    assert_eq!(
        buy(&mut con, &live, "a", 1).await,
        Decision::AlreadyPurchased
    );
    // More than remains is not "sold out": one unit is still for sale.
    assert_eq!(
        buy(&mut con, &live, "b", 2).await,
        Decision::NotEnough { remaining: 1 }
    );
    assert_eq!(
        buy(&mut con, &live, "b", 1).await,
        Decision::Accepted { remaining: 0 }
    );
    assert_eq!(buy(&mut con, &live, "c", 1).await, Decision::SoldOut);
    assert_eq!(buy(&mut con, &live, "d", 2).await, Decision::SoldOut);
}

#[tokio::test]
async fn release_returns_a_reservation_exactly_once() {
    let mut con = redis().await;
    let live = sale(&mut con, 1, -1_000, 60_000).await;
    let order = OrderId::new(&live);
    let alice = user("alice");
    assert_eq!(
        reserve(&mut con, &live, &alice, Quantity::ONE, &order)
            .await
            .unwrap(),
        Decision::Accepted { remaining: 0 }
    );
    // A release naming another order does nothing.
    assert!(
        !release(&mut con, &live, &alice, &OrderId::new(&live), Quantity::ONE)
            .await
            .unwrap()
    );
    assert!(release(&mut con, &live, &alice, &order, Quantity::ONE)
        .await
        .unwrap());
    assert!(
        !release(&mut con, &live, &alice, &order, Quantity::ONE)
            .await
            .unwrap(),
        "second release is a no-op"
    );
    assert_eq!(
        buy(&mut con, &live, "bob", 1).await,
        Decision::Accepted { remaining: 0 }
    );
}

#[tokio::test]
async fn survives_a_script_flush() {
    let mut con = redis().await;
    let live = sale(&mut con, 2, -1_000, 60_000).await;
    assert_eq!(
        buy(&mut con, &live, "a", 1).await,
        Decision::Accepted { remaining: 1 }
    );
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut con)
        .await
        .expect("flush");
    // NOSCRIPT is answered by loading the script again, transparently.
    assert_eq!(
        buy(&mut con, &live, "b", 1).await,
        Decision::Accepted { remaining: 0 }
    );
}

#[tokio::test]
async fn a_sale_that_requires_a_purchase_token_sells_only_with_one() {
    let mut con = redis().await;
    let live = sale(&mut con, 2, -1_000, 60_000).await;
    let _: () = redis::cmd("HSET")
        .arg(SaleKeys::new(&live).sale)
        .arg(&["require_purchase_token", "1"])
        .query_async(&mut con)
        .await
        .expect("hset");
    assert_eq!(
        buy(&mut con, &live, "bot", 1).await,
        Decision::TokenRequired
    );
    let with_token = reserve_with_token(
        &mut con,
        &live,
        &user("human"),
        Quantity::ONE,
        &OrderId::new(&live),
        true,
    )
    .await
    .expect("script");
    assert_eq!(with_token, Decision::Accepted { remaining: 1 });
    // The window is still judged first: no token opens a sale early.
    let later = sale(&mut con, 2, 60_000, 120_000).await;
    let _: () = redis::cmd("HSET")
        .arg(SaleKeys::new(&later).sale)
        .arg(&["require_purchase_token", "1"])
        .query_async(&mut con)
        .await
        .expect("hset");
    assert_eq!(buy(&mut con, &later, "bot", 1).await, Decision::NotStarted);
}

/// Streams mode: an accepted purchase appends its order to the sale's
/// stream in the same call; a refused one appends nothing.
#[tokio::test]
async fn an_accepted_purchase_appends_its_order_in_the_same_step() {
    let mut con = redis().await;
    let id = sale(&mut con, 1, -1_000, 60_000).await;
    let trace = std::collections::HashMap::from([(
        "traceparent".to_owned(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
    )]);
    let entry = |payload: &'static [u8]| {
        Some(StreamEntry {
            payload,
            trace: &trace,
        })
    };
    let order = OrderId::new(&id);
    let first = reserve_and_enqueue(
        &mut con,
        &id,
        &user("s-a"),
        Quantity::ONE,
        &order,
        false,
        entry(b"{\"a\":1}"),
    )
    .await;
    assert_eq!(first.unwrap(), Decision::Accepted { remaining: 0 });
    let late = OrderId::new(&id);
    let second = reserve_and_enqueue(
        &mut con,
        &id,
        &user("s-b"),
        Quantity::ONE,
        &late,
        false,
        entry(b"{\"b\":2}"),
    )
    .await;
    assert_eq!(second.unwrap(), Decision::SoldOut);

    let keys = SaleKeys::new(&id);
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&keys.orders)
        .arg("-")
        .arg("+")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(entries.ids.len(), 1, "only the accepted order");
    let fields = &entries.ids[0].map;
    let text = |name: &str| redis::from_redis_value_ref::<String>(&fields[name]).unwrap();
    assert_eq!(text("key"), order.to_string());
    assert_eq!(text("type"), "OrderRequested");
    assert_eq!(text("payload"), "{\"a\":1}");
    assert_eq!(text("traceparent"), trace["traceparent"]);
}

/// Streams mode, a lost script answer: settling finds the order queued when
/// the script ran, and otherwise voids the order id so the script cannot
/// run for it later.
#[tokio::test]
async fn settling_a_lost_answer_keeps_a_queued_order_and_voids_one_never_run() {
    let mut con = redis().await;
    let id = sale(&mut con, 5, -1_000, 60_000).await;
    let ran = OrderId::new(&id);
    let buyer = user("settle-ran");
    assert!(matches!(
        reserve(&mut con, &id, &buyer, Quantity::ONE, &ran)
            .await
            .unwrap(),
        Decision::Accepted { .. }
    ));
    assert!(settle(&mut con, &id, &buyer, &ran).await.unwrap(), "queued");
    assert!(
        settle(&mut con, &id, &buyer, &ran).await.unwrap(),
        "idempotent"
    );

    let never = OrderId::new(&id);
    let other = user("settle-never");
    assert!(
        !settle(&mut con, &id, &other, &never).await.unwrap(),
        "voided"
    );
    assert_eq!(
        reserve(&mut con, &id, &other, Quantity::ONE, &never)
            .await
            .unwrap(),
        Decision::Voided,
        "a script arriving after the settle takes nothing"
    );
}
