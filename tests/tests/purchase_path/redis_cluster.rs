//! Redis Cluster: three masters started here, made into a cluster with
//! `redis-cli --cluster create`. Every service is given the nodes
//! (`SECKILL_REDIS__CLUSTER_NODES`), and the same scripts run there: the
//! purchase, the release (a cancel), the reconciliation and the re-warm.
use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use seckill_tests::invariants::assert_invariants;
use seckill_tests::{poll_until, wait_until, Stack, StackOptions};

use super::{burst, count};

fn sale_key(sale: &str) -> String {
    format!("seckill:{{{sale}}}:sale")
}

/// Orders of `sale` that are `created`, by id.
async fn created(stack: &Stack, sale: &str) -> Vec<String> {
    use sea_orm::{ConnectionTrait, Statement};
    let sql =
        format!("SELECT order_id FROM orders WHERE sale_id = '{sale}' AND status = 'created'");
    stack
        .orders_db
        .query_all_raw(Statement::from_string(sea_orm::DbBackend::Postgres, sql))
        .await
        .expect("orders")
        .iter()
        .map(|row| row.try_get::<String>("", "order_id").expect("order_id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sales_spread_over_a_cluster_sell_exactly_their_stock_and_reconcile() {
    let stack = Stack::start_with(StackOptions {
        redis_cluster: true,
        env: vec![
            // Reconciliation only when asked for; a lost sale back at once.
            ("SECKILL_RECONCILE__INTERVAL_MS".into(), "3600000".into()),
            ("SECKILL_RECONCILE__GRACE_MS".into(), "300".into()),
            ("SECKILL_RECONCILE__REWARM_DELAY_MS".into(), "2000".into()),
            ("SECKILL_RECONCILE__REWARM_CHECK_MS".into(), "100".into()),
        ],
        ..StackOptions::default()
    })
    .await;
    let cluster = stack.redis_cluster.as_ref().expect("cluster");

    // Sales until every master holds at least one (bounded: a random id
    // lands on each of three masters with probability 1/3).
    let (mut sales, mut masters) = (Vec::new(), BTreeSet::new());
    while masters.len() < 3 && sales.len() < 30 {
        let sale = stack.active_sale(20).await;
        masters.insert(cluster.port_of(&sale_key(&sale)).await);
        sales.push(sale);
    }
    assert_eq!(masters.len(), 3, "{} sales on {masters:?}", sales.len());

    // The burst: 40 buyers for each sale's 20 units, all sales at once.
    let bursts = sales.iter().enumerate().map(|(i, sale)| {
        let tokens: Vec<String> = (0..40)
            .map(|u| stack.token(&format!("cluster-{i}-{u}")))
            .collect();
        let stack = &stack;
        async move { burst(stack, sale, &tokens, 20).await }
    });
    let answers = futures::future::join_all(bursts).await;
    for (sale, statuses) in sales.iter().zip(&answers) {
        assert_eq!(count(statuses, 202), 20, "{sale}: {statuses:?}");
        assert_eq!(count(statuses, 410), 20, "{sale}: {statuses:?}");
    }
    let mut accepted = Vec::new();
    for sale in &sales {
        let orders = wait_until("20 orders persisted", Duration::from_secs(60), || async {
            let orders = created(&stack, sale).await;
            (orders.len() == 20).then_some(orders)
        })
        .await;
        assert_invariants(&stack, sale, &orders).await;
        accepted.push(orders);
    }

    // The release: a cancelled order's unit goes back to its sale's shard.
    let (sale, order) = (&sales[0], &accepted[0][0]);
    let row = {
        use sea_orm::{ConnectionTrait, Statement};
        let sql = format!("SELECT user_id FROM orders WHERE order_id = '{order}'");
        stack
            .orders_db
            .query_one_raw(Statement::from_string(sea_orm::DbBackend::Postgres, sql))
            .await
            .expect("order row")
            .expect("order exists")
    };
    let user: String = row.try_get("", "user_id").expect("user_id");
    let response = stack
        .http
        .post(format!(
            "{}/api/v1/orders/{order}/cancel",
            stack.gateway_url
        ))
        .bearer_auth(stack.token(&user))
        .send()
        .await
        .expect("gateway reachable");
    assert_eq!(response.status().as_u16(), 200);
    stack.wait_redis_holds(sale, 1, 19).await;
    let (status, body) = stack
        .purchase(&stack.token("late-buyer"), sale, json!({}))
        .await;
    assert_eq!(status, 202, "the returned unit sells again: {body}");
    stack.wait_redis_holds(sale, 0, 20).await;

    // The reconciliation: drift injected on another sale's shard is found
    // and repaired there.
    let drifted = &sales[1];
    let mut redis = stack.redis().await;
    let _: i64 = redis::cmd("HINCRBY")
        .arg(sale_key(drifted))
        .arg("stock")
        .arg(3)
        .query_async(&mut redis)
        .await
        .expect("HINCRBY");
    let entry = wait_until("the drift repaired", Duration::from_secs(20), || async {
        let (status, report) = stack.admin_post("/api/v1/admin/reconcile", json!({})).await;
        assert_eq!(status, 200, "{report}");
        let entry: Value = report["sales"]
            .as_array()?
            .iter()
            .find(|s| s["sale_id"] == drifted.as_str())
            .cloned()?;
        (entry["stock_adjustment"] == -3).then_some(entry)
    })
    .await;
    assert_eq!(stack.redis_stock(drifted).await, 0, "{entry}");

    // The re-warm: one shard loses a sale (its keys deleted, as a shard
    // restarted empty would). The warm marker lives on some other shard and
    // survived: inventory-service takes it back when it sees the sale
    // missing (within `rewarm_check`; until then an unknown-sale answer is
    // possible, README "Redis Cluster"). From then on a buyer is told
    // "being restored" (503), never `sale_not_found`, until the sale comes
    // back from PostgreSQL with its buyers and no stock.
    let lost = &sales[2];
    let keys = [sale_key(lost), format!("seckill:{{{lost}}}:buyers")];
    let _: i64 = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut redis)
        .await
        .expect("DEL");
    wait_until(
        "the warm marker taken back",
        Duration::from_secs(10),
        || {
            let mut redis = redis.clone();
            async move {
                let warm: bool = redis::cmd("EXISTS")
                    .arg("seckill:warm")
                    .query_async(&mut redis)
                    .await
                    .ok()?;
                (!warm).then_some(())
            }
        },
    )
    .await;
    let answers = std::sync::Mutex::new(Vec::<(u16, Value)>::new());
    let n = std::sync::atomic::AtomicUsize::new(0);
    let back = poll_until(Duration::from_secs(30), Duration::from_millis(20), || {
        let user = format!(
            "cluster-2-{}",
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 40
        );
        let (stack, answers) = (&stack, &answers);
        async move {
            let answer = stack.purchase(&stack.token(&user), lost, json!({})).await;
            let status = answer.0;
            answers.lock().expect("answers").push(answer);
            (status != 503).then_some(()).ok_or(())
        }
    })
    .await;
    let answers = answers.into_inner().expect("answers");
    assert!(back.is_ok(), "never re-warmed: {:?}", answers.last());
    assert_eq!(answers[0].0, 503, "{:?}", answers[0]);
    // Back with its buyers and no stock: a duplicate or sold out.
    let (status, body) = answers.last().expect("an answer");
    assert!([409, 410].contains(status), "{status} {body}");
    for (status, body) in &answers {
        assert!([503, 409, 410].contains(status), "{status} {body}");
    }
    assert_invariants(&stack, lost, &accepted[2]).await;
}
