//! `watcher doctor` on the running kernel: it loads and attaches the real
//! programs, and says the default set is complete where `watch` attaches
//! every hook.
mod common;

use std::process::Command;

use common::{SocketChild, Watcher, is, require_bpf, watcher_bin};
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
        if fact["opt_in"] == "enforce" && fact["hooks"].as_array().unwrap().is_empty() {
            // A kernel that refuses LSM programs (this host's): listed,
            // refused, and what is then not enforced said.
            assert!(!fact["refused"].as_array().unwrap().is_empty(), "{fact}");
            assert!(!fact["not_enforced"].as_array().unwrap().is_empty(), "{fact}");
            continue;
        }
        assert!(!fact["hooks"].as_array().unwrap().is_empty(), "no hook for {fact}");
    }
    // Where bind() is followed by its exit tracepoint, its entry is there
    // exactly when the arguments do not come from the saved registers.
    let hooks: Vec<&str> = report["facts"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f["hooks"].as_array().unwrap().iter().filter_map(Value::as_str))
        .collect();
    if hooks.contains(&"tracepoint syscalls/sys_exit_bind") {
        let registers = report["syscall_args_from_registers"].as_bool().expect("syscall_args_from_registers");
        assert_eq!(hooks.contains(&"tracepoint syscalls/sys_enter_bind"), !registers, "{report}");
    }
    // The LSM hooks are listed whether chosen or refused.
    let lsm: Vec<&str> = report["facts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["opt_in"] == "enforce")
        .flat_map(|f| {
            let refused = f["refused"].as_array().unwrap().iter().map(|m| &m["hook"]);
            f["hooks"].as_array().unwrap().iter().chain(refused)
        })
        .filter_map(Value::as_str)
        .collect();
    assert!(lsm.contains(&"lsm socket_listen") && lsm.contains(&"lsm socket_create"), "{report}");
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

/// `--light` attaches no syscall tracepoint; on a kernel that refuses
/// tracing programs (this host) it gives up the facts only syscall
/// tracepoints carry, says so, and is still complete.
#[test]
fn light_attaches_no_syscall_tracepoint() {
    if !require_bpf("light_attaches_no_syscall_tracepoint") {
        return;
    }
    let out =
        Command::new(watcher_bin()).args(["doctor", "--json", "--light"]).output().expect("running watcher doctor");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "doctor --light failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("doctor --json prints JSON");
    assert_eq!(report["light"], true, "{report}");
    assert_eq!(report["complete"], true, "{report}");
    let tracing = report["program_types"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["type"] == "tracing (fentry/fexit)" && t["loads"] == true);
    for fact in report["facts"].as_array().unwrap() {
        let hooks: Vec<&str> = fact["hooks"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert!(!hooks.iter().any(|h| h.starts_with("tracepoint syscalls/")), "{fact}");
        if fact["given_up_by_light"] == true {
            assert!(hooks.is_empty(), "{fact}");
            assert!(!tracing, "gave up a fact although fentry/fexit load: {fact}");
        } else if fact["opt_in"] == "enforce" {
            // BPF LSM or nothing: --light changes nothing for these.
            assert!(hooks.iter().all(|h| h.starts_with("lsm ")), "{fact}");
        } else {
            assert!(!hooks.is_empty(), "{fact}");
        }
    }
    let given_up = report["facts"].as_array().unwrap().iter().filter(|f| f["given_up_by_light"] == true).count();
    if !tracing {
        // Failed binds/listens, UNIX close, raw/packet sockets, filters, accepts.
        assert_eq!(given_up, 5, "{report}");
    }
}

/// `watch --light`: the ready line names no syscall tracepoint and, where
/// they would have been needed, what is given up; a TCP listener is still
/// reported, listen and close.
#[test]
fn watch_light_still_reports_tcp_listeners() {
    if !require_bpf("watch_light_still_reports_tcp_listeners") {
        return;
    }
    let mut child = SocketChild::spawn("hold", &["4", "tcp", "127.0.0.1", "0"]);
    let pid = child.pid.to_string();
    let mut watcher = Watcher::start_json(&["--light", "--pid", &pid]);
    let ready = watcher.stderr_lines().into_iter().find(|l| l.starts_with("watcher: ready:")).unwrap();
    assert!(!ready.contains("tracepoint syscalls/"), "{ready}");
    assert!(!ready.contains("NOT attached"), "{ready}");
    if !ready.contains("fexit __sys_bind") {
        assert!(ready.contains("--light, not reported"), "{ready}");
        assert!(ready.contains("bind/listen failures"), "{ready}");
    }
    child.go();
    let port: u64 = child.expect("ready")[0].parse().unwrap();
    let listen = watcher.next_event(|e| is(e, "listen", child.pid));
    assert_eq!(listen["port"].as_u64(), Some(port), "{listen}");
    child.say("close");
    child.expect("closed");
    watcher.next_event(|e| is(e, "close", child.pid) && e["port"].as_u64() == Some(port));
    child.finish();
}
