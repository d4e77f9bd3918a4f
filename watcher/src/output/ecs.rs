//! `--format ecs` and `[output] format = "ecs"`: each event as an Elastic
//! Common Schema 8.x document, one JSON object a line, nested as ECS
//! names its fields (`event.kind` is `{"event": {"kind": …}}`). The
//! mapping, field by field, is in the README; native fields ECS has no
//! place for are under `watcher.*` with their native names.
use serde_json::{Map, Value, json};

use crate::{
    config::Severity,
    model::{event_name::EventName, socket::Family, text::rfc3339},
    output::facts::{Context, Facts, Outcome, summary},
};

/// The ECS release the field names and allowed values are taken from.
pub const ECS_VERSION: &str = "8.17.0";

/// `event.module` and `event.dataset`.
pub const MODULE: &str = "watcher";

/// One event as an ECS document.
pub fn document(f: &Facts, ctx: &Context) -> Value {
    let mut doc = Map::new();
    let mut put = |path: &str, value: Value| set(&mut doc, path, value);
    put("@timestamp", rfc3339(f.time).into());
    put("ecs.version", ECS_VERSION.into());
    put("event.kind", if f.alert.is_some() { "alert" } else { "event" }.into());
    let (category, kind) = categorize(f);
    put("event.category", json!([category]));
    put("event.type", json!(kind));
    put("event.action", f.name.as_str().into());
    put("event.module", MODULE.into());
    put("event.dataset", MODULE.into());
    if let Some(outcome) = f.outcome {
        put("event.outcome", if outcome == Outcome::Success { "success" } else { "failure" }.into());
    }
    if let Some(alert) = f.alert {
        put("event.severity", severity_number(alert.severity).into());
        put("log.level", alert.severity.name().into());
    }
    if let Some(reason) = &f.reason {
        put("event.reason", reason.as_str().into());
    }
    // The alert's (or the refusal's) reason, else one line for people.
    put("message", f.reason.clone().filter(|_| f.alert.is_some()).unwrap_or_else(|| summary(f)).into());
    if let Some(rule) = &f.rule {
        put("rule.name", rule.as_str().into());
    }
    if let Some(errno) = &f.errno {
        put("error.code", errno.as_str().into());
    }

    // The listening side is the destination of whoever connects.
    if let Some(addr) = f.addr {
        put("destination.ip", addr.to_string().into());
        put("destination.address", addr.to_string().into());
    }
    if let Some(port) = f.port {
        put("destination.port", port.into());
    }
    if let Some(path) = &f.path {
        put("destination.address", path.as_str().into());
    }
    if let Some((addr, port)) = f.peer {
        put("source.ip", addr.to_string().into());
        put("source.address", addr.to_string().into());
        put("source.port", port.into());
    }
    if let Some(proto) = f.proto
        && matches!(f.iana_number, Some(6 | 17))
    {
        put("network.transport", proto.name().into());
    }
    if let Some(n) = f.iana_number {
        put("network.iana_number", n.to_string().into());
    }
    match f.family {
        Some(Family::Ipv4) => put("network.type", "ipv4".into()),
        Some(Family::Ipv6) => put("network.type", "ipv6".into()),
        _ => {}
    }
    if f.peer.is_some() {
        put("network.direction", "inbound".into());
    }

    if let Some(p) = &f.process {
        if let Some(pid) = p.pid {
            put("process.pid", pid.into());
        }
        if let Some(tid) = p.tid {
            put("process.thread.id", tid.into());
        }
        if let Some(ppid) = p.ppid {
            put("process.parent.pid", ppid.into());
        }
        if let Some(name) = &p.name {
            put("process.name", name.as_str().into());
        }
        if let Some(exe) = &p.executable {
            put("process.executable", exe.as_str().into());
        }
        if let Some(args) = &p.args {
            put("process.args", json!(args));
            put("process.args_count", args.len().into());
            put("process.command_line", args.join(" ").into());
        }
        if let Some(uid) = p.uid {
            put("user.id", uid.to_string().into());
        }
        if let Some(user) = &p.user {
            put("user.name", user.as_str().into());
        }
        if let Some(gid) = p.gid {
            put("group.id", gid.to_string().into());
        }
    }
    if let Some(id) = &f.container_id {
        put("container.id", id.as_str().into());
    }
    if let Some(host) = &ctx.host_name {
        put("host.name", host.as_str().into());
        put("host.hostname", host.as_str().into());
    }

    if let Some(proto) = f.proto {
        put("watcher.proto", proto.name().into());
    }
    if let Some(family) = f.family {
        put("watcher.family", family.name().into());
    }
    if let Some(service) = f.service {
        put("watcher.service", service.into());
    }
    if let Some(path) = &f.path {
        put("watcher.path", path.as_str().into());
    }
    for (name, value) in &f.extra {
        put(&format!("watcher.{name}"), value.clone());
    }
    Value::Object(doc)
}

/// `event.category` and `event.type`, as ECS allows them together.
fn categorize(f: &Facts) -> (&'static str, Vec<&'static str>) {
    match f.name {
        EventName::Listen
        | EventName::Bind
        | EventName::ListenerUp
        | EventName::Restarted
        | EventName::OwnerChanged
        | EventName::ReuseportJoined => ("network", vec!["start"]),
        EventName::Accept => ("network", vec!["connection", "start"]),
        EventName::Close | EventName::ListenerDown => ("network", vec!["end"]),
        EventName::Denied => ("network", vec!["denied"]),
        EventName::Killed => ("process", vec!["end"]),
        EventName::KillFailed => ("process", vec!["info"]),
        EventName::ConfigReloaded => ("configuration", vec!["change"]),
        EventName::ConfigRejected => ("configuration", vec!["info"]),
        _ => ("network", vec!["info"]),
    }
}

/// `event.severity` of an alert, on the scale of Elastic's detection
/// rules (low 21, medium 47, critical 99).
pub fn severity_number(severity: Severity) -> u32 {
    match severity {
        Severity::Info => 21,
        Severity::Warning => 47,
        Severity::Critical => 99,
    }
}

/// Sets a dotted ECS name in a nested document.
fn set(doc: &mut Map<String, Value>, path: &str, value: Value) {
    // `@timestamp` and the like are one name, not a path.
    match path.split_once('.') {
        None => {
            doc.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let child = doc.entry(head.to_owned()).or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            if let Value::Object(child) = child {
                set(child, rest, value);
            }
        }
    }
}
