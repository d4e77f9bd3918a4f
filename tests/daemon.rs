//! End-to-end tests of `watcher daemon` (issue 4): lifecycle, allowlist
//! alerts, reload. Real daemons and tools (python3 -m http.server, socat),
//! the real kernel.
mod common;

use std::process::{Child, Command, Stdio};

use common::{PYTHON, SocketChild, Watcher, free_port, program, require_bpf};
use serde_json::Value;

fn config_file(dir: &tempfile::TempDir, body: &str) -> String {
    let path = dir.path().join("watcher.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

fn daemon(config: &str) -> Watcher {
    Watcher::start(&["daemon", "--config", config])
}

/// `python3 -m http.server PORT` on loopback: a real service. Returns once
/// it answers on its port (its readiness), not after a sleep.
fn http_server(port: u16) -> Killed {
    let child = Command::new(PYTHON)
        .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "http.server never answered");
        std::thread::yield_now();
    }
    Killed(child)
}

/// Kills the child when dropped, so a failing test leaves no process behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stop(child: Killed) {
    drop(child);
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn on(e: &Value, event: &str, port: u16) -> bool {
    e["event"] == event && e["port"] == port
}

/// A service restarted: listener_down, listener_up and `restarted` with a
/// plausible gap and the same exe. Then another program takes the port
/// while the service is down: `owner_changed`, and an alert (it is not the
/// allowed exe).
#[test]
fn restart_and_owner_change() {
    if !require_bpf("restart_and_owner_change") {
        return;
    }
    let port = free_port("4", "tcp");
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        &format!(
            "[[allow]]\nname = \"web\"\nproto = \"tcp\"\nport = {port}\ncomm = \"python3\"\nseverity = \"critical\"\n"
        ),
    );
    let mut watcher = daemon(&config);

    let first = http_server(port);
    let up = watcher.next_event(|e| on(e, "listener_up", port));
    assert_eq!(up["comm"], "python3", "{up}");
    // Stamped before the kill: the listener goes down after this, so the
    // gap is at most from here to the new server's first answer.
    let down_at = monotonic_ns();
    stop(first);
    watcher.next_event(|e| on(e, "listener_down", port));
    let second = http_server(port);
    let up_at = monotonic_ns();
    let restarted = watcher.next_event(|e| on(e, "restarted", port));
    let gap_ms = restarted["gap_ms"].as_f64().unwrap();
    assert!(gap_ms > 0.0 && gap_ms <= (up_at - down_at) as f64 / 1e6 + 1.0, "gap {gap_ms} ms: {restarted}");
    assert_eq!(restarted["same_exe"], true, "{restarted}");
    assert_eq!(restarted["same_user"], true, "{restarted}");
    assert_eq!(restarted["same_cmdline"], true, "{restarted}");
    assert_ne!(restarted["pid"], restarted["previous_pid"], "{restarted}");
    stop(second);
    watcher.next_event(|e| on(e, "listener_down", port));

    // socat takes the port while the service is down.
    let socat = Killed(
        Command::new("socat")
            .args([format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"), "STDOUT".into()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let changed = watcher.next_event(|e| on(e, "owner_changed", port));
    assert_eq!(changed["exe"], "/usr/bin/socat", "{changed}");
    assert!(changed["previous_exe"].as_str().is_some_and(|e| e.contains("python")), "{changed}");
    let alert = watcher.next_event(|e| on(e, "alert", port));
    assert_eq!(alert["rule"], "web", "{alert}");
    assert_eq!(alert["severity"], "critical", "{alert}");
    assert!(alert["reason"].as_str().unwrap().contains("comm=python3"), "{alert}");
    drop(socat);
}

/// An unexpected listener raises an alert naming its pid and why no rule
/// allows it; the same listener raises one alert, not one per connection.
#[test]
fn unexpected_listener_alerts_once() {
    if !require_bpf("unexpected_listener_alerts_once") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, "[[allow]]\nproto = \"udp\"\nport = 53\n");
    let mut watcher = daemon(&config);
    let mut child = SocketChild::spawn_program(&[], &program("passive.py"), "accept_server", &[]);
    let pid = child.pid;
    child.go();
    let port: u16 = child.expect("ready")[1].parse().unwrap();
    // How fast is the latency bench's to say (`cargo xtask bench latency`,
    // BENCHMARKS.md), not a timed assertion's on a shared, loaded host.
    let alert = watcher.next_event(|e| on(e, "alert", port));
    assert_eq!(alert["pid"], pid, "{alert}");
    assert_eq!(alert["rule"], Value::Null, "{alert}");
    assert!(alert["reason"].as_str().unwrap().starts_with(&format!("no rule allows tcp port {port}")), "{alert}");
    // Connections are accepted; no second alert for this listener.
    let _a = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    child.expect("accepted");
    let _b = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    child.expect("accepted");
    child.finish();
    let events = watcher.events_until(|e| on(e, "listener_down", port));
    assert!(!events.iter().any(|e| on(e, "alert", port)), "a second alert: {events:?}");
}

/// An unlisted socat listener, and an unlisted program's packet socket with
/// a filter: both alert.
#[test]
fn socat_and_packet_filter_alert() {
    if !require_bpf("socat_and_packet_filter_alert") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, "[[allow]]\nproto = \"packet\"\nexe = \"/usr/sbin/dhclient\"\n");
    // Before the daemon starts: finding a free port binds one.
    let port = free_port("4", "tcp");
    let mut watcher = daemon(&config);
    let socat = Killed(
        Command::new("socat")
            .args([format!("TCP-LISTEN:{port},bind=127.0.0.1"), "STDOUT".into()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let alert = watcher.next_event(|e| on(e, "alert", port));
    assert_eq!(alert["pid"], socat.0.id(), "{alert}");
    assert_eq!((alert["comm"].as_str(), alert["exe"].as_str()), (Some("socat"), Some("/usr/bin/socat")), "{alert}");
    drop(socat);

    let mut door = SocketChild::spawn_program(&[], &program("passive.py"), "packet_filter", &[]);
    let pid = door.pid;
    door.go();
    door.expect("ready");
    let alert = watcher.next_event(|e| e["event"] == "alert" && e["pid"] == pid && e["subject"] == "filter_attached");
    assert!(alert["reason"].as_str().unwrap().contains("packet"), "{alert}");
    assert!(alert["reason"].as_str().unwrap().contains("exe=/usr/sbin/dhclient"), "names the rule it failed: {alert}");
    door.finish();
}

/// SIGHUP with a broken file keeps the rules in force; with a good one,
/// the new rules apply.
#[test]
fn reload_keeps_old_rules_on_a_broken_config() {
    if !require_bpf("reload_keeps_old_rules_on_a_broken_config") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port("4", "tcp");
    let config = config_file(&dir, &format!("[[allow]]\nproto = \"tcp\"\nport = {port}\n"));
    let mut watcher = daemon(&config);
    std::fs::write(&config, "[[allow]]\nproto = \"tcp\"\nport = \"oops\n").unwrap();
    watcher.signal(libc::SIGHUP);
    let rejected = watcher.next_event(|e| e["event"] == "config_rejected");
    assert!(rejected["reason"].as_str().unwrap().contains("line"), "{rejected}");
    // The old rule still allows the port: its listener raises no alert.
    let first = http_server(port);
    watcher.next_event(|e| on(e, "listener_up", port));
    stop(first);
    let events = watcher.events_until(|e| on(e, "listener_down", port));
    assert!(!events.iter().any(|e| on(e, "alert", port)), "{events:?}");

    std::fs::write(&config, "[[allow]]\nproto = \"udp\"\nport = 53\n").unwrap();
    watcher.signal(libc::SIGHUP);
    let reloaded = watcher.next_event(|e| e["event"] == "config_reloaded");
    assert_eq!(reloaded["rules"], 1, "{reloaded}");
    let second = http_server(port);
    watcher.next_event(|e| on(e, "alert", port));
    stop(second);
}

/// A bad configuration at start: one line with the reason, exit code 2.
#[test]
fn bad_config_at_start_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, "[[allow]]\nproto = \"tcp\"\nport = 22\nbogus = 1\n");
    let out = Command::new(common::watcher_bin()).args(["daemon", "--config", &config]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("bad configuration") && stderr.contains("unknown field `bogus`") && stderr.contains("line 4"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    let missing =
        Command::new(common::watcher_bin()).args(["daemon", "--config", "/nonexistent/w.toml"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
}

/// Blind for a while: the daemon is stopped while a flood overflows the ring
/// buffer, and meanwhile a listener closes and another opens (their records
/// are lost). Continued, it reports the loss, rebuilds its table from a
/// fresh snapshot, and reports both changes it did not see happen.
#[test]
fn loss_is_reported_and_the_table_rebuilt() {
    if !require_bpf("loss_is_reported_and_the_table_rebuilt") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, "[[allow]]\nproto = \"tcp\"\nport = \"1-65535\"\nscope = \"loopback\"\n");
    let mut old = SocketChild::spawn("hold", &["4", "tcp", "127.0.0.1", "0"]);
    old.go();
    let old_port: u16 = old.expect("ready")[0].parse().unwrap();
    let mut watcher = daemon(&config);
    let up = watcher.next_event(|e| on(e, "listener_up", old_port));
    assert_eq!(up["pid"], old.pid, "{up}");

    // 3 records per flooded listener; the default 4 MiB ring buffer holds ~37,000.
    let mut flood = SocketChild::spawn_program(&[], &program("flood.py"), "40000", &[]);
    watcher.signal(libc::SIGSTOP);
    flood.go();
    flood.expect("flooded");
    old.say("close");
    old.expect("closed");
    let mut new = SocketChild::spawn("hold", &["4", "tcp", "127.0.0.1", "0"]);
    let new_pid = new.pid;
    new.go();
    let new_port: u16 = new.expect("ready")[0].parse().unwrap();
    watcher.signal(libc::SIGCONT);

    let events = watcher.events_until(|e| e["event"] == "resynced");
    assert!(events.iter().any(|e| e["event"] == "lost" && e["count"].as_u64() > Some(0)), "no lost event");
    assert!(
        !events.iter().any(|e| e["event"] == "listen" && e["pid"] == new_pid),
        "the new listener's records were expected to be lost (ring buffer full)"
    );
    let down = events.iter().find(|e| on(e, "listener_down", old_port)).expect("the closed listener is reported down");
    // (Its port may have served one of the flood's listeners whose close
    // was lost: that one then goes down first.)
    let up = events
        .iter()
        .find(|e| on(e, "listener_up", new_port) && e["pid"] == new_pid)
        .expect("the new listener is reported up");
    assert_eq!(up["comm"], "python3", "{up}");
    let resynced = events.last().unwrap();
    assert!(resynced["live_listeners"].as_u64() > Some(0), "{resynced}");
    eprintln!("{down}\n{up}\n{resynced}");
    new.say("close");
    new.expect("closed");
    new.finish();
    old.finish();
    drop(flood); // killed: its markers are not needed here
}
