//! The shape of the code, checked: no import circle between the files of a
//! crate. A circle means two files that can only be read, changed and
//! tested together; the one allowed is sea-orm's pair of related entities,
//! which must name each other.
//!
//! A file depends on another when its (non-test) code names a path into it:
//! `crate::a::b`, `super::a`, or, in a module with children, `self::child`
//! or `child::`. The crate root is left out: it only declares the modules
//! and re-exports them.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: &[&str] = &["common", "gateway", "inventory-service", "order-service"];

/// Module path (`a::b`) of every source file under `src`, but the roots.
fn modules(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("source dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path
                .strip_prefix(src)
                .expect("under src")
                .with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
                continue;
            }
            found.insert(parts.join("::"), path);
        }
    }
    found
}

/// The code of a file without its tests and its comments.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("source file");
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `prefix` path in `code`, as its segments.
fn paths<'a>(code: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        let tail = &rest[at + prefix.len()..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            found.push(tail[..end].split("::").filter(|s| !s.is_empty()).collect());
        }
        rest = &tail[end..];
    }
    found
}

/// The longest module named by `base` followed by a prefix of `segments`.
fn resolve(mods: &BTreeMap<String, PathBuf>, base: &[&str], segments: &[&str]) -> Option<String> {
    (1..=segments.len()).rev().find_map(|n| {
        let candidate = base
            .iter()
            .chain(&segments[..n])
            .copied()
            .collect::<Vec<_>>()
            .join("::");
        mods.contains_key(&candidate).then_some(candidate)
    })
}

fn graph(crate_dir: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("src");
    let mods = modules(&src);
    let mut graph = BTreeMap::new();
    for (name, path) in &mods {
        let code = code(path);
        let own: Vec<&str> = name.split("::").collect();
        let parent = &own[..own.len() - 1];
        let mut deps = BTreeSet::new();
        for segments in paths(&code, "crate::") {
            deps.extend(resolve(&mods, &[], &segments));
        }
        for segments in paths(&code, "super::") {
            deps.extend(
                resolve(&mods, parent, &segments)
                    .or_else(|| (!parent.is_empty()).then(|| parent.join("::"))),
            );
        }
        for segments in paths(&code, "self::") {
            deps.extend(resolve(&mods, &own, &segments));
        }
        // Children named directly from their parent (`child::item`).
        let children: Vec<String> = mods
            .keys()
            .filter_map(|m| m.strip_prefix(&format!("{name}::")))
            .filter(|rest| !rest.contains("::"))
            .map(str::to_owned)
            .collect();
        for child in &children {
            if !paths(&code, &format!("{child}::")).is_empty() {
                deps.insert(format!("{name}::{child}"));
            }
        }
        deps.remove(name);
        graph.insert(name.clone(), deps);
    }
    graph
}

/// The strongly connected components with more than one file (Tarjan).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<BTreeSet<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.insert(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

/// sea-orm's related entities (`impl Related<...>` both ways) may name each other.
fn is_entity_pair(crate_dir: &str, circle: &BTreeSet<String>) -> bool {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(crate_dir)
        .join("src");
    let mods = modules(&src);
    circle.iter().all(|m| {
        m.starts_with("persistence::")
            && std::fs::read_to_string(&mods[m]).is_ok_and(|t| t.contains("impl Related<"))
    })
}

#[test]
fn no_file_imports_a_file_that_imports_it() {
    let mut found = Vec::new();
    for crate_dir in CRATES {
        for circle in circles(&graph(crate_dir)) {
            if !is_entity_pair(crate_dir, &circle) {
                found.push(format!("{crate_dir}: {circle:?}"));
            }
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_a_circle_and_each_kind_of_path() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    let found = circles(&graph);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0], ["a", "b", "c"].map(str::to_owned).into());

    let code = "use crate::state::AppState;\nlet x = super::exposition::register();";
    assert_eq!(paths(code, "crate::"), vec![vec!["state", "AppState"]]);
    assert_eq!(paths(code, "super::"), vec![vec!["exposition", "register"]]);
    assert!(paths("use seckill_common::x;", "common::").is_empty());
}
