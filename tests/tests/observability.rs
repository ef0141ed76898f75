//! One purchase, one trace; metrics that add up; logs that correlate.
//!
//! Jaeger cannot run here, so the test runs its own OTLP/gRPC trace receiver
//! (the opentelemetry-proto service definition, served by tonic) and points
//! every service at it with `OTEL_EXPORTER_OTLP_ENDPOINT`, exactly as the
//! Kubernetes manifests point them at Jaeger's collector.
#[path = "lifecycle/support.rs"]
mod support;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::stream::{self, StreamExt};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::{json, Value};

use seckill_common::transport::Transport;
use seckill_tests::{poll_until, wait_until, Stack, StackOptions};

// ---------------------------------------------------------------------------
// The OTLP receiver.

/// One exported span, flattened for assertions. Ids are lowercase hex, as
/// in `traceparent` and in the logs; a root span's `parent` is empty.
#[derive(Clone, Debug)]
struct Span {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    start: u64,
    attributes: HashMap<String, Value>,
}

impl Span {
    fn attr(&self, key: &str) -> Option<&Value> {
        self.attributes.get(key)
    }

    fn attr_str(&self, key: &str) -> &str {
        self.attr(key).and_then(Value::as_str).unwrap_or_default()
    }
}

#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<Span>>>);

impl Collected {
    fn spans(&self) -> Vec<Span> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }
}

#[tonic::async_trait]
impl TraceService for Collected {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| value(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(Span {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent: hex(&span.parent_span_id),
                    name: span.name,
                    kind: span.kind,
                    start: span.start_time_unix_nano,
                    attributes: span
                        .attributes
                        .iter()
                        .map(|kv| {
                            let v = value(kv.value.as_ref().and_then(|v| v.value.as_ref()));
                            (kv.key.clone(), v)
                        })
                        .collect(),
                });
            }
        }
        if let Ok(mut spans) = self.0.lock() {
            spans.extend(received);
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn value(v: Option<&any_value::Value>) -> Value {
    match v {
        Some(any_value::Value::StringValue(s)) => json!(s),
        Some(any_value::Value::IntValue(i)) => json!(i),
        Some(any_value::Value::BoolValue(b)) => json!(b),
        Some(any_value::Value::DoubleValue(d)) => json!(d),
        _ => Value::Null,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Serves OTLP/gRPC on a free loopback port until the test ends.
async fn receiver() -> (Collected, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let collected = Collected::default();
    let service = TraceServiceServer::new(collected.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    (collected, endpoint)
}

/// A stack whose services export to `endpoint`, in batches every 100 ms.
async fn traced_stack(endpoint: &str) -> Stack {
    traced_stack_on(endpoint, None).await
}

/// The same, on `transport` (`None`: the run's).
async fn traced_stack_on(endpoint: &str, transport: Option<Transport>) -> Stack {
    Stack::start_with(StackOptions {
        env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.into()),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
        ],
        transport,
        ..Default::default()
    })
    .await
}

/// The message key a messaging span carries, on either transport.
fn message_key(s: &Span) -> &str {
    match s.attr_str("messaging.kafka.message.key") {
        "" => s.attr_str("messaging.redis.message.key"),
        key => key,
    }
}

// ---------------------------------------------------------------------------
// Finding the spans of one purchase.

const SERVER: i32 = SpanKind::Server as i32;
const PRODUCER: i32 = SpanKind::Producer as i32;
const CONSUMER: i32 = SpanKind::Consumer as i32;

/// The spans of one purchase, each found by what it must be.
struct Purchase {
    http: Span,
    redis: Span,
    requested: Span,
    inventory_receive: Span,
    inventory_process: Span,
    inventory_db: Span,
    inventory_produce: Span,
    orders_receive: Span,
    orders_process: Span,
    orders_db: Span,
    orders_produce: Span,
}

fn one<'a>(
    spans: &'a [Span],
    what: &str,
    pred: impl Fn(&Span) -> bool,
) -> Result<&'a Span, String> {
    let found: Vec<&Span> = spans.iter().filter(|s| pred(s)).collect();
    match found.as_slice() {
        [span] => Ok(span),
        [] => Err(format!("no {what}")),
        many => Err(format!("{} spans match {what}: {many:#?}", many.len())),
    }
}

fn messaging(s: &Span, service: &str, kind: i32, operation: &str, topic: &str, key: &str) -> bool {
    s.service == service
        && s.kind == kind
        && s.attr_str("messaging.operation") == operation
        && s.attr_str("messaging.destination.name") == topic
        && message_key(s) == key
}

/// The purchase's spans in `spans` (one trace), or what is still missing.
fn purchase_spans(spans: &[Span], prefix: &str, order_id: &str) -> Result<Purchase, String> {
    let requested_topic = format!("{prefix}order-requested");
    let inventory_topic = format!("{prefix}inventory-events");
    let order_topic = format!("{prefix}order-events");
    let gw = "gateway";
    let inv = "inventory-service";
    let ord = "order-service";
    Ok(Purchase {
        http: one(spans, "gateway server span", |s| {
            s.service == gw && s.kind == SERVER && s.name.contains("/sales/{sale_id}/orders")
        })?
        .clone(),
        redis: one(spans, "redis span", |s| {
            s.service == gw && s.name == "redis.purchase_script"
        })?
        .clone(),
        requested: one(spans, "gateway produce span", |s| {
            messaging(s, gw, PRODUCER, "publish", &requested_topic, order_id)
        })?
        .clone(),
        inventory_receive: one(spans, "inventory receive span", |s| {
            messaging(s, inv, CONSUMER, "receive", &requested_topic, order_id)
        })?
        .clone(),
        inventory_process: one(spans, "inventory process span", |s| {
            messaging(s, inv, CONSUMER, "process", &requested_topic, order_id)
        })?
        .clone(),
        inventory_db: one(spans, "inventory db span", |s| {
            s.service == inv && s.name == "db.reserve"
        })?
        .clone(),
        inventory_produce: one(spans, "inventory produce span", |s| {
            messaging(s, inv, PRODUCER, "publish", &inventory_topic, order_id)
        })?
        .clone(),
        orders_receive: one(spans, "order-service receive span", |s| {
            messaging(s, ord, CONSUMER, "receive", &inventory_topic, order_id)
        })?
        .clone(),
        orders_process: one(spans, "order-service process span", |s| {
            messaging(s, ord, CONSUMER, "process", &inventory_topic, order_id)
        })?
        .clone(),
        orders_db: one(spans, "order-service db span", |s| {
            s.service == ord && s.name == "db.persist_order"
        })?
        .clone(),
        orders_produce: one(spans, "order-service produce span", |s| {
            messaging(s, ord, PRODUCER, "publish", &order_topic, order_id)
        })?
        .clone(),
    })
}

/// The trace id of the gateway's produce span for `order_id`, once exported.
async fn trace_of(collected: &Collected, order_id: &str) -> String {
    wait_until(
        &format!("the produce span of {order_id}"),
        Duration::from_secs(30),
        || async {
            collected
                .spans()
                .into_iter()
                .find(|s| {
                    s.service == "gateway" && s.kind == PRODUCER && message_key(s) == order_id
                })
                .map(|s| s.trace_id)
        },
    )
    .await
}

/// Waits until the whole purchase is exported under `trace_id`.
async fn whole_purchase(
    collected: &Collected,
    stack: &Stack,
    trace_id: &str,
    order_id: &str,
) -> Purchase {
    let every = Duration::from_millis(50);
    poll_until(Duration::from_secs(30), every, || async {
        purchase_spans(&collected.trace(trace_id), &stack.topic_prefix, order_id)
    })
    .await
    .unwrap_or_else(|last| {
        panic!(
            "trace {trace_id} of {order_id} incomplete after 30 s: {last}\nspans: {:#?}\n{}",
            collected.trace(trace_id),
            stack.logs()
        )
    })
}

fn assert_child(child: &Span, parent: &Span) {
    assert_eq!(
        (child.trace_id.as_str(), child.parent.as_str()),
        (parent.trace_id.as_str(), parent.span_id.as_str()),
        "{} ({}) must be a child of {} ({})",
        child.name,
        child.service,
        parent.name,
        parent.service
    );
}

async fn buy(stack: &Stack, user: &str, sale: &str) -> String {
    let (status, body) = stack.purchase(&stack.token(user), sale, json!({})).await;
    assert_eq!(status, 202, "{body}\n{}", stack.logs());
    body["order_id"].as_str().expect("order id").to_owned()
}

// ---------------------------------------------------------------------------
// Traces.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_purchase_is_one_trace_across_the_three_services() {
    one_purchase_is_one_trace(Transport::Kafka).await;
}

/// The trace context travels in the stream entries' fields: the purchase
/// script's `XADD` carries the gateway's publish span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_purchase_is_one_trace_on_redis_streams_too() {
    one_purchase_is_one_trace(Transport::RedisStreams).await;
}

async fn one_purchase_is_one_trace(transport: Transport) {
    let (collected, endpoint) = receiver().await;
    let stack = traced_stack_on(&endpoint, Some(transport)).await;
    let streams = transport == Transport::RedisStreams;
    let sale = stack.active_sale(5).await;

    let order_id = buy(&stack, "alice", &sale).await;
    let trace_id = trace_of(&collected, &order_id).await;
    let p = whole_purchase(&collected, &stack, &trace_id, &order_id).await;

    // The gateway: the server span is the root; Redis, then the produce.
    assert!(p.http.parent.is_empty(), "{:?}", p.http);
    assert_eq!(
        p.http.attr_str("http.route"),
        "/api/v1/sales/{sale_id}/orders"
    );
    assert_child(&p.redis, &p.http);
    assert_eq!(p.redis.attr_str("db.system"), "redis");
    assert_eq!(p.redis.attr_str("outcome"), "accepted");
    // Kafka: the produce follows the script. Streams: the script itself
    // publishes, so the publish span is the script's child.
    if streams {
        assert_child(&p.requested, &p.redis);
    } else {
        assert_child(&p.requested, &p.http);
        assert!(p.http.start <= p.redis.start && p.redis.start <= p.requested.start);
    }

    // The produce span follows the messaging conventions.
    let system = if streams { "redis" } else { "kafka" };
    let partition = p
        .requested
        .attr("messaging.kafka.destination.partition")
        .and_then(Value::as_i64);
    assert_eq!(partition.is_some(), !streams, "{:?}", p.requested);
    assert_eq!(p.requested.attr_str("messaging.system"), system);
    assert_eq!(
        p.requested.name,
        format!("{}order-requested publish", stack.topic_prefix)
    );

    // inventory-service: receive and process are children of the producer
    // span (its context came in the Kafka headers or the entry's fields);
    // database and produce spans are children of process.
    for consumer in [&p.inventory_receive, &p.inventory_process] {
        assert_child(consumer, &p.requested);
        assert_eq!(consumer.attr_str("messaging.system"), system);
        assert_eq!(
            consumer
                .attr("messaging.kafka.destination.partition")
                .and_then(Value::as_i64),
            partition
        );
        if streams {
            assert_eq!(
                consumer.attr_str("messaging.redis.stream"),
                format!("seckill:{{{sale}}}:orders")
            );
        }
    }
    assert_child(&p.inventory_db, &p.inventory_process);
    assert_eq!(p.inventory_db.attr_str("db.system"), "postgresql");
    assert_eq!(p.inventory_db.attr_str("outcome"), "reserved");
    assert_child(&p.inventory_produce, &p.inventory_process);
    assert!(p.inventory_receive.start <= p.inventory_process.start);

    // order-service, likewise, under inventory-service's produce span.
    for consumer in [&p.orders_receive, &p.orders_process] {
        assert_child(consumer, &p.inventory_produce);
    }
    assert_child(&p.orders_db, &p.orders_process);
    assert_eq!(p.orders_db.attr_str("db.system"), "postgresql");
    assert_child(&p.orders_produce, &p.orders_process);

    let services: HashSet<String> = collected
        .trace(&trace_id)
        .into_iter()
        .map(|s| s.service)
        .collect();
    assert_eq!(services.len(), 3, "{services:?}");

    // A second purchase is a second trace, sharing no span with the first.
    let second = buy(&stack, "bob", &sale).await;
    let second_trace = trace_of(&collected, &second).await;
    assert_ne!(second_trace, trace_id);
    let q = whole_purchase(&collected, &stack, &second_trace, &second).await;
    assert!(q.http.parent.is_empty());
    let first_keys: HashSet<String> = collected
        .trace(&trace_id)
        .iter()
        .map(|s| message_key(s).to_owned())
        .filter(|k| !k.is_empty())
        .collect();
    assert_eq!(first_keys, HashSet::from([order_id]));
}

/// The first exported span that `pred` picks, once there is one.
async fn exported(collected: &Collected, what: &str, pred: impl Fn(&Span) -> bool) -> Span {
    wait_until(what, Duration::from_secs(30), || async {
        collected.spans().into_iter().find(|s| pred(s))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_events_continue_the_trace_of_what_caused_them() {
    let (collected, endpoint) = receiver().await;
    let mut env = support::fast_lifecycle();
    env.extend([
        ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), endpoint),
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "100".to_owned()),
    ]);
    let stack = Stack::start_with(StackOptions {
        env,
        ..Default::default()
    })
    .await;
    let order_topic = format!("{}order-events", stack.topic_prefix);
    let order_event = |s: &Span, order: &str, event: &str| {
        s.attr_str("messaging.destination.name") == order_topic
            && s.attr_str("messaging.kafka.message.key") == order
            && s.attr_str("event.type") == event
    };

    // Paying: the outbox relay publishes OrderPaid later, from another task,
    // yet in the trace of the payment request that caused it.
    let sale = support::sale_with(&stack, 5, 900, 500).await;
    let alice = stack.token("alice");
    let paid = support::buy(&stack, &alice, &sale).await;
    support::wait_order_status(&stack, &paid, "created").await;
    let (status, body) = support::pay(&stack, &alice, &paid, "trace-pay-1").await;
    assert_eq!(status, 200, "{body}\n{}", stack.logs());
    let http = exported(&collected, "the gateway's pay span", |s| {
        s.service == "gateway" && s.kind == SERVER && s.name.contains("/orders/{order_id}/pay")
    })
    .await;
    assert!(
        http.parent.is_empty(),
        "the client sent no context: {http:?}"
    );
    let produce = exported(&collected, "the OrderPaid produce span", |s| {
        s.service == "order-service" && s.kind == PRODUCER && order_event(s, &paid, "OrderPaid")
    })
    .await;
    assert_eq!(
        produce.trace_id,
        http.trace_id,
        "OrderPaid continues the payment's trace: {:#?}",
        collected.trace(&http.trace_id)
    );
    // The gateway's request span is the parent of order-service's.
    let trace = collected.trace(&http.trace_id);
    let served = one(&trace, "order-service's pay span", |s| {
        s.service == "order-service" && s.kind == SERVER && s.name.contains("/pay")
    })
    .unwrap_or_else(|e| panic!("{e}: {trace:#?}"));
    assert_child(served, &http);

    // Expiry: no request is behind it, so OrderExpired continues the
    // purchase's trace, and so does inventory-service's release of the stock.
    let sale = support::sale_with(&stack, 5, 1, 500).await;
    let bob = stack.token("bob");
    let expired = support::buy(&stack, &bob, &sale).await;
    let purchase = trace_of(&collected, &expired).await;
    support::wait_order_status(&stack, &expired, "expired").await;
    support::wait_reservation_status(&stack, &expired, "released").await;
    let produce = exported(&collected, "the OrderExpired produce span", |s| {
        s.service == "order-service"
            && s.kind == PRODUCER
            && order_event(s, &expired, "OrderExpired")
    })
    .await;
    let process = exported(
        &collected,
        "inventory-service's OrderExpired process span",
        |s| {
            s.service == "inventory-service"
                && s.kind == CONSUMER
                && s.attr_str("messaging.operation") == "process"
                && order_event(s, &expired, "OrderExpired")
        },
    )
    .await;
    assert_eq!(
        (produce.trace_id.as_str(), process.trace_id.as_str()),
        (purchase.as_str(), purchase.as_str()),
        "OrderExpired continues the purchase's trace: {:#?}",
        collected.trace(&purchase)
    );
    assert_child(&process, &produce);
    // The release's database and Redis work happen inside that span.
    for name in ["db.release", "redis.release"] {
        let work = exported(&collected, name, |s| {
            s.service == "inventory-service" && s.name == name && s.parent == process.span_id
        })
        .await;
        assert_eq!(work.trace_id, purchase);
    }
    let paid_trace = collected.trace(&http.trace_id);
    assert!(
        paid_trace
            .iter()
            .all(|s| s.attr_str("messaging.kafka.message.key") != expired),
        "the two orders' traces stay apart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_logs_keep_the_whole_trace() {
    let (collected, endpoint) = receiver().await;
    // What an operator does to cut log volume in a busy sale.
    let stack = Stack::start_with(StackOptions {
        env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()),
            ("RUST_LOG".into(), "warn".into()),
        ],
        ..Default::default()
    })
    .await;
    let sale = stack.active_sale(5).await;
    let order_id = buy(&stack, "quiet", &sale).await;
    let trace_id = trace_of(&collected, &order_id).await;
    let p = whole_purchase(&collected, &stack, &trace_id, &order_id).await;
    assert!(p.http.parent.is_empty(), "{:?}", p.http);
    assert_child(&p.redis, &p.http);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_still_batched_are_flushed_on_shutdown() {
    let (collected, endpoint) = receiver().await;
    // A batch delay far longer than the test: only the shutdown flush exports.
    let mut stack = Stack::start_with(StackOptions {
        env: vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY".into(), "600000".into()),
        ],
        ..Default::default()
    })
    .await;
    let sale = stack.active_sale(5).await;
    let order_id = buy(&stack, "erin", &sale).await;
    let exported = |c: &Collected| {
        c.spans().into_iter().any(|s| {
            s.service == "gateway" && s.attr_str("messaging.kafka.message.key") == order_id
        })
    };
    assert!(!exported(&collected), "exported before the batch delay");

    let status = stack.gateway.terminate(Duration::from_secs(20));
    assert!(
        status.is_some_and(|s| s.success()),
        "clean exit: {status:?}\n{}",
        stack.logs()
    );
    wait_until("the flushed spans", Duration::from_secs(10), || async {
        exported(&collected).then_some(())
    })
    .await;
}

fn traceparent() -> (String, String) {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let span = uuid::Uuid::new_v4().simple().to_string()[..16].to_owned();
    (id, span)
}

async fn buy_with_traceparent(stack: &Stack, user: &str, sale: &str, header: &str) -> String {
    let response = stack
        .http
        .post(format!("{}/api/v1/sales/{sale}/orders", stack.gateway_url))
        .bearer_auth(stack.token(user))
        .header("traceparent", header)
        .json(&json!({}))
        .send()
        .await
        .expect("gateway reachable");
    assert_eq!(response.status().as_u16(), 202);
    let body: Value = response.json().await.expect("json");
    body["order_id"].as_str().expect("order id").to_owned()
}

/// The JSON lines of a service's log; every line must be JSON.
fn json_lines(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).expect("log file");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {l}", path.display()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_traceparent_is_continued_and_logs_carry_the_trace_id() {
    let (collected, endpoint) = receiver().await;
    let stack = traced_stack(&endpoint).await;
    let sale = stack.active_sale(5).await;

    // Not sampled upstream: parent-based sampling exports nothing of it,
    // yet its logs still carry its trace id.
    let (unsampled, unsampled_parent) = traceparent();
    let unsampled_order = buy_with_traceparent(
        &stack,
        "carol",
        &sale,
        &format!("00-{unsampled}-{unsampled_parent}-00"),
    )
    .await;

    let (trace_id, parent) = traceparent();
    let order_id =
        buy_with_traceparent(&stack, "dave", &sale, &format!("00-{trace_id}-{parent}-01")).await;
    let p = whole_purchase(&collected, &stack, &trace_id, &order_id).await;
    assert_eq!(
        p.http.parent, parent,
        "the server span continues the caller's span"
    );
    assert!(
        collected.trace(&unsampled).is_empty(),
        "an unsampled parent is honoured: {:#?}",
        collected.trace(&unsampled)
    );

    // Wait until order-service has processed both orders.
    let sql = format!("SELECT count(*) AS n FROM orders WHERE sale_id = '{sale}'");
    wait_until("both orders persisted", Duration::from_secs(30), || async {
        (Stack::count(&stack.orders_db, &sql).await == 2).then_some(())
    })
    .await;

    for process in [&stack.gateway, &stack.inventory, &stack.orders] {
        let lines = wait_until(
            &format!("{} to log both purchases", process.name),
            Duration::from_secs(10),
            || async {
                let lines = json_lines(process.log_path());
                let has = |id: &str| lines.iter().any(|l| l["trace_id"] == id);
                (has(&trace_id) && has(&unsampled)).then_some(lines)
            },
        )
        .await;
        for line in &lines {
            for field in ["timestamp", "level", "target"] {
                assert!(line[field].is_string(), "{field} missing: {line}");
            }
        }
        let traced: Vec<&Value> = lines.iter().filter(|l| l["trace_id"] == trace_id).collect();
        assert!(traced
            .iter()
            .all(|l| l["span_id"].as_str().is_some_and(|s| s.len() == 16)));
        let mentions = |id: &str| {
            traced
                .iter()
                .any(|l| l.to_string().contains(id) || l["fields"].to_string().contains(id))
        };
        assert!(
            mentions(&order_id),
            "{}: a line of the purchase names its order: {traced:#?}",
            process.name
        );
    }
    let _ = unsampled_order;
}

// ---------------------------------------------------------------------------
// Metrics.

/// One sample of the Prometheus text format: name, labels, value.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format (version 0.0.4): `# HELP`/`# TYPE`
/// comments, then `name{label="value",...} value [timestamp]` lines, with
/// `\\`, `\"` and `\n` escaped in label values. Panics on anything else, so
/// a malformed exposition fails the test.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            if words.first() == Some(&"TYPE") {
                assert!(
                    words.len() == 3
                        && ["counter", "gauge", "histogram", "summary", "untyped"]
                            .contains(&words[2]),
                    "bad TYPE line: {line}"
                );
            }
            continue;
        }
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(line.len());
        let name = &line[..name_end];
        assert!(!name.is_empty(), "no metric name: {line}");
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(after) = rest.strip_prefix('{') {
            let mut chars = after.char_indices().peekable();
            loop {
                while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
                    chars.next();
                }
                if let Some((i, '}')) = chars.peek().copied() {
                    rest = &after[i + 1..];
                    break;
                }
                let mut key = String::new();
                for (_, c) in chars.by_ref() {
                    if c == '=' {
                        break;
                    }
                    key.push(c);
                }
                assert_eq!(chars.next().map(|(_, c)| c), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        Some('\\') => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some(c @ ('\\' | '"')) => value.push(c),
                            other => panic!("bad escape {other:?} in {line}"),
                        },
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => panic!("unterminated label value: {line}"),
                    }
                }
                assert!(
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad label name {key:?}: {line}"
                );
                labels.insert(key, value);
            }
        }
        let mut fields = rest.split_whitespace();
        let raw = fields.next().unwrap_or_else(|| panic!("no value: {line}"));
        let value = match raw {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("bad value {v:?} ({e}): {line}")),
        };
        if let Some(ts) = fields.next() {
            ts.parse::<i64>()
                .unwrap_or_else(|e| panic!("bad timestamp ({e}): {line}"));
        }
        assert!(fields.next().is_none(), "trailing text: {line}");
        samples.push(Sample {
            name: name.to_owned(),
            labels,
            value,
        });
    }
    samples
}

struct Scrape(Vec<Sample>);

impl Scrape {
    /// The value of the one sample named `name` whose labels include `labels`
    /// (0 when there is none: an untouched counter is not exported).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self
            .0
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(found.len() <= 1, "ambiguous {name} {labels:?}: {found:#?}");
        found.first().map_or(0.0, |s| s.value)
    }

    fn all(&self, name: &str) -> Vec<&Sample> {
        self.0.iter().filter(|s| s.name == name).collect()
    }
}

async fn scrape(stack: &Stack, base: &str) -> Scrape {
    let response = stack
        .http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics reachable");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "{content_type}"
    );
    Scrape(parse_prometheus(&response.text().await.expect("body")))
}

async fn purchases(stack: &Stack, sale: &str, users: &[String], in_flight: usize) -> Vec<u16> {
    stream::iter(users)
        .map(|u| async move { stack.purchase(&stack.token(u), sale, json!({})).await.0 })
        .buffer_unordered(in_flight)
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_after_a_burst_match_what_the_burst_did() {
    let stack = Stack::start().await;
    let sale = stack.active_sale(20).await;
    let now = Utc::now();
    let later = stack
        .create_sale(
            5,
            now + chrono::Duration::hours(1),
            now + chrono::Duration::hours(2),
        )
        .await;

    // 10 buy, the same 10 try again, 20 more race for the last 10 units,
    // and 3 knock before the other sale opens.
    let first: Vec<String> = (0..10).map(|i| format!("early-{i}")).collect();
    let late: Vec<String> = (0..20).map(|i| format!("late-{i}")).collect();
    let mut statuses = purchases(&stack, &sale, &first, 10).await;
    statuses.extend(purchases(&stack, &sale, &first, 10).await);
    statuses.extend(purchases(&stack, &sale, &late, 20).await);
    statuses.extend(purchases(&stack, &later, &first[..3], 3).await);
    let tally = |code: u16| statuses.iter().filter(|s| **s == code).count() as f64;
    assert_eq!(
        (tally(202), tally(409), tally(410), tally(403)),
        (20.0, 10.0, 10.0, 3.0),
        "{statuses:?}"
    );

    let gateway = scrape(&stack, &stack.gateway_url).await;
    let outcomes = "seckill_purchase_outcomes_total";
    for (outcome, code) in [
        ("accepted", 202),
        ("duplicate", 409),
        ("sold_out", 410),
        ("not_active", 403),
    ] {
        assert_eq!(
            gateway.value(outcomes, &[("outcome", outcome)]),
            tally(code),
            "{outcome}"
        );
        let route = [
            ("method", "POST"),
            ("route", "/api/v1/sales/{sale_id}/orders"),
            ("status", &code.to_string()),
        ];
        assert_eq!(
            gateway.value("seckill_http_requests_total", &route),
            tally(code),
            "requests with status {code}"
        );
        assert_eq!(
            gateway.value("seckill_http_request_duration_seconds_count", &route),
            tally(code)
        );
        let inf = [route.as_slice(), &[("le", "+Inf")]].concat();
        assert_eq!(
            gateway.value("seckill_http_request_duration_seconds_bucket", &inf),
            tally(code)
        );
    }
    assert_eq!(
        gateway.value("seckill_kafka_produce_seconds_count", &[]),
        20.0
    );
    assert_eq!(
        gateway.value("seckill_kafka_produce_errors_total", &[]),
        0.0
    );
    // Every purchase that reached the script (all but the 10 the front door
    // answered once the sale was known to be sold out) timed its round trip.
    let scripted = gateway.value(
        "seckill_redis_script_seconds_count",
        &[("outcome", "answered")],
    );
    assert!(
        (tally(202) + tally(409) + tally(403)..=statuses.len() as f64).contains(&scripted),
        "{scripted} script round trips for {} purchases",
        statuses.len()
    );
    // The standard process metrics, on every service.
    for (service, url) in [
        ("gateway", &stack.gateway_url),
        ("inventory-service", &stack.inventory_url),
        ("order-service", &stack.order_url),
    ] {
        let m = scrape(&stack, url).await;
        // CPU is counted in whole seconds: a young process may show 0.
        assert_eq!(m.all("process_cpu_seconds_total").len(), 1, "{service}");
        for family in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
        ] {
            assert!(m.value(family, &[]) > 0.0, "{service}: {family}");
        }
    }

    // Downstream: every accepted order processed once, stock and lag settle.
    let requested = format!("{}order-requested", stack.topic_prefix);
    let inventory_events = format!("{}inventory-events", stack.topic_prefix);
    let processed = "seckill_consumer_events_processed_total";
    let inventory = wait_until(
        "inventory-service's metrics to settle",
        Duration::from_secs(45),
        || async {
            let m = scrape(&stack, &stack.inventory_url).await;
            let lag = m.all("seckill_consumer_lag");
            let settled = m.value(processed, &[("topic", &requested)]) == 20.0
                && m.value("seckill_sale_stock_remaining", &[("sale_id", &sale)]) == 0.0
                && !lag.is_empty()
                && lag.iter().all(|s| s.value == 0.0);
            settled.then_some(m)
        },
    )
    .await;
    assert!(inventory
        .all("seckill_sale_stock_remaining")
        .iter()
        .all(|s| s.labels["sale_id"] != later));
    assert!(inventory
        .all("seckill_consumer_lag")
        .iter()
        .any(|s| s.labels["topic"] == requested && s.labels["partition"].parse::<u32>().is_ok()));
    assert_eq!(
        inventory.value(
            "seckill_consumer_events_dead_lettered_total",
            &[("topic", &requested)]
        ),
        0.0
    );
    // Statements are counted. Not one per order: a consumer batch writes
    // all its orders with one INSERT.
    assert!(
        inventory.value(
            "seckill_db_query_duration_seconds_count",
            &[("operation", "INSERT"), ("outcome", "ok")]
        ) >= 1.0
    );
    assert_eq!(
        inventory.value(
            "seckill_http_requests_total",
            &[
                ("method", "POST"),
                ("route", "/internal/sales"),
                ("status", "201")
            ]
        ),
        2.0
    );

    let orders = wait_until(
        "order-service's metrics to settle",
        Duration::from_secs(45),
        || async {
            let m = scrape(&stack, &stack.order_url).await;
            let lag = m.all("seckill_consumer_lag");
            let settled = m.value(processed, &[("topic", &inventory_events)]) == 20.0
                && !lag.is_empty()
                && lag.iter().all(|s| s.value == 0.0);
            settled.then_some(m)
        },
    )
    .await;
    assert!(
        orders.value(
            "seckill_db_query_duration_seconds_count",
            &[("operation", "INSERT"), ("outcome", "ok")]
        ) >= 1.0
    );
    assert!(
        orders.value(
            "seckill_http_requests_total",
            &[("route", "/readyz"), ("status", "200")]
        ) >= 1.0
    );

    let seen: HashSet<&str> = [&gateway, &inventory, &orders]
        .iter()
        .flat_map(|m| m.0.iter().map(|s| family(&s.name)))
        .collect();
    let always = |n: &&&str| !ONLY_ON_FAILURE.contains(n) && !ONLY_ON_REDIS_STREAMS.contains(n);
    for name in EXPORTED.iter().filter(always) {
        assert!(seen.contains(name), "{name} is not exported");
    }
}

/// Every metric family the services export (histograms by base name).
const EXPORTED: &[&str] = &[
    "seckill_http_requests_total",
    "seckill_http_request_duration_seconds",
    "seckill_purchase_outcomes_total",
    "seckill_kafka_produce_seconds",
    "seckill_kafka_produce_errors_total",
    "seckill_redis_script_seconds",
    "seckill_consumer_lag",
    "seckill_consumer_events_processed_total",
    "seckill_consumer_events_retried_total",
    "seckill_consumer_events_dead_lettered_total",
    "seckill_db_query_duration_seconds",
    "seckill_sale_stock_remaining",
    "seckill_reconcile_repairs_total",
    "seckill_saga_sweeps_total",
    "seckill_consumer_pending",
];

/// Families only the Redis Streams transport exports (checked by
/// `faults/streams.rs`; this burst runs on Kafka).
const ONLY_ON_REDIS_STREAMS: &[&str] = &["seckill_consumer_pending"];

/// Families that have a series only once something went wrong.
const ONLY_ON_FAILURE: &[&str] = &[
    "seckill_consumer_events_retried_total",
    "seckill_consumer_events_dead_lettered_total",
    "seckill_reconcile_repairs_total",
    "seckill_saga_sweeps_total",
];

fn family(sample: &str) -> &str {
    ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|suffix| {
            sample
                .strip_suffix(suffix)
                .filter(|base| EXPORTED.contains(base))
        })
        .unwrap_or(sample)
}

#[test]
fn the_dashboard_plots_what_the_services_export() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/grafana/seckill-dashboard.json"
    );
    let text = std::fs::read_to_string(path).expect("dashboard");
    let dashboard: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut used = HashSet::new();
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(at) = rest.find("seckill_") {
                let tail = &rest[at..];
                let end = tail
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(tail.len());
                let name = family(&tail[..end]);
                assert!(EXPORTED.contains(&name), "{name} is not exported: {expr}");
                used.insert(name.to_owned());
                rest = &tail[end..];
            }
        }
    }
    for needed in [
        "seckill_http_requests_total",
        "seckill_purchase_outcomes_total",
        "seckill_http_request_duration_seconds",
        "seckill_consumer_lag",
        "seckill_sale_stock_remaining",
        "seckill_consumer_events_dead_lettered_total",
    ] {
        assert!(used.contains(needed), "the dashboard lacks {needed}");
    }
}

#[test]
fn the_parser_reads_escapes_and_braces_in_label_values() {
    let text = "# HELP x_total Some help.\n# TYPE x_total counter\n\
        x_total{route=\"/a/{id}\",msg=\"say \\\"hi\\\", \\\\ \\n\"} 3\n\
        y 1.5e3 1700000000000\n";
    let samples = parse_prometheus(text);
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0].labels["route"], "/a/{id}");
    assert_eq!(samples[0].labels["msg"], "say \"hi\", \\ \n");
    assert_eq!(samples[0].value, 3.0);
    assert_eq!(samples[1].value, 1500.0);
}
