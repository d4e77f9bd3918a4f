//! Sockets that exist before watcher starts: the snapshot reports them
//! (`existing`), and their closes are then reported live like those of
//! sockets bound later — a UDP socket's release, a UNIX socket's close()
//! or its last holder's exit — in `watch` and, as `listener_down`, in the
//! daemon. (The kernel side learns of these sockets from the snapshot,
//! not from their binds, which it never saw.)
mod common;

use common::{SocketChild, Watcher, require_bpf};
use serde_json::Value;

/// The child of `before_start`, started and holding its sockets, with a
/// forked child holding them too.
struct Before {
    child: SocketChild,
    forked: u32,
    udp_port: u16,
    stream: String,
    dgram: String,
}

fn before_start(dir: &tempfile::TempDir) -> Before {
    let mut child = SocketChild::spawn("before_start", &[&dir.path().display().to_string()]);
    child.go();
    let ready = child.expect("ready");
    let forked = child.expect("child")[0].parse().unwrap();
    Before {
        child,
        forked,
        udp_port: ready[0].parse().unwrap(),
        stream: dir.path().join("stream.sock").display().to_string(),
        dgram: dir.path().join("dgram.sock").display().to_string(),
    }
}

impl Before {
    /// Which of the three sockets an event is about, if any.
    fn which(&self, e: &Value) -> Option<&'static str> {
        if e["proto"] == "udp" && e["port"] == self.udp_port {
            Some("udp")
        } else if e["path"] == self.stream.as_str() {
            Some("stream")
        } else if e["path"] == self.dgram.as_str() {
            Some("dgram")
        } else {
            None
        }
    }

    fn ours(&self, e: &Value) -> bool {
        (e["pid"] == self.child.pid || e["pid"] == self.forked) && self.which(e).is_some()
    }
}

#[test]
fn sockets_from_before_the_start_are_reported_closing() {
    if !require_bpf("sockets_from_before_the_start_are_reported_closing") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut before = before_start(&dir);
    let mut watcher = Watcher::start_json(&[]);

    // The snapshot: each socket, a row per holder (the process and its child).
    let mut existing = Vec::new();
    while existing.len() < 6 {
        let e = watcher.next_event(|e| e["event"] == "existing" && before.ours(e));
        existing.push((before.which(&e).unwrap(), e["pid"].as_u64().unwrap()));
    }
    existing.sort();
    let (parent, forked) = (u64::from(before.child.pid), u64::from(before.forked));
    let mut expected: Vec<_> = ["udp", "stream", "dgram"].iter().flat_map(|w| [(*w, parent), (*w, forked)]).collect();
    expected.sort();
    assert_eq!(existing, expected);

    // The forked child exits (nothing closes: the parent still holds all
    // three), then the parent closes the UDP and the stream sockets.
    before.child.say("close");
    before.child.expect("closed");
    let udp = watcher.next_event(|e| e["event"] == "close" && before.ours(e) && before.which(e) == Some("udp"));
    assert_eq!((udp["pid"].as_u64(), udp["addr"].as_str()), (Some(parent), Some("127.0.0.1")), "{udp}");
    let stream = watcher.next_event(|e| e["event"] == "close" && before.ours(e) && before.which(e) == Some("stream"));
    assert_eq!((stream["pid"].as_u64(), stream["sock_type"].as_str()), (Some(parent), Some("SOCK_STREAM")), "{stream}");

    // Its exit closes the datagram socket, which it was the last to hold.
    let (pid, dgram_path) = (before.child.pid, before.dgram.clone());
    let Before { child, .. } = before;
    child.finish();
    let mut events =
        watcher.events_until(|e| e["event"] == "close" && e["pid"] == pid && e["path"] == dgram_path.as_str());
    assert_eq!(events.last().unwrap()["sock_type"], "SOCK_DGRAM", "{:?}", events.last());
    // Each was reported closing once: not again at either exit.
    let (status, rest) = watcher.stop();
    assert!(status.success(), "{status}");
    events.extend(rest.iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()));
    let closes: Vec<&Value> =
        events.iter().filter(|e| e["event"] == "close" && (e["pid"] == parent || e["pid"] == forked)).collect();
    assert_eq!(closes.len(), 1, "only the datagram socket's close was still to come: {closes:?}");
}

#[test]
fn sockets_from_before_the_daemon_go_down() {
    if !require_bpf("sockets_from_before_the_daemon_go_down") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let before = before_start(&dir);
    let config = dir.path().join("watcher.toml");
    std::fs::write(
        &config,
        format!(
            "[[allow]]\nproto = \"udp\"\nport = {}\nscope = \"loopback\"\n\n[[allow]]\nproto = \"unix\"\npath = \"{}\"\n\n[[allow]]\nproto = \"unix\"\npath = \"{}\"\n",
            before.udp_port, before.stream, before.dgram
        ),
    )
    .unwrap();
    let mut watcher = Watcher::start(&["daemon", "--config", &config.display().to_string()]);
    let mut up = Vec::new();
    while up.len() < 3 {
        let e = watcher.next_event(|e| e["event"] == "listener_up" && before.ours(e));
        up.push(before.which(&e).unwrap());
    }
    up.sort_unstable();
    assert_eq!(up, ["dgram", "stream", "udp"], "each socket is one listener, however many hold it");

    let mut before = before;
    before.child.say("close");
    before.child.expect("closed");
    let mut down = Vec::new();
    while down.len() < 2 {
        let e = watcher.next_event(|e| e["event"] == "listener_down" && before.which(e).is_some());
        assert!(e["pid"] == before.child.pid || e["pid"] == before.forked, "named after a holder: {e}");
        assert!(e["lived_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{e}");
        down.push(before.which(&e).unwrap());
    }
    down.sort_unstable();
    assert_eq!(down, ["stream", "udp"]);
    let dgram = before.dgram.clone();
    before.child.finish();
    let e = watcher.next_event(|e| e["event"] == "listener_down" && e["path"] == dgram.as_str());
    assert_eq!(e["proto"], "unix", "{e}");
    // No holders_changed handed any of them to another process meanwhile.
    let (_, rest) = watcher.stop();
    assert!(
        !rest
            .iter()
            .any(|l| l.contains("\"holders_changed\"") && (l.contains("stream.sock") || l.contains("dgram.sock"))),
        "{rest:?}"
    );
}

/// FINDINGS item 2: a service restarted beside its old instance (both on
/// one address: SO_REUSEADDR and SO_REUSEPORT). When the old process is
/// killed, the daemon must not hand the old socket to the new process
/// (which holds a socket of its own on the same key), and each close takes
/// down its own socket: the key goes down with the new process's close,
/// named after it. The old socket is the snapshot's (by its sock_diag
/// cookie) or a live one (by the cookie its bind or listen event carries).
fn old_and_new_socket_on_one_key(proto: &str, old_before_the_daemon: bool) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("watcher.toml");
    std::fs::write(&config, format!("[[allow]]\nproto = \"{proto}\"\nport = \"1-65535\"\nscope = \"loopback\"\n"))
        .unwrap();
    let start_daemon = || Watcher::start(&["daemon", "--config", &config.display().to_string()]);
    let mut watcher = (!old_before_the_daemon).then(start_daemon);
    let mut old = SocketChild::spawn("reuse", &[proto, "0"]);
    old.go();
    let port: u16 = old.expect("ready")[0].parse().unwrap();
    let mut watcher = watcher.take().unwrap_or_else(start_daemon);
    let on = |e: &Value, event: &str| e["event"] == event && e["proto"] == proto && e["port"] == port;
    let up = watcher.next_event(|e| on(e, "listener_up"));
    assert_eq!(up["pid"], old.pid, "{up}");

    let mut new = SocketChild::spawn("reuse", &[proto, &port.to_string()]);
    new.go();
    new.expect("ready");
    let new_up = if proto == "tcp" { "listen" } else { "bind" };
    watcher.next_event(|e| on(e, new_up) && e["pid"] == new.pid);
    // The old instance is killed; its socket closes with it (after its
    // exit, which is when the daemon looks in /proc for who holds it now).
    let old_pid = old.pid;
    old.child.kill().unwrap();
    old.child.wait().unwrap();
    let close = watcher.next_event(|e| on(e, "close") && e["pid"] == old_pid);
    // Released after the process left its namespaces: the socket's is kept.
    assert!(close["netns"].as_u64().is_some_and(|n| n > 0), "{close}");
    // Then the new one closes its socket: now the key is down.
    new.say("close");
    new.expect("closed");
    let down = watcher.next_event(|e| on(e, "listener_down"));
    assert_eq!(down["pid"], new.pid, "the key's last socket was the new one: {down}");
    let (_, rest) = watcher.stop();
    let events: Vec<Value> = rest.iter().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!events.iter().any(|e| on(e, "holders_changed")), "{events:?}");
    new.finish();
}

#[test]
fn an_old_udp_socket_from_the_snapshot_and_a_new_one_are_told_apart() {
    if require_bpf("an_old_udp_socket_from_the_snapshot_and_a_new_one_are_told_apart") {
        old_and_new_socket_on_one_key("udp", true);
    }
}

#[test]
fn an_old_tcp_listener_from_the_snapshot_and_a_new_one_are_told_apart() {
    if require_bpf("an_old_tcp_listener_from_the_snapshot_and_a_new_one_are_told_apart") {
        old_and_new_socket_on_one_key("tcp", true);
    }
}

#[test]
fn an_old_live_udp_socket_and_a_new_one_are_told_apart() {
    if require_bpf("an_old_live_udp_socket_and_a_new_one_are_told_apart") {
        old_and_new_socket_on_one_key("udp", false);
    }
}

/// Needs the cookie on TCP events: the tracepoint's socket address means
/// nothing to /proc.
#[test]
fn an_old_live_tcp_listener_and_a_new_one_are_told_apart() {
    if require_bpf("an_old_live_tcp_listener_and_a_new_one_are_told_apart") {
        old_and_new_socket_on_one_key("tcp", false);
    }
}
