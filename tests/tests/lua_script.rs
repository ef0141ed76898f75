//! The purchase script's decisions, against a real Redis.
use redis::aio::ConnectionManager;

use gateway::purchase::{reserve, reserve_with_token, Decision};
use seckill_common::domain::{OrderId, Quantity, SaleId, UserId};
use seckill_common::stock::{release, SaleKeys};

async fn redis() -> ConnectionManager {
    let url = std::env::var("SECKILL_TEST_REDIS_URL").expect("run with deploy/local/test.sh");
    ConnectionManager::new(redis::Client::open(url).expect("url"))
        .await
        .expect("redis")
}

/// A fresh sale hash: `stock` units, window relative to now (ms), limit 2.
async fn sale(
    con: &mut ConnectionManager,
    stock: i64,
    start_offset_ms: i64,
    end_offset_ms: i64,
) -> SaleId {
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

async fn buy(con: &mut ConnectionManager, sale: &SaleId, who: &str, qty: u32) -> Decision {
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
