//! Just enough of Kubernetes and kustomize to check the manifests: load the
//! base as kustomize would (resources, generated ConfigMaps and Secrets), or
//! render an overlay with `kubectl kustomize`, and resolve a container's
//! environment through its ConfigMap and Secret references.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_norway::Value;

/// The repository root (this crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One set of objects, as it would be applied.
#[derive(Clone)]
pub struct Manifests {
    /// Where they came from, for messages: `base` or `overlay dev`.
    pub origin: String,
    pub objects: Vec<Value>,
}

/// A container's environment variable, resolved as far as the manifests say.
#[derive(Debug, Clone, PartialEq)]
pub enum EnvValue {
    Literal(String),
    /// From a Secret, or from the Downward API: known only in the cluster.
    Opaque,
}

fn parse_documents(text: &str, what: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).map_err(|e| format!("{what}: {e}"))?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `KEY=VALUE` lines, as kustomize reads a generator's `envs` file.
fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
        .collect()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// What a `configMapGenerator`/`secretGenerator` entry produces, as an object.
fn generated(kind: &str, entry: &Value, dir: &Path) -> Result<Value, String> {
    let name = entry["name"]
        .as_str()
        .ok_or("a generator entry has no name")?;
    let mut data = BTreeMap::new();
    for file in strings(&entry["envs"]) {
        data.extend(parse_env_file(&read(&dir.join(file))?));
    }
    for literal in strings(&entry["literals"]) {
        if let Some((k, v)) = literal.split_once('=') {
            data.insert(k.to_owned(), v.to_owned());
        }
    }
    for file in strings(&entry["files"]) {
        let (key, path) = file.split_once('=').unwrap_or_else(|| {
            (
                Path::new(file)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or(file),
                file,
            )
        });
        data.insert(key.to_owned(), read(&dir.join(path))?);
    }
    serde_norway::to_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": name},
        "data": data,
    }))
    .map_err(|e| e.to_string())
}

impl Manifests {
    /// `k8s/base` read the way kustomize builds it, without kubectl: the
    /// resource files plus the generated ConfigMaps and Secrets (unhashed).
    pub fn base() -> Result<Self, String> {
        let dir = repo_root().join("k8s/base");
        let kustomization =
            serde_norway::from_str::<Value>(&read(&dir.join("kustomization.yaml"))?)
                .map_err(|e| format!("kustomization.yaml: {e}"))?;
        let mut objects = Vec::new();
        for file in strings(&kustomization["resources"]) {
            objects.extend(parse_documents(&read(&dir.join(file))?, file)?);
        }
        for (field, kind) in [
            ("configMapGenerator", "ConfigMap"),
            ("secretGenerator", "Secret"),
        ] {
            for entry in kustomization[field].as_sequence().into_iter().flatten() {
                objects.push(generated(kind, entry, &dir)?);
            }
        }
        Ok(Self {
            origin: "base".into(),
            objects,
        })
    }

    /// `kubectl kustomize k8s/overlays/<name>`, or `None` without kubectl.
    pub fn render(overlay: &str) -> Option<Result<Self, String>> {
        let dir = repo_root().join("k8s/overlays").join(overlay);
        let output = match Command::new("kubectl").arg("kustomize").arg(&dir).output() {
            Ok(output) => output,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => return Some(Err(format!("kubectl: {e}"))),
        };
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Some(Err(format!(
                "kubectl kustomize {}: {stderr}",
                dir.display()
            )));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        Some(parse_documents(&text, overlay).map(|objects| Self {
            origin: format!("overlay {overlay}"),
            objects,
        }))
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects
            .iter()
            .filter(move |o| o["kind"].as_str() == Some(kind))
    }

    pub fn find(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects.iter().find(|o| {
            o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name)
        })
    }

    /// The keys of a ConfigMap or Secret (`data` and `stringData`) and their
    /// values where readable (a Secret's `data` is base64: left out).
    pub fn keys_of(&self, kind: &str, name: &str) -> Option<BTreeMap<String, Option<String>>> {
        let object = self.find(kind, name)?;
        let mut keys = BTreeMap::new();
        for field in ["data", "stringData"] {
            for (k, v) in object[field].as_mapping().into_iter().flatten() {
                let readable = kind == "ConfigMap" || field == "stringData";
                if let Some(k) = k.as_str() {
                    keys.insert(
                        k.to_owned(),
                        v.as_str().filter(|_| readable).map(str::to_owned),
                    );
                }
            }
        }
        Some(keys)
    }
}

/// Everything that runs pods: (kind, name, object, pod spec).
pub fn workloads(m: &Manifests) -> Vec<(&str, &str, &Value, &Value)> {
    m.objects
        .iter()
        .filter_map(|o| {
            let kind = o["kind"].as_str()?;
            let spec = match kind {
                "Deployment" | "StatefulSet" | "Job" | "DaemonSet" => {
                    &o["spec"]["template"]["spec"]
                }
                "CronJob" => &o["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                _ => return None,
            };
            Some((kind, o["metadata"]["name"].as_str()?, o, spec))
        })
        .collect()
}

/// Resolves a container's environment the way the kubelet does (`envFrom` in
/// order, then `env`, later entries winning). Every reference that points to a
/// missing object or key is reported in `problems`.
///
/// `external_secrets` are Secrets an overlay leaves to the cluster; their
/// references are checked against the given keys instead.
pub fn resolve_env(
    m: &Manifests,
    container: &Value,
    external_secrets: &BTreeMap<String, BTreeSet<String>>,
    context: &str,
    problems: &mut Vec<String>,
) -> BTreeMap<String, EnvValue> {
    let mut env = BTreeMap::new();
    let mut keys_of = |kind: &str, name: &str| -> Option<BTreeMap<String, Option<String>>> {
        if let Some(keys) = m.keys_of(kind, name) {
            return Some(keys);
        }
        if kind == "Secret" {
            if let Some(keys) = external_secrets.get(name) {
                return Some(keys.iter().map(|k| (k.clone(), None)).collect());
            }
        }
        problems.push(format!("{context}: {kind} {name} does not exist"));
        None
    };
    for source in container["envFrom"].as_sequence().into_iter().flatten() {
        let prefix = source["prefix"].as_str().unwrap_or("");
        for (field, kind) in [("configMapRef", "ConfigMap"), ("secretRef", "Secret")] {
            let Some(name) = source[field]["name"].as_str() else {
                continue;
            };
            let optional = source[field]["optional"].as_bool() == Some(true);
            if optional && m.keys_of(kind, name).is_none() {
                continue;
            }
            for (k, v) in keys_of(kind, name).into_iter().flatten() {
                let value = v.map_or(EnvValue::Opaque, EnvValue::Literal);
                env.insert(format!("{prefix}{k}"), value);
            }
        }
    }
    let mut unresolved = Vec::new();
    for var in container["env"].as_sequence().into_iter().flatten() {
        let Some(name) = var["name"].as_str() else {
            continue;
        };
        let from = &var["valueFrom"];
        let value = if let Some(v) = var["value"].as_str() {
            EnvValue::Literal(v.to_owned())
        } else if from.is_null() {
            EnvValue::Literal(String::new())
        } else {
            let mut value = EnvValue::Opaque;
            for (field, kind) in [("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")] {
                let r = &from[field];
                let (Some(obj), Some(key)) = (r["name"].as_str(), r["key"].as_str()) else {
                    continue;
                };
                if r["optional"].as_bool() == Some(true) && m.keys_of(kind, obj).is_none() {
                    continue;
                }
                match keys_of(kind, obj).map(|keys| keys.get(key).cloned()) {
                    Some(Some(v)) => value = v.map_or(EnvValue::Opaque, EnvValue::Literal),
                    Some(None) => unresolved.push(format!(
                        "{context}: {name} refers to {kind} {obj} key {key}, which does not exist"
                    )),
                    None => {}
                }
            }
            value
        };
        env.insert(name.to_owned(), value);
    }
    problems.extend(unresolved);
    env
}

/// A container port by name or number, as probes and Services refer to it.
pub fn resolve_port(container: &Value, port: &Value) -> Option<u64> {
    if let Some(n) = port.as_u64() {
        return Some(n);
    }
    let name = port.as_str()?;
    container["ports"]
        .as_sequence()?
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
}

/// `host:port` out of a URL or a broker list entry (`scheme://user:pw@host:port/path`).
pub fn host_port(value: &str) -> Option<(String, u16)> {
    let rest = value.split_once("://").map_or(value, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// The strings of a YAML sequence field.
pub fn string_list(v: &Value) -> Vec<String> {
    strings(v).into_iter().map(str::to_owned).collect()
}

/// Does `selector` (a `matchLabels` map) select these pod labels?
pub fn selects(selector: &Value, labels: &Value) -> bool {
    match selector.as_mapping() {
        Some(map) if !map.is_empty() => map
            .iter()
            .all(|(k, v)| labels[k.as_str().unwrap_or("")] == *v),
        _ => false,
    }
}

/// The names of the keys of a Secret in `m`, if it exists.
pub fn secret_key_names(m: &Manifests, name: &str) -> Option<BTreeSet<String>> {
    m.keys_of("Secret", name).map(|k| k.into_keys().collect())
}
