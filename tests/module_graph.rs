//! The top-level modules form no cycle: `crate::<module>` references between the
//! files of `src/` (outside their unit tests) make a directed graph that must be
//! acyclic (ARCHITECTURE.md, "Modules"). A cycle is printed in full.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/a/b.rs` and `src/a.rs`: `a`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let from = module_of(&src, &file);
        // Unit tests may use anything: a `tests.rs` file is a `#[cfg(test)] mod tests;`.
        if from == "lib" || from == "main" || file.file_name() == Some("tests.rs".as_ref()) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        // Unit tests (a file's closing `mod tests`) may use anything.
        let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let deps = graph.entry(from.clone()).or_default();
        for (at, _) in text.match_indices("crate::") {
            let name: String = text[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != from {
                deps.insert(name);
            }
        }
    }
    graph
}

/// A cycle through `node`, if there is one, found depth first.
fn find_cycle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|n| n == node) {
        let mut cycle = path[i..].to_vec();
        cycle.push(node.to_string());
        return Some(cycle);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_string());
    for next in graph.get(node).into_iter().flatten() {
        if let Some(c) = find_cycle(graph, next, path, done) {
            return Some(c);
        }
    }
    path.pop();
    done.insert(node.to_string());
    None
}

#[test]
fn top_level_modules_form_no_cycle() {
    let graph = module_graph();
    assert!(
        graph.contains_key("node") && graph["broker"].contains("node"),
        "the graph was read: {graph:?}"
    );
    let mut done = BTreeSet::new();
    for start in graph.keys() {
        if let Some(cycle) = find_cycle(&graph, start, &mut Vec::new(), &mut done) {
            panic!("module cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn the_layers_below_the_node_do_not_reach_up() {
    let graph = module_graph();
    for low in [
        "shard",
        "cluster",
        "group",
        "replication",
        "storage",
        "protocol",
        "ids",
    ] {
        for high in ["node", "broker", "net", "runtime"] {
            assert!(
                !graph[low].contains(high),
                "{low} uses {high}: {:?}",
                graph[low]
            );
        }
    }
    assert!(
        graph["shard"].is_empty(),
        "the transport depends on nothing: {:?}",
        graph["shard"]
    );
}

/// Storage says what went wrong in its own terms; the broker alone turns that into
/// Kafka error codes (`broker::storage_errors`).
#[test]
fn storage_names_no_kafka_error_code() {
    let storage = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/storage");
    let mut files = Vec::new();
    rust_files(&storage, &mut files);
    assert!(files.len() > 5, "found the storage files");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("ErrorCode"),
            "{} names a Kafka error code",
            file.display()
        );
    }
}
