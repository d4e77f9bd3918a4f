//! watcher: every socket on the host that starts waiting for others,
//! reported the moment it appears, with the process behind it.
//!
//! The modules follow the data, each importing only from those listed
//! before it (a unit test, `import_order`, checks this):
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`model`] | the shared vocabulary: event names, escaping |
//! | [`config`] | the daemon's TOML configuration, as data |
//! | [`kernel`] | privileges, loading and attaching the eBPF programs, BTF |
//! | [`record`] | ring-buffer records decoded into typed values |
//! | [`host`] | /proc, cgroups, users, services |
//! | [`enrich`] | process table, socket options, UNIX listeners kept beside the stream |
//! | [`snapshot`] | the sockets already there (sock_diag, /proc/net, fd tables) |
//! | [`state`] | the listener table and its lifecycle |
//! | [`policy`] | allowlist, filters, enforcement |
//! | [`output`] | the sinks, one file per format |
//! | [`pipeline`] | the one reader of the ring buffer: records → typed events → a sink |
//! | [`cli`] | command-line flags |
//! | [`commands`] | watch, list, daemon, baseline, doctor: glue only |
pub mod cli;
pub mod commands;
pub mod config;
pub mod enrich;
pub mod host;
pub mod kernel;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod policy;
pub mod record;
pub mod snapshot;
pub mod state;

/// The modules in the order data flows through them; a module may use
/// only those at or before its own place.
#[cfg(test)]
const FLOW: &[&str] = &[
    "model", "config", "kernel", "record", "host", "enrich", "snapshot", "state", "policy", "output", "pipeline",
    "cli", "commands",
];

#[cfg(test)]
mod import_order {
    use std::{
        collections::{BTreeMap, BTreeSet},
        fs,
        path::{Path, PathBuf},
    };

    use super::FLOW;

    /// Every `.rs` file under src/, as its module path (`output::syslog`).
    fn modules() -> BTreeMap<String, PathBuf> {
        fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, PathBuf>) {
            for entry in fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() {
                    walk(&path, &format!("{prefix}{name}::"), out);
                } else if let Some(stem) = name.strip_suffix(".rs") {
                    let module = match stem {
                        "mod" => prefix.trim_end_matches("::").to_owned(),
                        _ => format!("{prefix}{stem}"),
                    };
                    out.insert(module, path);
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), "", &mut out);
        out.remove("lib");
        out.remove("main");
        out
    }

    /// The crate modules a file uses outside its tests: every `crate::a::b`
    /// path, and every path inside a `use crate::{…}` group.
    fn uses(text: &str, known: &BTreeMap<String, PathBuf>) -> BTreeSet<String> {
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let code: String = code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
        let mut paths = Vec::new();
        let mut rest = code.as_str();
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // The group, to its matching brace; nested groups are flattened.
                let (mut depth, mut end) = (1, 0);
                for (i, c) in group.char_indices() {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                flatten("", &group[..end], &mut paths);
            } else {
                let path: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
                paths.push(path);
            }
        }
        // The longest known module each path starts with.
        paths
            .iter()
            .filter_map(|p| {
                let parts: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
                (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|m| known.contains_key(m))
            })
            .collect()
    }

    fn flatten(prefix: &str, group: &str, out: &mut Vec<String>) {
        let (mut depth, mut start) = (0, 0);
        let mut items = Vec::new();
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&group[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(&group[start..]);
        for item in items.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
            match item.split_once("::{") {
                Some((head, inner)) => {
                    flatten(&format!("{prefix}{head}::"), inner.strip_suffix('}').unwrap_or(inner), out)
                }
                None => out.push(format!("{prefix}{item}")),
            }
        }
    }

    fn rank(module: &str) -> usize {
        let top = module.split("::").next().unwrap_or_default();
        FLOW.iter().position(|m| *m == top).unwrap_or_else(|| panic!("{module} is not in FLOW (lib.rs)"))
    }

    #[test]
    fn no_module_uses_one_later_in_the_flow() {
        let known = modules();
        let mut wrong = Vec::new();
        for (module, path) in &known {
            for used in uses(&fs::read_to_string(path).unwrap(), &known) {
                if rank(&used) > rank(module) {
                    wrong.push(format!("{module} uses {used}"));
                }
            }
        }
        assert!(wrong.is_empty(), "imports against the data flow:\n{}", wrong.join("\n"));
    }

    #[test]
    fn no_import_cycles() {
        let known = modules();
        let graph: BTreeMap<String, BTreeSet<String>> = known
            .iter()
            .map(|(m, p)| {
                let mut used = uses(&fs::read_to_string(p).unwrap(), &known);
                used.remove(m);
                // A folder's mod.rs only declares its children.
                used.retain(|u| {
                    !m.is_empty() && !u.starts_with(&format!("{m}::")) && !m.starts_with(&format!("{u}::"))
                });
                (m.clone(), used)
            })
            .collect();
        fn visit(
            m: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(at) = path.iter().position(|p| p == m) {
                return Some(path[at..].to_vec());
            }
            if done.contains(m) {
                return None;
            }
            path.push(m.to_owned());
            for next in graph.get(m).into_iter().flatten() {
                if let Some(cycle) = visit(next, graph, path, done) {
                    return Some(cycle);
                }
            }
            path.pop();
            done.insert(m.to_owned());
            None
        }
        let mut done = BTreeSet::new();
        for m in graph.keys() {
            if let Some(cycle) = visit(m, &graph, &mut Vec::new(), &mut done) {
                panic!("import cycle: {}", cycle.join(" -> "));
            }
        }
    }

    /// The check itself sees what it must: a grouped import and a path.
    #[test]
    fn the_parser_reads_groups_and_paths() {
        let known = modules();
        let used = uses(
            "use crate::{\n    model::{escape::escape, socket::Local},\n    output::format::Printer,\n};\nfn f() { crate::host::process::x(); }",
            &known,
        );
        let want: BTreeSet<String> =
            ["model::escape", "model::socket", "output::format", "host::process"].map(String::from).into();
        assert_eq!(used, want);
    }
}
