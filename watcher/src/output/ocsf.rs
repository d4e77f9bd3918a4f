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
    f.proto?;
    let mut info = Map::new();
    // A listener waits for connections coming in.
    info.insert("direction_id".into(), 1.into());
    info.insert("direction".into(), "Inbound".into());
    // IANA's name (OCSF asks for it), so none for UNIX or packet sockets.
    if let Some(transport) = f.transport() {
        info.insert("protocol_name".into(), transport.into());
    }
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::{
        enrich::report::What,
        output::{
            event::Event,
            facts::fixtures::{self, CONTAINER, at},
        },
        record::decode::SocketKind,
    };

    fn ocsf(event: &Event<'_>) -> Value {
        let ctx = Context::named(Some("web-1".into()));
        super::event(&Facts::of(event, &ctx), &ctx)
    }

    fn socket(kind: SocketKind) -> Value {
        let event = fixtures::socket_event(kind);
        fixtures::live(What::Socket { event: &event, fd_facts: None }, ocsf)
    }

    fn check_class(v: &Value, activity_id: u64, activity_name: &str) {
        assert_eq!(at(v, "class_uid"), 4001);
        assert_eq!(at(v, "class_name"), "Network Activity");
        assert_eq!(at(v, "category_uid"), 4);
        assert_eq!(at(v, "activity_id"), activity_id);
        assert_eq!(at(v, "activity_name"), activity_name);
        assert_eq!(at(v, "type_uid"), 400100 + activity_id);
        assert_eq!(at(v, "time"), 1_700_000_000_123i64, "epoch milliseconds");
        assert_eq!(at(v, "metadata.version"), OCSF_VERSION);
        assert_eq!(at(v, "metadata.product.name"), "watcher");
        assert_eq!(at(v, "metadata.product.vendor_name"), "watcher");
        assert_eq!(at(v, "metadata.product.version"), env!("CARGO_PKG_VERSION"));
        assert_eq!(at(v, "device.hostname"), "web-1");
    }

    fn check_actor(v: &Value) {
        assert_eq!(at(v, "actor.process.pid"), 4242);
        assert_eq!(at(v, "actor.process.tid"), 4243);
        assert_eq!(at(v, "actor.process.name"), "python3");
        assert_eq!(at(v, "actor.process.cmd_line"), "python3 -m http.server\\n", "escaped");
        assert_eq!(at(v, "actor.process.file.path"), "/usr/bin/python3.11");
        assert_eq!(at(v, "actor.process.file.name"), "python3.11");
        assert_eq!(at(v, "actor.process.parent_process.pid"), 1);
        assert_eq!(at(v, "actor.process.user.uid"), "1000");
        assert_eq!(at(v, "actor.process.user.name"), "alice");
        assert_eq!(at(v, "actor.process.container.uid"), CONTAINER);
        assert_eq!(at(v, "actor.user"), &json!({"uid": "1000", "name": "alice"}));
        assert_eq!(at(v, "unmapped.cmdline"), &json!(["python3", "-m", "http.server\\n"]));
        assert_eq!(at(v, "unmapped.netns"), 4026531840u64);
    }

    #[test]
    fn listen() {
        let v = socket(SocketKind::Listen);
        check_class(&v, 7, "Listen");
        assert_eq!(at(&v, "type_name"), "Network Activity: Listen");
        assert_eq!((at(&v, "severity_id"), at(&v, "severity")), (&json!(1), &json!("Informational")));
        assert_eq!((at(&v, "status_id"), at(&v, "status")), (&json!(1), &json!("Success")));
        assert_eq!((at(&v, "dst_endpoint.ip"), at(&v, "dst_endpoint.port")), (&json!("127.0.0.1"), &json!(8080)));
        assert_eq!(at(&v, "dst_endpoint.hostname"), "web-1");
        assert_eq!(at(&v, "dst_endpoint.svc_name").as_str(), crate::host::services::name("tcp", 8080));
        assert!(at(&v, "src_endpoint").is_null());
        assert_eq!(at(&v, "connection_info.protocol_name"), "tcp");
        assert_eq!(at(&v, "connection_info.protocol_num"), 6);
        assert_eq!(at(&v, "connection_info.protocol_ver_id"), 4);
        assert_eq!(at(&v, "connection_info.direction_id"), 1);
        assert_eq!(at(&v, "metadata.event_code"), "listen");
        check_actor(&v);
        assert_eq!(at(&v, "unmapped.backlog"), 128);
        assert_eq!(at(&v, "unmapped.event"), "listen");
    }

    #[test]
    fn close() {
        let v = socket(SocketKind::Close);
        check_class(&v, 2, "Close");
        assert_eq!(at(&v, "type_uid"), 400102);
        assert_eq!(at(&v, "dst_endpoint.port"), 8080);
        check_actor(&v);
    }

    #[test]
    fn bind() {
        let event = fixtures::udp_bind();
        let v = fixtures::live(What::Socket { event: &event, fd_facts: None }, ocsf);
        check_class(&v, 1, "Open");
        assert_eq!(at(&v, "type_uid"), 400101);
        assert_eq!(at(&v, "dst_endpoint.ip"), "::1");
        assert_eq!(at(&v, "dst_endpoint.port"), 5353);
        assert_eq!(at(&v, "connection_info.protocol_name"), "udp");
        assert_eq!(at(&v, "connection_info.protocol_num"), 17);
        assert_eq!(at(&v, "connection_info.protocol_ver_id"), 6);
        check_actor(&v);
    }

    #[test]
    fn bind_failed_is_fail() {
        let addr = fixtures::bind_failed_addr();
        let v = fixtures::live(What::BindFailed { fd: 3, errno: 98, addr: Some(&addr) }, ocsf);
        check_class(&v, 4, "Fail");
        assert_eq!((at(&v, "status_id"), at(&v, "status_code")), (&json!(2), &json!("EADDRINUSE")));
    }

    #[test]
    fn denied() {
        let (event, why) = (fixtures::denied_event(), fixtures::denial());
        let v = fixtures::live(What::Denied { event: &event, why: Some(&why) }, ocsf);
        check_class(&v, 5, "Refuse");
        assert_eq!(at(&v, "type_uid"), 400105);
        assert_eq!((at(&v, "status_id"), at(&v, "status")), (&json!(2), &json!("Failure")));
        assert_eq!(at(&v, "status_code"), "EPERM");
        assert_eq!(at(&v, "status_detail"), "tcp port 22 belongs to rule sshd");
        assert_eq!((at(&v, "action_id"), at(&v, "disposition_id")), (&json!(2), &json!(2)));
        assert_eq!(at(&v, "metadata.profiles"), &json!(["host", "security_control"]));
        assert_eq!(at(&v, "dst_endpoint.ip"), "0.0.0.0");
        assert_eq!(at(&v, "dst_endpoint.port"), 22);
        assert_eq!(at(&v, "unmapped.rule"), "sshd");
        check_actor(&v);
    }

    #[test]
    fn alert_is_a_detection_finding() {
        let alert = fixtures::alert();
        let v = ocsf(&Event::Alert { time: fixtures::time(), alert: &alert });
        assert_eq!(at(&v, "class_uid"), 2004);
        assert_eq!(at(&v, "class_name"), "Detection Finding");
        assert_eq!(at(&v, "category_uid"), 2);
        assert_eq!((at(&v, "activity_id"), at(&v, "activity_name")), (&json!(1), &json!("Create")));
        assert_eq!(at(&v, "type_uid"), 200401);
        assert_eq!((at(&v, "severity_id"), at(&v, "severity")), (&json!(5), &json!("Critical")));
        assert_eq!(at(&v, "status_id"), 1);
        assert_eq!(at(&v, "message"), alert.reason.as_str());
        assert_eq!(at(&v, "finding_info.title"), alert.reason.as_str());
        assert!(at(&v, "finding_info.uid").as_str().unwrap().starts_with("watcher-"));
        assert_eq!(at(&v, "finding_info.types"), &json!(["listener_up"]));
        assert_eq!(at(&v, "finding_info.analytic.name"), "allowlist");
        let evidence = &at(&v, "evidences")[0];
        assert_eq!(at(evidence, "dst_endpoint.ip"), "0.0.0.0");
        assert_eq!(at(evidence, "dst_endpoint.port"), 4444);
        assert_eq!(at(evidence, "process.pid"), 4242);
        assert_eq!(at(evidence, "actor.process.file.path"), "/usr/bin/nc.openbsd");
        assert_eq!(at(evidence, "actor.user.name"), "www-data");
        assert_eq!(at(evidence, "connection_info.protocol_name"), "tcp");
        assert_eq!(at(&v, "metadata.product.name"), "watcher");
        assert_eq!(at(&v, "unmapped.subject"), "listener_up");
        // The same alert, the same finding.
        assert_eq!(
            at(&v, "finding_info.uid"),
            at(&ocsf(&Event::Alert { time: fixtures::time(), alert: &alert }), "finding_info.uid")
        );
        for (severity, id) in [(Severity::Info, 1), (Severity::Warning, 3), (Severity::Critical, 5)] {
            assert_eq!(super::severity(severity).0, id);
        }
    }

    #[test]
    fn other_events_are_other_with_their_native_name() {
        let v = ocsf(&Event::Lost { time: fixtures::time(), count: 3, total: 9 });
        check_class(&v, 99, "lost");
        assert_eq!(at(&v, "type_name"), "Network Activity: Other");
        assert_eq!((at(&v, "unmapped.count"), at(&v, "unmapped.total")), (&json!(3), &json!(9)));
        let down = fixtures::listener_down();
        let v = ocsf(&Event::Lifecycle { time: fixtures::time(), change: &down });
        check_class(&v, 2, "Close");
        assert_eq!(at(&v, "unmapped.lived_ms"), 2.5);
    }

    /// The attributes OCSF 1.3.0 requires, written down from the schema:
    ///
    /// - Network Activity [4001], <https://schema.ocsf.io/1.3.0/classes/network_activity>:
    ///   activity_id, category_uid, class_uid, metadata, severity_id, time,
    ///   type_uid; and at least one of dst_endpoint, src_endpoint.
    /// - Detection Finding [2004], <https://schema.ocsf.io/1.3.0/classes/detection_finding>:
    ///   activity_id, category_uid, class_uid, finding_info, metadata,
    ///   severity_id, time, type_uid.
    /// - Metadata, <https://schema.ocsf.io/1.3.0/objects/metadata>: product, version.
    /// - Product, <https://schema.ocsf.io/1.3.0/objects/product>: vendor_name.
    /// - Finding Information, <https://schema.ocsf.io/1.3.0/objects/finding_info>: uid, title.
    /// - Network Connection Information, <https://schema.ocsf.io/1.3.0/objects/network_connection_info>: direction_id.
    /// - Device, <https://schema.ocsf.io/1.3.0/objects/device>: type_id.
    /// - File, <https://schema.ocsf.io/1.3.0/objects/file>: name, type_id.
    #[test]
    fn every_event_has_what_the_schema_requires() {
        const BASE: &[&str] =
            &["activity_id", "category_uid", "class_uid", "metadata", "severity_id", "time", "type_uid"];
        const METADATA: &[&str] = &["metadata.product", "metadata.version", "metadata.product.vendor_name"];
        const FINDING: &[&str] = &["finding_info", "finding_info.uid", "finding_info.title"];
        let mut events = Vec::new();
        for kind in [SocketKind::Listen, SocketKind::Bind, SocketKind::Close] {
            events.push(socket(kind));
        }
        let (event, why) = (fixtures::denied_event(), fixtures::denial());
        events.push(fixtures::live(What::Denied { event: &event, why: Some(&why) }, ocsf));
        let down = fixtures::listener_down();
        events.push(ocsf(&Event::Lifecycle { time: fixtures::time(), change: &down }));
        events.push(ocsf(&Event::Lost { time: fixtures::time(), count: 3, total: 9 }));
        events.push(ocsf(&Event::Resynced { time: fixtures::time(), live_listeners: 2 }));
        let alert = fixtures::alert();
        events.push(ocsf(&Event::Alert { time: fixtures::time(), alert: &alert }));
        for v in &events {
            for field in BASE.iter().chain(METADATA) {
                assert!(!at(v, field).is_null(), "{field} in {v}");
            }
            for field in ["activity_id", "category_uid", "class_uid", "severity_id", "time", "type_uid"] {
                assert!(at(v, field).is_i64(), "{field} is an integer in {v}");
            }
            let (class, activity) = (at(v, "class_uid").as_u64().unwrap(), at(v, "activity_id").as_u64().unwrap());
            assert_eq!(at(v, "type_uid").as_u64().unwrap(), class * 100 + activity, "{v}");
            assert!(!at(v, "device.type_id").is_null(), "{v}");
            match class {
                4001 => {
                    assert_eq!(at(v, "category_uid"), 4);
                    assert!([0, 1, 2, 3, 4, 5, 6, 7, 99].contains(&activity), "{v}");
                    assert!(!at(v, "dst_endpoint").is_null() || !at(v, "src_endpoint").is_null(), "{v}");
                    if !at(v, "connection_info").is_null() {
                        assert!(!at(v, "connection_info.direction_id").is_null(), "{v}");
                    }
                    if !at(v, "actor.process.file").is_null() {
                        assert!(
                            !at(v, "actor.process.file.name").is_null()
                                && !at(v, "actor.process.file.type_id").is_null()
                        );
                    }
                }
                2004 => {
                    assert_eq!(at(v, "category_uid"), 2);
                    assert!([0, 1, 2, 3, 99].contains(&activity), "{v}");
                    for field in FINDING {
                        assert!(!at(v, field).is_null(), "{field} in {v}");
                    }
                }
                _ => panic!("class {class}: {v}"),
            }
            assert!([0, 1, 2, 3, 4, 5, 6, 99].contains(&at(v, "severity_id").as_u64().unwrap()), "{v}");
        }
    }
}
