//! The Kubernetes manifests (k8s/) against the services' own configuration.
//!
//! Fails when a manifest gives a service a `SECKILL_*` variable it does not
//! read, listens or probes on a port the service does not serve, probes a path
//! other than the health endpoints, or refers to a ConfigMap/Secret key that
//! does not exist; also when the drain budget, the Service and Ingress ports,
//! the in-cluster URLs or the consumer scaling disagree with the services.
//!
//! The base is read directly (no tool needed); the overlays are rendered with
//! `kubectl kustomize` when kubectl is installed (deploy/check-manifests.sh
//! installs it), and skipped with a note otherwise.
#[path = "manifests/k8s.rs"]
mod k8s;

// The code's own shape is checked here too: like the manifests, it needs
// no server, and one binary less is seconds off every cold build.
#[path = "manifests/architecture.rs"]
mod architecture;

use std::collections::{BTreeMap, BTreeSet};

use seckill_common::http::{HEALTH_PATH, METRICS_PATH, READY_PATH};
use seckill_common::settings::{KafkaSettings, Topics};
use serde_norway::Value;

use k8s::{resolve_env, resolve_port, EnvValue, Manifests};

const OVERLAYS: [&str; 3] = ["dev", "prod", "prod-keda"];
/// The Secret the prod overlay leaves to the cluster's secret store.
const SECRET: &str = "seckill-secrets";

/// A consumer's group id and the topic it reads (named from the prefix).
type Consumes = (String, fn(&Topics) -> String);

/// What the code says about one service.
struct Service {
    name: &'static str,
    settings: BTreeSet<String>,
    port: u16,
    shutdown_secs: u64,
    kafka: KafkaSettings,
    /// Consumer group and the topic it reads, for the consumers.
    consumes: Option<Consumes>,
    /// Loads the service's settings from a configuration and validates them.
    load: fn(config::Config) -> Result<(), String>,
}

fn load_and_validate<T: serde::de::DeserializeOwned, E: std::fmt::Display>(
    cfg: config::Config,
    validate: impl Fn(&T) -> Result<(), E>,
) -> Result<(), String> {
    let settings: T = cfg.try_deserialize().map_err(|e| e.to_string())?;
    validate(&settings).map_err(|e| e.to_string())
}

fn services() -> Vec<Service> {
    let gateway = gateway::configuration::Settings::default();
    let inventory = inventory_service::configuration::Settings::default();
    let orders = order_service::configuration::Settings::default();
    vec![
        Service {
            name: "gateway",
            settings: gateway::configuration::env_var_names()
                .into_iter()
                .collect(),
            port: gateway.http.port,
            shutdown_secs: gateway.http.shutdown_timeout_secs,
            kafka: gateway.kafka,
            consumes: None,
            load: |cfg| load_and_validate(cfg, gateway::configuration::Settings::validate),
        },
        Service {
            name: "inventory-service",
            settings: inventory_service::configuration::env_var_names()
                .into_iter()
                .collect(),
            port: inventory.http.port,
            shutdown_secs: inventory.http.shutdown_timeout_secs,
            kafka: inventory.kafka,
            consumes: Some((inventory.consumer_group, |t| t.order_requested.clone())),
            load: |cfg| {
                load_and_validate(cfg, inventory_service::configuration::Settings::validate)
            },
        },
        Service {
            name: "order-service",
            settings: order_service::configuration::env_var_names()
                .into_iter()
                .collect(),
            port: orders.http.port,
            shutdown_secs: orders.http.shutdown_timeout_secs,
            kafka: orders.kafka,
            consumes: Some((orders.consumer_group, |t| t.inventory_events.clone())),
            load: |cfg| load_and_validate(cfg, order_service::configuration::Settings::validate),
        },
    ]
}

/// Variables the services read besides their settings: the settings file,
/// and what the OpenTelemetry SDK and the log filter read.
fn read_outside_settings(name: &str) -> bool {
    name == "SECKILL_CONFIG"
        || name == "RUST_LOG"
        || name == "RUST_BACKTRACE"
        || name.starts_with("OTEL_")
}

/// The service an image is built from: `registry/seckill/<service>:tag`.
fn service_of<'a>(services: &'a [Service], image: &str) -> Option<&'a Service> {
    let repo = image.split('@').next()?;
    let last = repo.rsplit('/').next()?;
    let name = last.split(':').next()?;
    services
        .iter()
        .find(|s| s.name == name && repo.contains("seckill/"))
}

/// A scalar as written, for messages.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "(none)".into(),
        other => serde_norway::to_string(other)
            .map_or_else(|_| format!("{other:?}"), |s| s.trim().to_owned()),
    }
}

fn literal<'a>(env: &'a BTreeMap<String, EnvValue>, name: &str) -> Option<&'a str> {
    match env.get(name) {
        Some(EnvValue::Literal(v)) => Some(v),
        _ => None,
    }
}

fn parsed<T: std::str::FromStr>(env: &BTreeMap<String, EnvValue>, name: &str, default: T) -> T {
    literal(env, name)
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Seconds of a preStop sleep (exec `sleep N` or the `sleep` action).
fn pre_stop_secs(container: &Value) -> Option<u64> {
    let hook = &container["lifecycle"]["preStop"];
    if let Some(secs) = hook["sleep"]["seconds"].as_u64() {
        return Some(secs);
    }
    let command = k8s::string_list(&hook["exec"]["command"]);
    match command.as_slice() {
        [sleep, secs] if sleep.ends_with("sleep") => secs.parse().ok(),
        _ => None,
    }
}

/// A long-running service container: HTTP port, probes, metrics, drain.
fn check_server(
    s: &Service,
    ctx: &str,
    pod: &Value,
    template: &Value,
    container: &Value,
    env: &BTreeMap<String, EnvValue>,
    p: &mut Vec<String>,
) {
    let port = u64::from(parsed(env, "SECKILL_HTTP__PORT", s.port));
    if literal(env, "SECKILL_HTTP__HOST") != Some("0.0.0.0") {
        p.push(format!(
            "{ctx}: SECKILL_HTTP__HOST must be 0.0.0.0 in a pod (the default is loopback)"
        ));
    }
    let metrics_port = u64::from(parsed(env, "SECKILL_HTTP__METRICS_PORT", 0u16));
    let ports: Vec<u64> = container["ports"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|p| p["containerPort"].as_u64())
        .collect();
    let listens: Vec<u64> = [port, metrics_port]
        .into_iter()
        .filter(|p| *p != 0)
        .collect();
    if ports != listens {
        p.push(format!(
            "{ctx}: container ports {ports:?}, but the service listens on {listens:?}"
        ));
    }
    if resolve_port(container, &Value::from("http")) != Some(port) {
        p.push(format!("{ctx}: no container port named http = {port}"));
    }
    // The internal routes share the HTTP port: metrics need a port of their
    // own, so that the network policy can admit Prometheus without them.
    if metrics_port == 0 {
        p.push(format!(
            "{ctx}: SECKILL_HTTP__METRICS_PORT unset: /metrics would share the HTTP port"
        ));
    } else if resolve_port(container, &Value::from("metrics")) != Some(metrics_port) {
        p.push(format!(
            "{ctx}: no container port named metrics = {metrics_port}"
        ));
    }
    for (probe, path) in [
        ("startupProbe", HEALTH_PATH),
        ("livenessProbe", HEALTH_PATH),
        ("readinessProbe", READY_PATH),
    ] {
        let get = &container[probe]["httpGet"];
        if get.is_null() {
            p.push(format!("{ctx}: no {probe} (httpGet {path})"));
            continue;
        }
        if get["path"].as_str() != Some(path) {
            p.push(format!(
                "{ctx}: {probe} path {}, the service serves {path}",
                show(&get["path"])
            ));
        }
        if resolve_port(container, &get["port"]) != Some(port) {
            p.push(format!(
                "{ctx}: {probe} port {} is not the service's port {port}",
                show(&get["port"])
            ));
        }
    }
    let annotations = &template["metadata"]["annotations"];
    let scrape = (
        annotations["prometheus.io/scrape"].as_str(),
        annotations["prometheus.io/port"].as_str(),
    );
    if scrape != (Some("true"), Some(metrics_port.to_string().as_str()))
        || annotations["prometheus.io/path"].as_str() != Some(METRICS_PATH)
    {
        p.push(format!(
            "{ctx}: prometheus.io annotations must scrape {METRICS_PATH} on {metrics_port}"
        ));
    }
    let drain = parsed(env, "SECKILL_HTTP__SHUTDOWN_TIMEOUT_SECS", s.shutdown_secs);
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    match pre_stop_secs(container) {
        None => p.push(format!("{ctx}: no preStop sleep, so requests still arrive while it drains")),
        Some(sleep) if grace <= sleep + drain => p.push(format!(
            "{ctx}: terminationGracePeriodSeconds {grace} leaves no room after preStop {sleep} s + drain {drain} s"
        )),
        Some(_) => {}
    }
}

/// Every problem found in one set of manifests.
fn check(m: &Manifests, external_secrets: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let services = services();
    let mut p = Vec::new();
    // Deployment name -> (service, its resolved environment), for the scalers.
    let mut deployed = BTreeMap::new();
    for (kind, name, object, pod) in k8s::workloads(m) {
        let template = if kind == "CronJob" {
            &object["spec"]["jobTemplate"]["spec"]["template"]
        } else {
            &object["spec"]["template"]
        };
        let containers = pod["containers"]
            .as_sequence()
            .into_iter()
            .chain(pod["initContainers"].as_sequence());
        for container in containers.flatten() {
            let Some(s) = container["image"]
                .as_str()
                .and_then(|i| service_of(&services, i))
            else {
                continue;
            };
            let ctx = format!(
                "{}: {kind} {name}, container {}",
                m.origin,
                container["name"].as_str().unwrap_or("?")
            );
            if pod["enableServiceLinks"].as_bool() != Some(false) {
                p.push(format!(
                    "{ctx}: enableServiceLinks must be false (service links look like settings)"
                ));
            }
            let env = resolve_env(m, container, external_secrets, &ctx, &mut p);
            for var in env.keys() {
                if !s.settings.contains(var) && !read_outside_settings(var) {
                    p.push(format!("{ctx}: {var} is not a setting of {}", s.name));
                }
            }
            if let Err(e) = load_settings(s, &env) {
                p.push(format!("{ctx}: {} rejects its settings: {e}", s.name));
            }
            // The published development secrets are for development only.
            let prod = m.origin.contains("prod");
            // So is the development sign-in: a token for anyone who asks.
            for dev_only in ["SECKILL_DEV_MODE", "SECKILL_DEV_SIGN_IN"] {
                if prod && literal(&env, dev_only).is_some_and(|v| v == "true") {
                    p.push(format!("{ctx}: {dev_only}=true in a production overlay"));
                }
            }
            // Trusting a whole private range lets any client there forge
            // X-Forwarded-For: trust only the ingress controller's addresses.
            let trusted = literal(&env, "SECKILL_RATE_LIMIT__TRUSTED_PROXIES").unwrap_or("");
            for whole in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] {
                if trusted.split(',').any(|c| c.trim() == whole) {
                    p.push(format!("{ctx}: trusts all of {whole} to name clients"));
                }
            }
            check_urls(m, &ctx, &env, &mut p);
            let serves = k8s::string_list(&container["args"])
                .first()
                .is_none_or(|a| a == "serve");
            if matches!(kind, "Deployment" | "StatefulSet") && serves {
                check_server(s, &ctx, pod, template, container, &env, &mut p);
                let partitions = parsed(&env, "SECKILL_KAFKA__PARTITIONS", s.kafka.partitions);
                let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
                if s.consumes.is_some() && replicas > i64::from(partitions) {
                    p.push(format!(
                        "{ctx}: {replicas} replicas, but only {partitions} partitions to share"
                    ));
                }
                deployed.insert(name.to_owned(), (s, env));
            }
        }
    }
    check_services(m, &mut p);
    check_scalers(m, &deployed, &mut p);
    p
}

/// Secret-held settings given a stand-in value when they come from a Secret.
const OPAQUE_PLACEHOLDER: &[&str] = &[
    "SECKILL_JWT_SECRET",
    "SECKILL_ADMIN_TOKEN",
    "SECKILL_INTERNAL_TOKEN",
];

/// The settings the service would load from this environment (values from
/// Secrets are unknown here: a placeholder that is not a published
/// development value stands in for each), parsed and validated as at start.
fn load_settings(s: &Service, env: &BTreeMap<String, EnvValue>) -> Result<(), String> {
    let vars: config::Map<String, String> = env
        .iter()
        .filter(|(k, _)| k.starts_with("SECKILL_") && k.as_str() != "SECKILL_CONFIG")
        .filter_map(|(k, v)| match v {
            EnvValue::Literal(v) => Some((k.clone(), v.clone())),
            EnvValue::Opaque if OPAQUE_PLACEHOLDER.contains(&k.as_str()) => {
                Some((k.clone(), "from-a-secret-store-0123456789".to_owned()))
            }
            EnvValue::Opaque => None,
        })
        .collect();
    let source = config::Environment::with_prefix("SECKILL")
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .source(Some(vars));
    let cfg = config::Config::builder()
        .add_source(source)
        .build()
        .map_err(|e| e.to_string())?;
    (s.load)(cfg)
}

/// In-cluster addresses in settings (`http://inventory-service:8081`,
/// `kafka:9092`) must name a Service port.
fn check_urls(m: &Manifests, ctx: &str, env: &BTreeMap<String, EnvValue>, p: &mut Vec<String>) {
    for (var, value) in env {
        let EnvValue::Literal(value) = value else {
            continue;
        };
        for (host, port) in value.split(',').filter_map(k8s::host_port) {
            let Some(svc) = m.find("Service", &host) else {
                continue;
            };
            let ports: Vec<u64> = svc["spec"]["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_u64())
                .collect();
            if !ports.contains(&u64::from(port)) {
                p.push(format!(
                    "{ctx}: {var} points at {host}:{port}, but Service {host} has ports {ports:?}"
                ));
            }
        }
    }
}

/// Services reach a pod port, and the Ingress a Service port.
fn check_services(m: &Manifests, p: &mut Vec<String>) {
    let workloads = k8s::workloads(m);
    for svc in m.of_kind("Service") {
        let name = svc["metadata"]["name"].as_str().unwrap_or("?");
        let selected: Vec<_> = workloads
            .iter()
            .filter(|(_, _, o, _)| {
                k8s::selects(
                    &svc["spec"]["selector"],
                    &o["spec"]["template"]["metadata"]["labels"],
                )
            })
            .collect();
        if selected.is_empty() {
            p.push(format!("{}: Service {name} selects no pods", m.origin));
        }
        for port in svc["spec"]["ports"].as_sequence().into_iter().flatten() {
            let target = if port["targetPort"].is_null() {
                &port["port"]
            } else {
                &port["targetPort"]
            };
            for (kind, wname, _, pod) in &selected {
                let found = pod["containers"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .any(|c| {
                        resolve_port(c, target).is_some_and(|n| {
                            c["ports"]
                                .as_sequence()
                                .into_iter()
                                .flatten()
                                .any(|cp| cp["containerPort"].as_u64() == Some(n))
                        })
                    });
                if !found {
                    p.push(format!(
                        "{}: Service {name} targets port {}, which {kind} {wname} does not expose",
                        m.origin,
                        show(target)
                    ));
                }
            }
        }
    }
    for ingress in m.of_kind("Ingress") {
        let rules = ingress["spec"]["rules"].as_sequence().into_iter().flatten();
        for path in rules.flat_map(|r| r["http"]["paths"].as_sequence().into_iter().flatten()) {
            let backend = &path["backend"]["service"];
            let name = backend["name"].as_str().unwrap_or("?");
            let (by_name, by_number) = (
                backend["port"]["name"].as_str(),
                backend["port"]["number"].as_u64(),
            );
            let exists = m.find("Service", name).is_some_and(|svc| {
                svc["spec"]["ports"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                    .any(|sp| {
                        (by_name.is_some() && sp["name"].as_str() == by_name)
                            || (by_number.is_some() && sp["port"].as_u64() == by_number)
                    })
            });
            if !exists {
                p.push(format!(
                    "{}: Ingress backend {name} port {} is not a Service port",
                    m.origin,
                    show(&backend["port"])
                ));
            }
        }
    }
}

/// HPAs and KEDA ScaledObjects target a Deployment; a consumer never scales
/// past its topic's partitions, and KEDA watches the group and topic it reads.
fn check_scalers(
    m: &Manifests,
    deployed: &BTreeMap<String, (&Service, BTreeMap<String, EnvValue>)>,
    p: &mut Vec<String>,
) {
    for (kind, max_field) in [
        ("HorizontalPodAutoscaler", "maxReplicas"),
        ("ScaledObject", "maxReplicaCount"),
    ] {
        for scaler in m.of_kind(kind) {
            let name = scaler["metadata"]["name"].as_str().unwrap_or("?");
            let target = scaler["spec"]["scaleTargetRef"]["name"]
                .as_str()
                .unwrap_or("?");
            let ctx = format!("{}: {kind} {name}", m.origin);
            let Some((s, env)) = deployed.get(target) else {
                p.push(format!(
                    "{ctx}: targets {target}, which is not a service Deployment"
                ));
                continue;
            };
            let Some((default_group, topic_of)) = &s.consumes else {
                continue;
            };
            let partitions = parsed(env, "SECKILL_KAFKA__PARTITIONS", s.kafka.partitions);
            let max = scaler["spec"][max_field].as_i64().unwrap_or(0);
            if max > i64::from(partitions) {
                p.push(format!(
                    "{ctx}: scales {target} to {max}, past its {partitions} partitions"
                ));
            }
            let prefix =
                literal(env, "SECKILL_KAFKA__TOPIC_PREFIX").unwrap_or(&s.kafka.topic_prefix);
            let group = literal(env, "SECKILL_CONSUMER_GROUP").unwrap_or(default_group);
            let topic = topic_of(&Topics::new(prefix));
            for trigger in scaler["spec"]["triggers"]
                .as_sequence()
                .into_iter()
                .flatten()
            {
                let meta = &trigger["metadata"];
                if trigger["type"].as_str() == Some("kafka")
                    && (meta["consumerGroup"].as_str() != Some(group)
                        || meta["topic"].as_str() != Some(topic.as_str()))
                {
                    p.push(format!(
                        "{ctx}: watches topic {} as group {}, but {target} reads {topic} as group {group}",
                        show(&meta["topic"]),
                        show(&meta["consumerGroup"])
                    ));
                }
            }
        }
    }
}

fn assert_clean(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "manifests disagree with the services:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_base_matches_the_services_configuration() {
    let base = Manifests::base().expect("k8s/base loads");
    assert!(
        k8s::workloads(&base).len() >= 3,
        "k8s/base has no workloads"
    );
    assert_clean(check(&base, &BTreeMap::new()));
}

#[test]
fn every_overlay_matches_the_services_configuration() {
    let base = Manifests::base().expect("k8s/base loads");
    // An overlay may leave the Secret to the cluster; its references are then
    // checked against the keys the base defines (the documented contract).
    let mut external = BTreeMap::new();
    external.insert(
        SECRET.to_owned(),
        k8s::secret_key_names(&base, SECRET).expect("the base defines the Secret"),
    );
    let mut problems = Vec::new();
    for overlay in OVERLAYS {
        let Some(rendered) = Manifests::render(overlay) else {
            eprintln!(
                "kubectl not found: overlays not checked (deploy/check-manifests.sh installs it)"
            );
            return;
        };
        problems.extend(check(&rendered.expect("overlay renders"), &external));
    }
    assert_clean(problems);
}

/// The checker itself: a manifest that drifted from the code is caught.
#[test]
fn drift_between_manifests_and_code_is_caught() {
    let mut base = Manifests::base().expect("k8s/base loads");
    let gateway = base
        .objects
        .iter_mut()
        .find(|o| {
            o["kind"].as_str() == Some("Deployment")
                && o["metadata"]["name"].as_str() == Some("gateway")
        })
        .expect("a gateway Deployment");
    let container = &mut gateway["spec"]["template"]["spec"]["containers"][0];
    let env = container["env"].as_sequence_mut().expect("gateway env");
    env.push(serde_norway::from_str("{name: SECKILL_NOT_A_SETTING, value: x}").expect("yaml"));
    env.push(serde_norway::from_str("{name: SECKILL_DEV_SIGN_IN, value: 'true'}").expect("yaml"));
    env.push(serde_norway::from_str("{name: SECKILL_ADMIN_TOKEN, valueFrom: {secretKeyRef: {name: seckill-secrets, key: typo}}}").expect("yaml"));
    container["readinessProbe"]["httpGet"]["path"] = Value::from("/ready");
    container["ports"][0]["containerPort"] = Value::from(9191);

    let mut prod = base.clone();
    prod.origin = "overlay prod".into();
    let in_prod = check(&prod, &BTreeMap::new()).join("\n");
    assert!(
        in_prod.contains("SECKILL_DEV_SIGN_IN=true in a production overlay"),
        "the development sign-in in production is not caught:\n{in_prod}"
    );
    let problems = check(&base, &BTreeMap::new()).join("\n");
    for expected in [
        "SECKILL_NOT_A_SETTING is not a setting",
        "key typo, which does not exist",
        "readinessProbe path",
        "container ports [9191, 9090]",
    ] {
        assert!(
            problems.contains(expected),
            "not caught: {expected}\nproblems:\n{problems}"
        );
    }
}

/// Does this podSelector (matchLabels, `In` matchExpressions, or `{}`: every
/// pod) select the pods named `name`?
fn guards(selector: &Value, name: &str, labels: &Value) -> bool {
    let empty = selector.as_mapping().is_none_or(|m| m.is_empty());
    let by_labels = k8s::selects(&selector["matchLabels"], labels);
    let by_expression = selector["matchExpressions"]
        .as_sequence()
        .into_iter()
        .flatten()
        .any(|e| {
            e["key"].as_str() == Some("app.kubernetes.io/name")
                && e["operator"].as_str() == Some("In")
                && k8s::string_list(&e["values"]).iter().any(|v| v == name)
        });
    empty || by_labels || by_expression
}

/// Only the gateway may reach the services' HTTP port, where the internal
/// routes are; anyone else (Prometheus) gets the metrics port and no other.
#[test]
fn only_the_gateway_reaches_the_internal_routes() {
    let base = Manifests::base().expect("k8s/base loads");
    let labels = |name: &str| -> Value {
        serde_norway::from_str(&format!("app.kubernetes.io/name: {name}")).expect("labels")
    };
    let gateway_only: Value =
        serde_norway::from_str("[{podSelector: {matchLabels: {app.kubernetes.io/name: gateway}}}]")
            .expect("from");
    let mut problems = Vec::new();
    for policy in base.of_kind("NetworkPolicy") {
        let name = policy["metadata"]["name"].as_str().unwrap_or("?");
        let selector = &policy["spec"]["podSelector"];
        let guards_services = ["inventory-service", "order-service"]
            .iter()
            .any(|s| guards(selector, s, &labels(s)));
        if !guards_services {
            continue;
        }
        for rule in policy["spec"]["ingress"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            if rule["from"] == gateway_only {
                continue;
            }
            let ports: Vec<&str> = rule["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(|p| p["port"].as_str().unwrap_or("?"))
                .collect();
            if ports != ["metrics"] {
                problems.push(format!(
                    "NetworkPolicy {name} admits more than the gateway to ports {ports:?}"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The PrometheusRule of `k8s/components/alerts` carries exactly the groups
/// of `deploy/prometheus/alerts.yml`, the rules promtool tests.
#[test]
fn the_prometheus_rule_carries_the_tested_alerting_rules() {
    let read = |path: &str| -> Value {
        let text = std::fs::read_to_string(k8s::repo_root().join(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let rules = read("deploy/prometheus/alerts.yml");
    let rule = read("k8s/components/alerts/prometheus-rule.yaml");
    assert_eq!(rule["kind"], Value::from("PrometheusRule"));
    assert_eq!(
        rule["spec"]["groups"], rules["groups"],
        "k8s/components/alerts/prometheus-rule.yaml differs from deploy/prometheus/alerts.yml"
    );
    let alerts: Vec<&str> = rules["groups"][0]["rules"]
        .as_sequence()
        .expect("rules")
        .iter()
        .filter_map(|r| r["alert"].as_str())
        .collect();
    for wanted in [
        "SeckillCircuitBreakerOpen",
        "SeckillConsumerLagGrowing",
        "SeckillDeadLetters",
        "SeckillReconciliationRepairs",
        "SeckillOrdersOfUnknownOutcome",
        "SeckillPurchaseErrorRate",
    ] {
        assert!(alerts.contains(&wanted), "{wanted} missing: {alerts:?}");
    }
}
