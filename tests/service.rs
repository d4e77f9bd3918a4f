//! The systemd unit (issue 4): systemd accepts it, and the daemon does its
//! whole job — READY=1 to systemd, the snapshot, attribution of another
//! user's process, kill_unexpected — with exactly the capabilities the unit
//! grants, no more. Without CAP_KILL, the kill is refused and said so.
mod common;

use std::{os::unix::net::UnixDatagram, process::Command};

use common::{SocketChild, Watcher, allow_all_but, free_port, require_bpf};

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/watcher.service");

fn unit_text() -> String {
    std::fs::read_to_string(UNIT).expect("reading watcher.service")
}

/// The unit's CapabilityBoundingSet, as setpriv spells it: "bpf", "kill"…
fn unit_capabilities() -> Vec<String> {
    let text = unit_text();
    let line =
        text.lines().find_map(|l| l.strip_prefix("CapabilityBoundingSet=")).expect("the unit bounds its capabilities");
    line.split_whitespace().map(|cap| cap.strip_prefix("CAP_").expect("a capability name").to_lowercase()).collect()
}

/// `systemd-analyze verify` accepts the unit, with ExecStart pointing at
/// the binary under test (verify checks that it is executable), and says
/// nothing about it (an unknown key would only be a warning).
#[test]
fn unit_file_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("watcher.service");
    let text = unit_text();
    assert!(text.contains("Type=notify"), "systemd is told when the programs are attached");
    assert!(text.contains("Restart=on-failure"));
    std::fs::write(&unit, text.replace("/usr/local/sbin/watcher", common::watcher_bin())).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&unit).output().expect("running systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("watcher.service"), "systemd-analyze complains: {stderr}");
}

/// Runs the daemon as root bounded to `capabilities`, with NOTIFY_SOCKET
/// set as systemd would, and returns it once systemd would have heard READY=1.
fn daemon_with(capabilities: &[String], config: &std::path::Path, notify: &std::path::Path) -> Watcher {
    let socket = UnixDatagram::bind(notify).unwrap();
    socket.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    let bounding = std::iter::once("-all".to_owned())
        .chain(capabilities.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--bounding-set={bounding}"))
        .arg("--inh-caps=-all")
        .arg("--")
        .arg(common::watcher_bin())
        .args(["daemon", "--config"])
        .arg(config)
        .env("NOTIFY_SOCKET", notify);
    let watcher = Watcher::start_command(command);
    let mut message = [0u8; 4096];
    let n = socket.recv(&mut message).expect("READY=1 on NOTIFY_SOCKET");
    let message = String::from_utf8_lossy(&message[..n]);
    assert!(message.lines().any(|l| l == "READY=1"), "systemd was told {message:?}");
    watcher
}

/// A listener opened by user nobody, which no rule allows: the alert names
/// the user and exe, then the process is killed (or not, without CAP_KILL).
fn unexpected_listener_as_nobody(
    watcher: &mut Watcher,
    port: u16,
) -> (serde_json::Value, serde_json::Value, SocketChild) {
    let port = port.to_string();
    let mut child = SocketChild::spawn_with(
        &["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"],
        "hold",
        &["4", "tcp", "127.0.0.1", &port],
    );
    let pid = child.pid;
    child.go();
    // The daemon may kill the child before it can say "ready" (the kill
    // follows the listen within microseconds): the alert names the port.
    let alert = watcher.next_event(|e| e["event"] == "alert" && e["pid"] == pid && e["proto"] == "tcp");
    let outcome = watcher.next_event(|e| (e["event"] == "killed" || e["event"] == "kill_failed") && e["pid"] == pid);
    (alert, outcome, child)
}

#[test]
fn daemon_works_with_the_units_capabilities_and_no_more() {
    if !require_bpf("daemon_works_with_the_units_capabilities_and_no_more") {
        return;
    }
    let capabilities = unit_capabilities();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("watcher.toml");
    // Only the test's own two ports are unexpected: a daemon that kills
    // must judge nothing else on this shared host.
    let (before_port, nobody_port) = (free_port("4", "tcp"), free_port("4", "tcp"));
    std::fs::write(&config, format!("kill_unexpected = true\n\n{}", allow_all_but(&[before_port, nobody_port])))
        .unwrap();

    // Already listening when the daemon starts: alerted on, never killed
    // (an incomplete allowlist at start must not take down a running service).
    let mut before = SocketChild::spawn_with(&[], "hold", &["4", "tcp", "127.0.0.1", &before_port.to_string()]);
    before.go();
    assert_eq!(before.expect("ready")[0].parse::<u16>().unwrap(), before_port);
    let mut watcher = daemon_with(&capabilities, &config, &dir.path().join("notify"));
    let before_pid = before.pid;
    watcher.next_event(|e| e["event"] == "alert" && e["port"] == before_port && e["pid"] == before_pid);
    let (alert, outcome, mut child) = unexpected_listener_as_nobody(&mut watcher, nobody_port);
    // Its alert came before the new listener's kill: a kill of it would be done by now.
    before.say("close");
    before.finish();
    assert_eq!(alert["user"], "nobody", "{alert}");
    assert_eq!(alert["exe"].as_str(), std::fs::canonicalize(common::PYTHON).unwrap().to_str(), "{alert}");
    assert_eq!(outcome["event"], "killed", "{outcome}");
    let status = child.child.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL), "{status}");
    drop(watcher);

    // Without CAP_KILL the same listener lives on, and the daemon says why.
    let without_kill: Vec<String> = capabilities.iter().filter(|c| *c != "kill").cloned().collect();
    assert_eq!(without_kill.len() + 1, capabilities.len(), "the unit grants CAP_KILL");
    let mut watcher = daemon_with(&without_kill, &config, &dir.path().join("notify2"));
    let (_, outcome, mut child) = unexpected_listener_as_nobody(&mut watcher, nobody_port);
    assert_eq!(outcome["event"], "kill_failed", "{outcome}");
    assert!(outcome["error"].as_str().is_some_and(|e| e.contains("EPERM")), "{outcome}");
    assert_eq!(child.child.try_wait().unwrap(), None, "the listener still runs");
    child.say("close");
    child.finish();
}
