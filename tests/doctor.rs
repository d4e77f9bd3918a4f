//! `watcher doctor` on the running kernel: it loads and attaches the real
//! programs, and says the default set is complete where `watch` attaches
//! every hook.
mod common;

use std::process::Command;

use common::{require_bpf, watcher_bin};
use serde_json::Value;

#[test]
fn doctor_reports_this_kernel_and_a_complete_default_set() {
    if !require_bpf("doctor_reports_this_kernel_and_a_complete_default_set") {
        return;
    }
    let out = Command::new(watcher_bin()).args(["doctor", "--json"]).output().expect("running watcher doctor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "doctor failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("doctor --json prints JSON");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(report["kernel"], release.trim(), "{report}");
    assert_eq!(report["btf"]["ok"], true, "{report}");
    assert_eq!(report["complete"], true, "{report}");
    let types = report["program_types"].as_array().unwrap();
    let tracepoint = types.iter().find(|t| t["type"] == "tracepoint").expect("tracepoint probed");
    assert_eq!(tracepoint["loads"], true, "{report}");
    for fact in report["facts"].as_array().unwrap() {
        assert!(!fact["hooks"].as_array().unwrap().is_empty(), "no hook for {fact}");
    }
}

#[test]
fn doctor_text_ends_with_the_verdict() {
    if !require_bpf("doctor_text_ends_with_the_verdict") {
        return;
    }
    let out = Command::new(watcher_bin()).arg("doctor").output().expect("running watcher doctor");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("kernel:"), "{text}");
    assert!(text.lines().last().unwrap().starts_with("complete: yes"), "{text}");
}
