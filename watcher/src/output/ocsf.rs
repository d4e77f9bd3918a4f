//! `--format ocsf` and `[output] format = "ocsf"`: each event as an OCSF
//! 1.3 event, one JSON object a line. Socket events, lifecycle changes and
//! the daemon's own events are Network Activity (class 4001); an alert is
//! a Detection Finding (class 2004), which is where a SIEM built on OCSF
//! (Security Lake, Splunk's OCSF add-on) looks for what to act on. The
//! mapping is in the README; native fields OCSF has no place for are in
//! `unmapped`, with their native names.
use std::hash::{DefaultHasher, Hash as _, Hasher as _};

use serde_json::{Map, Value, json};

use crate::{
    config::Severity,
    model::{event_name::EventName, socket::Family},
    output::facts::{Context, Facts, Outcome, Process, summary},
};

/// The OCSF schema release the classes, attributes and enums are taken from.
pub const OCSF_VERSION: &str = "1.3.0";

pub const NETWORK_ACTIVITY: u32 = 4001;
pub const NETWORK_CATEGORY: u32 = 4;
pub const DETECTION_FINDING: u32 = 2004;
pub const FINDINGS_CATEGORY: u32 = 2;

/// Network Activity's `activity_id` for a native event, and its caption
/// (<https://schema.ocsf.io/1.3.0/classes/network_activity>).
pub fn activity(name: EventName) -> (u32, &'static str) {
    match name {
        EventName::Bind | EventName::Accept => (1, "Open"),
        EventName::Close | EventName::ListenerDown => (2, "Close"),
        EventName::BindFailed | EventName::ListenFailed => (4, "Fail"),
        EventName::Denied => (5, "Refuse"),
        EventName::Listen
        | EventName::ListenerUp
        | EventName::Restarted
        | EventName::OwnerChanged
        | EventName::ReuseportJoined => (7, "Listen"),
        _ => (99, "Other"),
    }
}

/// `severity_id` and its caption.
pub fn severity(severity: Severity) -> (u32, &'static str) {
    match severity {
        Severity::Info => (1, "Informational"),
        Severity::Warning => (3, "Medium"),
        Severity::Critical => (5, "Critical"),
    }
}

/// One event as an OCSF event.
pub fn event(f: &Facts, ctx: &Context) -> Value {
    match f.alert {
        Some(_) => detection_finding(f, ctx),
        None => network_activity(f, ctx),
    }
}

fn network_activity(f: &Facts, ctx: &Context) -> Value {
    let (activity_id, caption) = activity(f.name);
    // Other: the activity is named by the source, as OCSF asks.
    let activity_name = if activity_id == 99 { f.name.as_str() } else { caption };
    let mut e = Map::new();
    e.insert("class_uid".into(), NETWORK_ACTIVITY.into());
    e.insert("class_name".into(), "Network Activity".into());
    e.insert("category_uid".into(), NETWORK_CATEGORY.into());
    e.insert("category_name".into(), "Network Activity".into());
    e.insert("activity_id".into(), activity_id.into());
    e.insert("activity_name".into(), activity_name.into());
    e.insert("type_uid".into(), (u64::from(NETWORK_ACTIVITY) * 100 + u64::from(activity_id)).into());
    e.insert("type_name".into(), format!("Network Activity: {caption}").into());
    e.insert("time".into(), f.time.timestamp_millis().into());
    e.insert("severity_id".into(), 1.into());
    e.insert("severity".into(), "Informational".into());
    e.insert("message".into(), summary(f).into());
    if let Some(outcome) = f.outcome {
        let (id, name) = match outcome {
            Outcome::Success => (1, "Success"),
            Outcome::Failure => (2, "Failure"),
        };
        e.insert("status_id".into(), id.into());
        e.insert("status".into(), name.into());
    }
    if let Some(errno) = &f.errno {
        e.insert("status_code".into(), errno.as_str().into());
    }
    if let Some(reason) = &f.reason {
        e.insert("status_detail".into(), reason.as_str().into());
    }
    let mut profiles = vec!["host"];
    if f.name == EventName::Denied {
        // The security_control profile: the kernel refused the bind.
        e.insert("action_id".into(), 2.into());
        e.insert("action".into(), "Denied".into());
        e.insert("disposition_id".into(), 2.into());
        e.insert("disposition".into(), "Blocked".into());
        profiles.push("security_control");
    }
    e.insert("dst_endpoint".into(), dst_endpoint(f, ctx));
    if let Some((addr, port)) = f.peer {
        e.insert("src_endpoint".into(), json!({ "ip": addr.to_string(), "port": port }));
    }
    if let Some(info) = connection_info(f) {
        e.insert("connection_info".into(), info);
    }
    if let Some(actor) = actor(f) {
        e.insert("actor".into(), actor);
    }
    e.insert("device".into(), device(ctx));
    e.insert("metadata".into(), metadata(f, &profiles));
    e.insert("unmapped".into(), unmapped(f));
    Value::Object(e)
}

fn detection_finding(f: &Facts, ctx: &Context) -> Value {
    let alert = f.alert.expect("an alert");
    let (severity_id, severity_name) = severity(alert.severity);
    let reason = f.reason.clone().unwrap_or_default();
    let mut e = Map::new();
    e.insert("class_uid".into(), DETECTION_FINDING.into());
    e.insert("class_name".into(), "Detection Finding".into());
    e.insert("category_uid".into(), FINDINGS_CATEGORY.into());
    e.insert("category_name".into(), "Findings".into());
    e.insert("activity_id".into(), 1.into());
    e.insert("activity_name".into(), "Create".into());
    e.insert("type_uid".into(), (u64::from(DETECTION_FINDING) * 100 + 1).into());
    e.insert("type_name".into(), "Detection Finding: Create".into());
    e.insert("time".into(), f.time.timestamp_millis().into());
    e.insert("severity_id".into(), severity_id.into());
    e.insert("severity".into(), severity_name.into());
    e.insert("status_id".into(), 1.into());
    e.insert("status".into(), "New".into());
    e.insert("message".into(), reason.clone().into());
    let analytic = json!({
        "name": f.rule.as_deref().unwrap_or("allowlist"),
        "type_id": 1,
        "type": "Rule",
    });
    e.insert(
        "finding_info".into(),
        json!({
            "uid": finding_uid(f),
            "title": reason,
            "desc": summary(f),
            "types": [alert.subject.as_str()],
            "analytic": analytic,
        }),
    );
    // What the finding is about: the socket and the process behind it.
    let mut evidence = Map::new();
    evidence.insert("dst_endpoint".into(), dst_endpoint(f, ctx));
    if let Some(info) = connection_info(f) {
        evidence.insert("connection_info".into(), info);
    }
    if let Some(actor) = actor(f) {
        if let Some(process) = actor.get("process") {
            evidence.insert("process".into(), process.clone());
        }
        evidence.insert("actor".into(), actor);
    }
    e.insert("evidences".into(), json!([evidence]));
    e.insert("device".into(), device(ctx));
    e.insert("metadata".into(), metadata(f, &["host"]));
    e.insert("unmapped".into(), unmapped(f));
    Value::Object(e)
}

/// The listening side: this host, and the address, port or path it waits on.
fn dst_endpoint(f: &Facts, ctx: &Context) -> Value {
    let mut endpoint = Map::new();
    if let Some(addr) = f.addr {
        endpoint.insert("ip".into(), addr.to_string().into());
    }
    if let Some(port) = f.port {
        endpoint.insert("port".into(), port.into());
    }
    if let Some(service) = f.service {
        endpoint.insert("svc_name".into(), service.into());
    }
    if let Some(path) = &f.path {
        endpoint.insert("name".into(), path.as_str().into());
    }
    if let Some(host) = &ctx.host_name {
        endpoint.insert("hostname".into(), host.as_str().into());
    }
    Value::Object(endpoint)
}

fn connection_info(f: &Facts) -> Option<Value> {
    let proto = f.proto?;
    let mut info = Map::new();
    // A listener waits for connections coming in.
    info.insert("direction_id".into(), 1.into());
    info.insert("direction".into(), "Inbound".into());
    info.insert("protocol_name".into(), proto.name().into());
    if let Some(n) = f.iana_number {
        info.insert("protocol_num".into(), n.into());
    }
    match f.family {
        Some(Family::Ipv4) => {
            info.insert("protocol_ver_id".into(), 4.into());
            info.insert("protocol_ver".into(), "Internet Protocol version 4 (IPv4)".into());
        }
        Some(Family::Ipv6) => {
            info.insert("protocol_ver_id".into(), 6.into());
            info.insert("protocol_ver".into(), "Internet Protocol version 6 (IPv6)".into());
        }
        _ => {}
    }
    Some(Value::Object(info))
}

/// `actor`: the process (with its user) and the user.
fn actor(f: &Facts) -> Option<Value> {
    let p: &Process = f.process.as_ref()?;
    let user = user(p);
    let mut process = Map::new();
    if let Some(pid) = p.pid {
        process.insert("pid".into(), pid.into());
    }
    if let Some(tid) = p.tid {
        process.insert("tid".into(), tid.into());
    }
    if let Some(name) = &p.name {
        process.insert("name".into(), name.as_str().into());
    }
    if let Some(args) = &p.args {
        process.insert("cmd_line".into(), args.join(" ").into());
    }
    if let Some(exe) = &p.executable {
        let name = exe.rsplit('/').next().unwrap_or(exe);
        process.insert("file".into(), json!({ "path": exe, "name": name, "type_id": 1, "type": "Regular File" }));
    }
    if let Some(ppid) = p.ppid {
        process.insert("parent_process".into(), json!({ "pid": ppid }));
    }
    if let Some(user) = &user {
        process.insert("user".into(), user.clone());
    }
    if let Some(id) = &f.container_id {
        process.insert("container".into(), json!({ "uid": id }));
    }
    let mut actor = Map::new();
    actor.insert("process".into(), Value::Object(process));
    if let Some(user) = user {
        actor.insert("user".into(), user);
    }
    Some(Value::Object(actor))
}

fn user(p: &Process) -> Option<Value> {
    if p.uid.is_none() && p.user.is_none() {
        return None;
    }
    let mut user = Map::new();
    if let Some(uid) = p.uid {
        user.insert("uid".into(), uid.to_string().into());
    }
    if let Some(name) = &p.user {
        user.insert("name".into(), name.as_str().into());
    }
    Some(Value::Object(user))
}

fn device(ctx: &Context) -> Value {
    let mut device = json!({ "type_id": 0, "type": "Unknown" });
    if let Some(host) = &ctx.host_name {
        device["hostname"] = host.as_str().into();
    }
    device
}

fn metadata(f: &Facts, profiles: &[&str]) -> Value {
    json!({
        "version": OCSF_VERSION,
        "product": {
            "name": "watcher",
            "vendor_name": "watcher",
            "version": env!("CARGO_PKG_VERSION"),
        },
        "event_code": f.name.as_str(),
        "profiles": profiles,
    })
}

/// Native fields OCSF has no attribute for, by their native names.
fn unmapped(f: &Facts) -> Value {
    let mut unmapped = f.extra.clone();
    unmapped.insert("event".into(), f.name.as_str().into());
    if let Some(proto) = f.proto {
        unmapped.insert("proto".into(), proto.name().into());
    }
    if let Some(family) = f.family {
        unmapped.insert("family".into(), family.name().into());
    }
    if let Some(p) = &f.process {
        if let Some(args) = &p.args {
            // cmd_line joins them with spaces; the array says where each ends.
            unmapped.insert("cmdline".into(), json!(args));
        }
        if let Some(gid) = p.gid {
            unmapped.insert("gid".into(), gid.into());
        }
    }
    if let Some(rule) = &f.rule {
        unmapped.insert("rule".into(), rule.as_str().into());
    }
    Value::Object(unmapped)
}

/// A finding's `uid`: the same alert (time, process, place) gives the same one.
fn finding_uid(f: &Facts) -> String {
    let mut hasher = DefaultHasher::new();
    f.time.timestamp_nanos_opt().hash(&mut hasher);
    f.process.as_ref().and_then(|p| p.pid).hash(&mut hasher);
    (f.addr, f.port, &f.path, f.proto.map(|p| p.name())).hash(&mut hasher);
    f.reason.hash(&mut hasher);
    format!("watcher-{:016x}", hasher.finish())
}
