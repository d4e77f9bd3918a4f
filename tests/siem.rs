//! End-to-end tests of the SIEM formats (issue 14 item 3): `watch
//! --format ecs|ocsf` and the daemon's `[output] format`, with the real
//! kernel and a real python3 listener.
mod common;

use std::process::Command;

use common::{SocketChild, Watcher, require_bpf};
use serde_json::Value;
use watcher::output::ocsf::schema;

/// A JSON value at a dotted path (`event.kind`); Null when absent.
fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
    static NULL: Value = Value::Null;
    path.split('.').try_fold(value, |v, name| v.get(name)).unwrap_or(&NULL)
}

/// What OCSF 1.3.0's files require of a real line, and no attribute
/// where the schema has none (see `schema`, which cites them).
fn meets_ocsf(v: &Value) {
    assert_eq!(schema::violations(v), Vec::<String>::new(), "{v}");
}

/// A python3 child holding a TCP listener on 127.0.0.1 (port chosen by the
/// kernel): its pid, exe, and port.
fn listener() -> (SocketChild, u32, String, u16) {
    let mut child = SocketChild::spawn("hold", &["4", "tcp", "127.0.0.1", "0"]);
    let (pid, exe) = (child.pid, child.exe());
    child.go();
    let port: u16 = child.expect("ready")[0].parse().unwrap();
    (child, pid, exe, port)
}

#[test]
fn watch_format_ecs() {
    if !require_bpf("watch_format_ecs") {
        return;
    }
    let mut watcher = Watcher::start(&["watch", "--format", "ecs", "--no-snapshot"]);
    let (mut child, pid, exe, port) = listener();
    let ours = |action: &'static str| {
        move |v: &Value| {
            at(v, "event.action") == action && at(v, "process.pid") == pid && at(v, "destination.port") == port
        }
    };
    let check = |v: &Value, kind: &str| {
        assert_eq!(at(v, "ecs.version").as_str().map(|s| s.starts_with("8.")), Some(true), "{v}");
        assert!(chrono::DateTime::parse_from_rfc3339(at(v, "@timestamp").as_str().unwrap()).is_ok(), "{v}");
        assert_eq!(at(v, "event.kind"), "event", "{v}");
        assert_eq!(at(v, "event.category"), &serde_json::json!(["network"]), "{v}");
        assert_eq!(at(v, "event.type"), &serde_json::json!([kind]), "{v}");
        assert_eq!(at(v, "event.module"), "watcher", "{v}");
        assert_eq!(at(v, "destination.ip"), "127.0.0.1", "{v}");
        assert_eq!(at(v, "network.transport"), "tcp", "{v}");
        assert_eq!(at(v, "network.type"), "ipv4", "{v}");
        assert_eq!(at(v, "process.executable"), exe.as_str(), "{v}");
        assert_eq!(at(v, "process.parent.pid"), std::process::id(), "{v}");
        assert!(at(v, "process.args").as_array().is_some_and(|a| a.iter().any(|x| x == "hold")), "{v}");
        assert_eq!(at(v, "user.id"), "0", "{v}");
        assert_eq!(at(v, "user.name"), "root", "{v}");
        assert!(at(v, "host.name").as_str().is_some_and(|h| !h.is_empty()), "{v}");
        assert!(at(v, "watcher.ktime_ns").as_u64().is_some_and(|k| k > 0), "{v}");
    };
    check(&watcher.next_event(ours("bind")), "start");
    check(&watcher.next_event(ours("listen")), "start");
    child.say("close");
    child.expect("closed");
    check(&watcher.next_event(ours("close")), "end");
    child.finish();
}

#[test]
fn watch_format_ocsf() {
    if !require_bpf("watch_format_ocsf") {
        return;
    }
    let mut watcher = Watcher::start(&["watch", "--format", "ocsf", "--no-snapshot"]);
    let (mut child, pid, exe, port) = listener();
    let ours = |activity: u64| {
        move |v: &Value| {
            at(v, "activity_id") == activity && at(v, "actor.process.pid") == pid && at(v, "dst_endpoint.port") == port
        }
    };
    let check = |v: &Value, activity: u64, name: &str| {
        meets_ocsf(v);
        assert_eq!(at(v, "class_uid"), 4001, "{v}");
        assert_eq!(at(v, "category_uid"), 4, "{v}");
        assert_eq!(at(v, "activity_name"), name, "{v}");
        assert_eq!(at(v, "type_uid"), 400100 + activity, "{v}");
        assert!(at(v, "time").as_i64().is_some_and(|t| t > 1_700_000_000_000), "epoch ms: {v}");
        assert_eq!(at(v, "severity_id"), 1, "{v}");
        assert_eq!(at(v, "metadata.product.name"), "watcher", "{v}");
        assert!(at(v, "metadata.version").as_str().is_some_and(|s| s.starts_with("1.")), "{v}");
        assert_eq!(at(v, "dst_endpoint.ip"), "127.0.0.1", "{v}");
        assert_eq!(at(v, "connection_info.protocol_name"), "tcp", "{v}");
        assert_eq!(at(v, "connection_info.protocol_ver_id"), 4, "{v}");
        assert_eq!(at(v, "actor.process.file.path"), exe.as_str(), "{v}");
        assert_eq!(at(v, "actor.process.parent_process.pid"), std::process::id(), "{v}");
        assert!(at(v, "actor.process.cmd_line").as_str().is_some_and(|c| c.contains("hold")), "{v}");
        assert_eq!(at(v, "actor.user.uid"), "0", "{v}");
        assert_eq!(at(v, "actor.user.name"), "root", "{v}");
    };
    check(&watcher.next_event(ours(1)), 1, "Open");
    check(&watcher.next_event(ours(7)), 7, "Listen");
    child.say("close");
    child.expect("closed");
    check(&watcher.next_event(ours(2)), 2, "Close");
    child.finish();
}

/// The daemon in OCSF, with an allowlist that expects nothing: the python
/// listener is a Network Activity Listen, then a Detection Finding.
#[test]
fn daemon_writes_ocsf_and_alerts_are_findings() {
    if !require_bpf("daemon_writes_ocsf_and_alerts_are_findings") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("watcher.toml");
    std::fs::write(&config, "default_severity = \"critical\"\n[output]\nformat = \"ocsf\"\n").unwrap();
    let mut daemon = Watcher::start(&["daemon", "--config", config.to_str().unwrap()]);
    let (mut child, pid, _, port) = listener();
    let up = daemon.next_event(|v| {
        at(v, "metadata.event_code") == "listener_up"
            && at(v, "actor.process.pid") == pid
            && at(v, "dst_endpoint.port") == port
    });
    assert_eq!((at(&up, "class_uid"), at(&up, "activity_id")), (&4001.into(), &7.into()), "{up}");
    meets_ocsf(&up);
    let finding = daemon.next_event(|v| {
        at(v, "class_uid") == 2004 && at(v, "evidences").get(0).is_some_and(|e| at(e, "dst_endpoint.port") == port)
    });
    assert_eq!(at(&finding, "type_uid"), 200401, "{finding}");
    meets_ocsf(&finding);
    assert_eq!((at(&finding, "severity_id"), at(&finding, "severity")), (&5.into(), &"Critical".into()), "{finding}");
    assert!(at(&finding, "finding_info.title").as_str().is_some_and(|t| !t.is_empty()), "{finding}");
    assert_eq!(at(&finding["evidences"][0], "process.pid"), pid, "{finding}");
    child.say("close");
    child.expect("closed");
    let down =
        daemon.next_event(|v| at(v, "metadata.event_code") == "listener_down" && at(v, "dst_endpoint.port") == port);
    assert_eq!(at(&down, "activity_id"), 2, "{down}");
    meets_ocsf(&down);
    child.finish();
}

/// A daemon in ECS: alerts are `event.kind: alert` with their severity.
#[test]
fn daemon_writes_ecs() {
    if !require_bpf("daemon_writes_ecs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("watcher.toml");
    std::fs::write(&config, "[output]\nformat = \"ecs\"\n").unwrap();
    let mut daemon = Watcher::start(&["daemon", "--config", config.to_str().unwrap()]);
    let (mut child, pid, exe, port) = listener();
    let alert = daemon.next_event(|v| at(v, "event.kind") == "alert" && at(v, "destination.port") == port);
    assert_eq!(at(&alert, "event.action"), "alert", "{alert}");
    assert_eq!(at(&alert, "event.severity"), 47, "warning: {alert}");
    assert_eq!(at(&alert, "process.pid"), pid, "{alert}");
    assert_eq!(at(&alert, "process.executable"), exe.as_str(), "{alert}");
    assert!(at(&alert, "message").as_str().is_some_and(|m| !m.is_empty()), "{alert}");
    assert_eq!(at(&alert, "watcher.subject"), "listener_up", "{alert}");
    child.say("close");
    child.expect("closed");
    let down = daemon.next_event(|v| at(v, "event.action") == "listener_down" && at(v, "destination.port") == port);
    assert_eq!(at(&down, "event.type"), &serde_json::json!(["end"]), "{down}");
    child.finish();
}

/// Bad formats: one line naming what is wrong, a non-zero exit, before
/// anything is loaded.
#[test]
fn bad_formats_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("watcher.toml");
    std::fs::write(&config, "[output]\nformat = \"cef\"\n").unwrap();
    let out =
        Command::new(common::watcher_bin()).args(["daemon", "--config", config.to_str().unwrap()]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("watcher: error:")).collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("[output] format \"cef\": expected \"json\""), "{stderr}");

    for args in [&["watch", "--format", "xml"][..], &["watch", "--json", "--format", "ecs"]] {
        let out = Command::new(common::watcher_bin()).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error:"), "{args:?}: {stderr}");
    }
}
