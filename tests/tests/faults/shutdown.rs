//! Shutdown completes: on SIGTERM each service stops intake, and its
//! `run_until_stopped` returns only once every task it spawned has ended its
//! round (`seckill_common::tasks`), then the producer flushes.
use std::time::Duration;

use serde_json::{json, Value};

use seckill_tests::process::Process;
use seckill_tests::{blocking, poll_until, Stack, StackOptions};

/// The JSON log lines of `process`, parsed.
fn log_lines(process: &Process) -> Vec<Value> {
    std::fs::read_to_string(process.log_path())
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// SIGTERMs `process` and checks, from its log, that each of `tasks`
/// finished before the service said it stopped, and that none was left.
fn terminate_and_check(process: &mut Process, tasks: &[&str]) {
    let status = process
        .terminate(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("{} had to be killed", process.name));
    assert!(status.success(), "{} exited with {status}", process.name);
    let lines = log_lines(process);
    let stopped = lines
        .iter()
        .position(|l| l["message"] == "stopped")
        .unwrap_or_else(|| panic!("{} never logged that it stopped", process.name));
    assert_eq!(
        lines[stopped]["fields"]["all_finished"], true,
        "{}: {}",
        process.name, lines[stopped]
    );
    for task in tasks {
        let finished = lines
            .iter()
            .position(|l| l["message"] == "task finished" && l["fields"]["task"] == *task);
        assert!(
            finished.is_some_and(|at| at < stopped),
            "{}: task {task} did not finish before the service stopped",
            process.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_waits_for_all_its_tasks_before_it_exits() {
    let mut stack = Stack::start().await;
    let sale = stack.active_sale(3).await;
    let (status, body) = stack.purchase(&stack.token("u1"), &sale, json!({})).await;
    assert_eq!(status, 202, "{body}");

    blocking(|| {
        terminate_and_check(&mut stack.gateway, &["http-stop", "limits-housekeeping"]);
        terminate_and_check(
            &mut stack.orders,
            &["http-stop", "consumer", "outbox-relay", "expiry"],
        );
        terminate_and_check(
            &mut stack.inventory,
            &[
                "http-stop",
                "consumer",
                "compensation",
                "stock-gauge",
                "sweeper",
                "reconciler",
            ],
        );
    });
}

/// A purchase whose produce was not acknowledged (504, outcome unknown) is
/// produced again in the background. A SIGTERM meanwhile must not end that:
/// the gateway stays up while the broker's answers are held, and once they
/// flow, the order is enqueued and created, then the gateway exits.
/// Before the gateway tracked its tasks, it exited as soon as the producer's
/// queue emptied, and the order was never enqueued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_waits_for_an_order_of_unknown_outcome_to_be_enqueued() {
    let mut stack = Stack::start_with(StackOptions {
        broker_proxy: true,
        ..StackOptions::default()
    })
    .await;
    let sale = stack.active_sale(1).await;
    let token = stack.token("patient");
    let order = stack.purchase_of_unknown_outcome(&token, &sale).await;

    stack.gateway.signal("TERM");
    // Longer than one produce attempt (3 s): the first re-produce times out
    // too, and only a gateway that waits for its resolver produces again.
    let exited = poll_until(Duration::from_secs(4), Duration::from_millis(100), || {
        let running = stack.gateway.is_running();
        async move {
            if running {
                Err(())
            } else {
                Ok(())
            }
        }
    })
    .await;
    assert!(
        exited.is_err(),
        "the gateway exited while an order of unknown outcome was still being produced"
    );
    stack.broker_proxy.as_ref().expect("broker proxy").pass();
    let status = blocking(|| stack.gateway.wait_exit(Duration::from_secs(30)))
        .expect("the gateway exits once the order is enqueued");
    assert!(status.success(), "gateway exited with {status}");

    let created = poll_until(Duration::from_secs(60), Duration::from_millis(100), || {
        let sql = format!(
            "SELECT count(*) AS n FROM orders WHERE order_id = '{order}' AND status = 'created'"
        );
        let db = &stack.orders_db;
        async move {
            match Stack::count(db, &sql).await {
                1 => Ok(()),
                n => Err(n),
            }
        }
    })
    .await;
    assert_eq!(created, Ok(()), "order {order} was not created");
}
