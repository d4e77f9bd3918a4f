//! A bad environment (issue 5): no cgroup v2, tracefs that cannot be
//! mounted, both, and neither with no BTF. Each is made for real in a private mount namespace
//! (`unshare --mount`), so the host keeps its mounts. watcher names what is
//! missing and what it therefore does not report, and runs with what it has
//! — or, when nothing it has would see a listener, exits 1 with the reason.
mod common;

use std::process::Command;

use common::{SocketChild, Watcher, is, program, require_bpf};

/// `watcher ARGS` run by each of these scripts in turn, in one private
/// mount namespace.
fn in_namespace(scripts: &[&str], args: &[&str]) -> Command {
    let mut command = Command::new("unshare");
    command.args(["--mount", "--propagation", "private"]);
    for script in scripts {
        command.arg("sh").arg(program(script));
    }
    command.arg(common::watcher_bin()).args(args);
    command
}

#[test]
fn without_cgroup2_it_runs_on_tracepoints() {
    if !require_bpf("without_cgroup2_it_runs_on_tracepoints") {
        return;
    }
    let mut child = SocketChild::spawn("hold", &["4", "tcp", "127.0.0.1", "0"]);
    let pid = child.pid.to_string();
    let mut watcher =
        Watcher::start_command(in_namespace(&["without_cgroup2.sh"], &["watch", "--json", "--pid", &pid]));
    let warning = watcher
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("not attached (no cgroup v2"))
        .unwrap_or_else(|| panic!("no warning about cgroup v2: {:?}", watcher.stderr_lines()));
    assert!(warning.contains("cgroup/post_bind4") && warning.contains("cgroup/sock_release"), "{warning}");
    assert!(warning.contains("not reported: successful binds"), "says what goes unseen: {warning}");
    let ready = watcher.stderr_lines().into_iter().find(|l| l.starts_with("watcher: ready:")).unwrap();
    assert!(ready.contains("3 NOT attached"), "{ready}");

    child.go();
    let port: u64 = child.expect("ready")[0].parse().unwrap();
    let listen = watcher.next_event(|e| is(e, "listen", child.pid));
    assert_eq!(listen["port"].as_u64(), Some(port), "{listen}");
    assert_eq!(listen["comm"], "python3", "{listen}");
    child.say("close");
    child.expect("closed");
    watcher.next_event(|e| is(e, "close", child.pid) && e["port"].as_u64() == Some(port));
    child.finish();
}

#[test]
fn without_tracefs_it_runs_on_cgroup_hooks() {
    if !require_bpf("without_tracefs_it_runs_on_cgroup_hooks") {
        return;
    }
    let mut child = SocketChild::spawn("hold", &["4", "udp", "127.0.0.1", "0"]);
    let pid = child.pid.to_string();
    let mut watcher =
        Watcher::start_command(in_namespace(&["without_tracefs.sh"], &["watch", "--json", "--pid", &pid]));
    let warning = watcher
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("not attached (no tracefs"))
        .unwrap_or_else(|| panic!("no warning about tracefs: {:?}", watcher.stderr_lines()));
    assert!(warning.contains("mounting tracefs on /sys/kernel/tracing"), "{warning}");
    // TCP listens come from the raw tracepoint, which needs no tracefs.
    assert!(!warning.contains("inet_sock_set_state") && !warning.contains("TCP listen events"), "{warning}");
    let ready = watcher.stderr_lines().into_iter().find(|l| l.starts_with("watcher: ready:")).unwrap();
    assert!(ready.contains("raw_tracepoint inet_sock_set_state"), "{ready}");

    // A UDP bind is seen by cgroup/post_bind4 alone, with the kernel's port.
    child.go();
    let port: u64 = child.expect("ready")[0].parse().unwrap();
    let bind = watcher.next_event(|e| is(e, "bind", child.pid));
    assert_eq!((bind["proto"].as_str(), bind["port"].as_u64()), (Some("udp"), Some(port)), "{bind}");
    assert_eq!(bind["comm"], "python3", "{bind}");
    child.say("close");
    child.expect("closed");
    watcher.next_event(|e| is(e, "close", child.pid) && e["port"].as_u64() == Some(port));
    child.finish();
}

/// Without tracefs and cgroup v2, the raw tracepoint still sees TCP
/// listeners go up and down, with their ports.
#[test]
fn with_neither_tcp_listeners_come_from_the_raw_tracepoint() {
    if !require_bpf("with_neither_tcp_listeners_come_from_the_raw_tracepoint") {
        return;
    }
    let mut child = SocketChild::spawn("hold", &["4", "tcp", "127.0.0.1", "0"]);
    let pid = child.pid.to_string();
    let mut watcher = Watcher::start_command(in_namespace(
        &["without_tracefs.sh", "without_cgroup2.sh"],
        &["watch", "--json", "--pid", &pid],
    ));
    let ready = watcher.stderr_lines().into_iter().find(|l| l.starts_with("watcher: ready:")).unwrap();
    assert!(ready.starts_with("watcher: ready: 1 programs attached (raw_tracepoint inet_sock_set_state)"), "{ready}");
    child.go();
    let port: u64 = child.expect("ready")[0].parse().unwrap();
    let listen = watcher.next_event(|e| is(e, "listen", child.pid));
    assert_eq!((listen["port"].as_u64(), listen["addr"].as_str()), (Some(port), Some("127.0.0.1")), "{listen}");
    assert_eq!(listen["comm"], "python3", "{listen}");
    child.say("close");
    child.expect("closed");
    watcher.next_event(|e| is(e, "close", child.pid) && e["port"].as_u64() == Some(port));
    child.finish();
}

/// With no BTF either, nothing would see a listener: it says why and exits.
#[test]
fn with_neither_and_no_btf_it_exits_with_the_reason() {
    if !require_bpf("with_neither_and_no_btf_it_exits_with_the_reason") {
        return;
    }
    let out =
        in_namespace(&["without_tracefs.sh", "without_cgroup2.sh", "without_btf.sh"], &["watch"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("watcher: error: no hook that sees listeners could be attached"), "{stderr}");
    assert!(last.contains("tracefs") && last.contains("cgroup v2"), "names both causes: {last}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    assert!(out.stdout.is_empty(), "nothing on stdout");
}
