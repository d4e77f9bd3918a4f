//! `cargo xtask bench guest-peers`: watcher beside bcc's bindsnoop, solisten
//! and tcpaccept on Debian 12's kernel, in the qemu guest of `cargo xtask
//! guest` (bcc needs kprobes, which this machine's kernel refuses). The
//! guest side is tests/guest/peers.py; this side boots it and prints what it
//! found as the Markdown tables of BENCHMARKS.md. The guest is emulated:
//! its figures are counts and ratios, not times.
use std::{fs, time::Duration};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{guest, setup, util::workspace_root};

/// peers.py's longest quiet wait is START_TIMEOUT (600 s: bcc compiling,
/// or reading its perf buffers slowly under emulation), with margin.
const QUIET_MAX: Duration = Duration::from_secs(12 * 60);

/// The tools in the order of the tables' columns.
const TOOLS: [&str; 4] = ["watcher", "bindsnoop", "solisten", "tcpaccept"];

pub fn run() -> anyhow::Result<()> {
    let tools = setup::ensure_guest_peers()?;
    let out = guest::fresh_out_dir("guest-peers")?;
    let flash = guest::compile_program(&out, "flash_listener.c", "flash listener")?;
    let script = workspace_root().join("tests/guest/peers.py");
    guest::run_script(&tools, &out, &script, &[&flash], |out| out.join("peers.json").exists(), QUIET_MAX)?;
    let path = out.join("peers.json");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            guest::print_diagnostics(&out, &out.join("vng.log"));
            bail!("the guest wrote no {}: {e}", path.display());
        }
    };
    let report: Value = serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    print!("{}", tables(&report));
    Ok(())
}

/// The report as Markdown: what each tool printed per case, the columns it
/// prints, and getppid's cost with each attached.
fn tables(report: &Value) -> String {
    let mut md = format!("Kernel {} (guest, TCG).\n\n", report["kernel"].as_str().unwrap_or("?"));
    md += &format!("| case | {} |\n|---|{}\n", TOOLS.join(" | "), "---|".repeat(TOOLS.len()));
    let cases: Vec<String> = report["tools"]["watcher"]["cases"]
        .as_object()
        .map(|cases| cases.keys().cloned().collect())
        .unwrap_or_default();
    for case in &cases {
        md += &format!("| {case} |");
        for tool in TOOLS {
            md += &format!(" {} |", cell(&report["tools"][tool], case));
        }
        md += "\n";
    }
    md += "| exe and argv of the exec'd listener |";
    for tool in TOOLS {
        let has = report["tools"][tool]["cases"]["exec'd listener gone within 1 ms"]["exe_and_argv"].as_bool();
        md += &format!(" {} |", if has == Some(true) { "yes" } else { "no (comm only)" });
    }
    md += "\n\nColumns (watcher: the JSON keys of these events):\n\n";
    for tool in TOOLS {
        let fields: Vec<&str> =
            report["tools"][tool]["fields"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        match report["tools"][tool]["error"].as_str() {
            Some(error) => md += &format!("- {tool}: did not run: {error}\n"),
            None => {
                md += &format!("- {tool}: {}", fields.join(", "));
                if report["tools"][tool]["complete"].as_bool() == Some(false) {
                    md += " (its closing canary never came: lines may be missing)";
                }
                md += "\n";
            }
        }
    }
    if let Some(costs) = report["getppid_ns"].as_object() {
        let off = costs.get("off").and_then(Value::as_f64);
        md += "\n| getppid() with | ns per call (fastest chunk) | × nothing attached |\n|---|---|---|\n";
        for tool in ["off", "watcher", "watcher on syscall tracepoints", "bindsnoop", "solisten", "tcpaccept"] {
            let Some(ns) = costs.get(tool).and_then(Value::as_f64) else { continue };
            let ratio = off.filter(|&o| o > 0.0).map_or("?".to_owned(), |o| format!("{:.2}", ns / o));
            md += &format!("| {} | {ns:.0} | {ratio} |\n", if tool == "off" { "nothing" } else { tool });
        }
    } else if let Some(error) = report["getppid_error"].as_str() {
        md += &format!("\ngetppid loop failed: {error}\n");
    }
    md
}

/// "N" lines for a case (with watcher's event kinds or bindsnoop's errors),
/// "—" for none, or why the tool did not run.
fn cell(tool: &Value, case: &str) -> String {
    if tool["error"].is_string() {
        return "did not run".to_owned();
    }
    let case = &tool["cases"][case];
    let lines = case["lines"].as_u64().unwrap_or(0);
    if lines == 0 {
        return "—".to_owned();
    }
    let detail: Vec<&str> = ["kinds", "errors"]
        .iter()
        .flat_map(|k| case[*k].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    if detail.is_empty() { lines.to_string() } else { format!("{lines} ({})", detail.join(", ")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_that_did_not_run_says_so_in_every_cell() {
        let report = serde_json::json!({
            "kernel": "6.1.0-57-amd64",
            "tools": {
                "watcher": {"cases": {"TCP v4 listener": {"lines": 2, "kinds": ["bind", "listen"]}}, "fields": ["pid"]},
                "bindsnoop": {"error": "not attached"},
                "solisten": {"cases": {"TCP v4 listener": {"lines": 1}}, "fields": ["pid", "comm"]},
                "tcpaccept": {"cases": {"TCP v4 listener": {"lines": 0}}, "fields": ["pid"]},
            },
            "getppid_ns": {"off": 100.0, "watcher": 150.0},
        });
        let md = tables(&report);
        assert!(md.contains("| TCP v4 listener | 2 (bind, listen) | did not run | 1 | — |"), "{md}");
        assert!(md.contains("- bindsnoop: did not run: not attached"), "{md}");
        assert!(md.contains("| watcher | 150 | 1.50 |"), "{md}");
    }
}
