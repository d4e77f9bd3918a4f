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
    if let Some(transport) = f.transport() {
        put("network.transport", transport.into());
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

    fn ecs(event: &Event<'_>) -> Value {
        let ctx = Context::named(Some("web-1".into()));
        let doc = document(&Facts::of(event, &ctx), &ctx);
        // One line, as written.
        let line = serde_json::to_string(&doc).unwrap();
        assert!(!line.contains('\n'));
        doc
    }

    fn socket(kind: SocketKind) -> Value {
        let event = fixtures::socket_event(kind);
        fixtures::live(What::Socket { event: &event, fd_facts: None }, ecs)
    }

    /// What every line of a live socket event carries.
    fn check_process_and_host(v: &Value) {
        assert_eq!(at(v, "process.pid"), 4242);
        assert_eq!(at(v, "process.thread.id"), 4243);
        assert_eq!(at(v, "process.parent.pid"), 1);
        assert_eq!(at(v, "process.name"), "python3");
        assert_eq!(at(v, "process.executable"), "/usr/bin/python3.11");
        assert_eq!(at(v, "process.args"), &json!(["python3", "-m", "http.server\\n"]), "escaped");
        assert_eq!(at(v, "process.args_count"), 3);
        assert_eq!(at(v, "user.id"), "1000", "ECS user.id is a keyword");
        assert_eq!(at(v, "user.name"), "alice");
        assert_eq!(at(v, "group.id"), "1001");
        assert_eq!(at(v, "container.id"), CONTAINER);
        assert_eq!(at(v, "host.name"), "web-1");
        assert_eq!(at(v, "watcher.netns"), 4026531840u64);
        assert_eq!(at(v, "watcher.cgroup_id"), 7);
    }

    #[test]
    fn listen() {
        let v = socket(SocketKind::Listen);
        assert_eq!(at(&v, "@timestamp"), "2023-11-14T22:13:20.123456Z");
        assert_eq!(at(&v, "ecs.version"), ECS_VERSION);
        assert_eq!(at(&v, "event.kind"), "event");
        assert_eq!(at(&v, "event.category"), &json!(["network"]));
        assert_eq!(at(&v, "event.type"), &json!(["start"]));
        assert_eq!(at(&v, "event.action"), "listen");
        assert_eq!((at(&v, "event.module"), at(&v, "event.dataset")), (&json!("watcher"), &json!("watcher")));
        assert_eq!(at(&v, "event.outcome"), "success");
        assert!(at(&v, "event.severity").is_null(), "only alerts have a severity");
        assert_eq!(at(&v, "destination.ip"), "127.0.0.1");
        assert_eq!(at(&v, "destination.port"), 8080);
        assert_eq!(at(&v, "network.transport"), "tcp");
        assert_eq!(at(&v, "network.type"), "ipv4");
        assert_eq!(at(&v, "network.iana_number"), "6");
        assert!(at(&v, "source").is_null());
        check_process_and_host(&v);
        assert_eq!(at(&v, "watcher.backlog"), 128);
        assert_eq!(at(&v, "watcher.fd"), 3);
        assert!(at(&v, "watcher.sock_id").is_string(), "a keyword: 64 bits overflow a long");
        assert_ne!(at(&v, "watcher.sock_id"), "2", "the kernel's identity is hashed");
        assert_eq!(at(&v, "message"), "listen tcp 127.0.0.1:8080 by python3 (pid 4242)");
    }

    #[test]
    fn close() {
        let v = socket(SocketKind::Close);
        assert_eq!(at(&v, "event.type"), &json!(["end"]));
        assert_eq!(at(&v, "event.action"), "close");
        assert_eq!(at(&v, "event.kind"), "event");
        assert_eq!(at(&v, "destination.port"), 8080);
        check_process_and_host(&v);
    }

    #[test]
    fn bind() {
        let event = fixtures::udp_bind();
        let v = fixtures::live(What::Socket { event: &event, fd_facts: None }, ecs);
        assert_eq!(at(&v, "event.type"), &json!(["start"]));
        assert_eq!(at(&v, "event.action"), "bind");
        assert_eq!(at(&v, "destination.ip"), "::1");
        assert_eq!(at(&v, "destination.port"), 5353);
        assert_eq!(at(&v, "network.transport"), "udp");
        assert_eq!(at(&v, "network.type"), "ipv6");
        // As /etc/services names 5353/udp (mdns), when it does.
        assert_eq!(at(&v, "watcher.service").as_str(), crate::host::services::name("udp", 5353));
        check_process_and_host(&v);
    }

    #[test]
    fn bind_failed_is_a_failure_with_its_errno() {
        let addr = fixtures::bind_failed_addr();
        let v = fixtures::live(What::BindFailed { fd: 3, errno: 98, addr: Some(&addr) }, ecs);
        assert_eq!(at(&v, "event.type"), &json!(["info"]));
        assert_eq!(at(&v, "event.outcome"), "failure");
        assert_eq!(at(&v, "error.code"), "EADDRINUSE");
        assert_eq!(at(&v, "destination.port"), 8080);
        assert_eq!(at(&v, "watcher.errno_code"), 98);
    }

    #[test]
    fn denied() {
        let (event, why) = (fixtures::denied_event(), fixtures::denial());
        let v = fixtures::live(What::Denied { event: &event, why: Some(&why) }, ecs);
        assert_eq!(at(&v, "event.kind"), "event");
        assert_eq!(at(&v, "event.type"), &json!(["denied"]));
        assert_eq!(at(&v, "event.action"), "denied");
        assert_eq!(at(&v, "event.outcome"), "failure");
        assert_eq!(at(&v, "event.reason"), "tcp port 22 belongs to rule sshd");
        assert_eq!(at(&v, "rule.name"), "sshd");
        assert_eq!(at(&v, "error.code"), "EPERM");
        assert_eq!(at(&v, "destination.ip"), "0.0.0.0");
        assert_eq!(at(&v, "destination.port"), 22);
        assert_eq!(at(&v, "network.transport"), "tcp");
        check_process_and_host(&v);
    }

    #[test]
    fn alert() {
        let alert = fixtures::alert();
        let v = ecs(&Event::Alert { time: fixtures::time(), alert: &alert });
        assert_eq!(at(&v, "event.kind"), "alert");
        assert_eq!(at(&v, "event.category"), &json!(["network"]));
        assert_eq!(at(&v, "event.type"), &json!(["info"]));
        assert_eq!(at(&v, "event.action"), "alert");
        assert_eq!(at(&v, "event.severity"), 99);
        assert_eq!(at(&v, "log.level"), "critical");
        assert_eq!(at(&v, "message"), alert.reason.as_str());
        assert_eq!(at(&v, "rule.name"), &Value::Null, "no rule covers the port");
        assert_eq!(at(&v, "destination.ip"), "0.0.0.0");
        assert_eq!(at(&v, "destination.port"), 4444);
        assert_eq!(at(&v, "network.transport"), "tcp");
        assert_eq!(at(&v, "process.pid"), 4242);
        assert_eq!(at(&v, "process.executable"), "/usr/bin/nc.openbsd");
        assert_eq!(at(&v, "process.args"), &json!(["nc", "-l", "4444"]));
        assert_eq!((at(&v, "user.id"), at(&v, "user.name")), (&json!("33"), &json!("www-data")));
        assert_eq!(at(&v, "watcher.subject"), "listener_up");
        assert_eq!(at(&v, "host.name"), "web-1");

        let ruled = crate::output::event::Alert { rule: Some("sshd".into()), ..fixtures::alert() };
        let v = ecs(&Event::Alert { time: fixtures::time(), alert: &ruled });
        assert_eq!(at(&v, "rule.name"), "sshd");
    }

    #[test]
    fn lifecycle_and_unix() {
        let down = fixtures::listener_down();
        let v = ecs(&Event::Lifecycle { time: fixtures::time(), change: &down });
        assert_eq!(at(&v, "event.type"), &json!(["end"]));
        assert_eq!(at(&v, "event.action"), "listener_down");
        assert_eq!(at(&v, "watcher.lived_ms"), 2.5);

        let v = fixtures::live(
            What::Unix { kind: SocketKind::Listen, fd: 4, backlog: Some(5), sock_type: 1, path: b"\0hidden" },
            ecs,
        );
        assert_eq!(at(&v, "destination.address"), "@hidden");
        assert!(at(&v, "destination.ip").is_null() && at(&v, "network.transport").is_null());
        assert_eq!(at(&v, "watcher.proto"), "unix");
        assert_eq!(at(&v, "watcher.sock_type"), "SOCK_STREAM");

        // A raw ICMP socket: its transport by IANA's name, not "raw".
        let socket = crate::enrich::socket_options::PassiveSocket {
            family: crate::model::socket::Family::Ipv4,
            sock_type: 3,
            protocol: 1,
        };
        let v = fixtures::live(What::PassiveSocket { fd: 5, socket }, ecs);
        assert_eq!(at(&v, "event.action"), "raw_socket");
        assert_eq!(at(&v, "network.transport"), "icmp");
        assert_eq!(at(&v, "network.iana_number"), "1");
        assert_eq!(at(&v, "watcher.proto"), "raw");
        assert_eq!(at(&v, "watcher.protocol_name"), "IPPROTO_ICMP");
    }

    /// The fields ECS requires, and the allowed values of the
    /// categorization fields, on every kind of line. Checked against ECS
    /// 8.17.0's generated/ecs/ecs_flat.yml (tag v8.17.0 of
    /// github.com/elastic/ecs): `required: true` only on `@timestamp` and
    /// `ecs.version`; the `allowed_values` of event.kind, event.category
    /// (with each category's `expected_event_types`), event.type and
    /// event.outcome below. Every field these lines write outside
    /// `watcher.*` was checked once, by hand, to be one of that file's with
    /// its type (long or keyword); this test checks the types of a few.
    ///
    /// - `@timestamp`: required, <https://www.elastic.co/guide/en/ecs/current/ecs-base.html>
    /// - `ecs.version`: required, <https://www.elastic.co/guide/en/ecs/current/ecs-ecs.html>
    /// - `event.kind`: <https://www.elastic.co/guide/en/ecs/current/ecs-allowed-values-event-kind.html>
    /// - `event.category`: <https://www.elastic.co/guide/en/ecs/current/ecs-allowed-values-event-category.html>
    /// - `event.type`: <https://www.elastic.co/guide/en/ecs/current/ecs-allowed-values-event-type.html>
    /// - `event.outcome`: <https://www.elastic.co/guide/en/ecs/current/ecs-allowed-values-event-outcome.html>
    #[test]
    fn every_line_has_what_the_schema_requires() {
        const REQUIRED: &[&str] = &["@timestamp", "ecs.version"];
        const KINDS: &[&str] =
            &["alert", "asset", "enrichment", "event", "metric", "state", "pipeline_error", "signal"];
        const CATEGORIES: &[&str] = &[
            "api",
            "authentication",
            "configuration",
            "database",
            "driver",
            "email",
            "file",
            "host",
            "iam",
            "intrusion_detection",
            "library",
            "malware",
            "network",
            "package",
            "process",
            "registry",
            "session",
            "threat",
            "vulnerability",
            "web",
        ];
        const TYPES: &[&str] = &[
            "access",
            "admin",
            "allowed",
            "change",
            "connection",
            "creation",
            "deletion",
            "denied",
            "end",
            "error",
            "group",
            "indicator",
            "info",
            "installation",
            "protocol",
            "start",
            "user",
        ];
        // The types each category watcher uses expects (`expected_event_types`).
        const EXPECTED_TYPES: &[(&str, &[&str])] = &[
            ("network", &["access", "allowed", "connection", "denied", "end", "info", "protocol", "start"]),
            ("process", &["access", "change", "end", "info", "start"]),
            ("configuration", &["access", "change", "creation", "deletion", "info"]),
        ];
        let mut lines = Vec::new();
        for kind in [SocketKind::Listen, SocketKind::Bind, SocketKind::Close] {
            lines.push(socket(kind));
        }
        let (event, why) = (fixtures::denied_event(), fixtures::denial());
        lines.push(fixtures::live(What::Denied { event: &event, why: Some(&why) }, ecs));
        let alert = fixtures::alert();
        lines.push(ecs(&Event::Alert { time: fixtures::time(), alert: &alert }));
        let down = fixtures::listener_down();
        lines.push(ecs(&Event::Lifecycle { time: fixtures::time(), change: &down }));
        lines.push(ecs(&Event::Lost { time: fixtures::time(), count: 3, total: 9 }));
        let path = std::path::Path::new("/etc/watcher/watcher.toml");
        lines.push(ecs(&Event::ConfigReloaded { time: fixtures::time(), path, rules: 4 }));
        lines.push(ecs(&Event::Resynced { time: fixtures::time(), live_listeners: 2 }));
        for v in &lines {
            for field in REQUIRED {
                assert!(at(v, field).is_string(), "{field} in {v}");
            }
            assert!(chrono::DateTime::parse_from_rfc3339(at(v, "@timestamp").as_str().unwrap()).is_ok(), "{v}");
            assert!(KINDS.contains(&at(v, "event.kind").as_str().unwrap()), "{v}");
            let categories = at(v, "event.category").as_array().expect("event.category is an array");
            let types = at(v, "event.type").as_array().expect("event.type is an array");
            for c in categories {
                assert!(CATEGORIES.contains(&c.as_str().unwrap()), "{c} in {v}");
            }
            for t in types {
                assert!(TYPES.contains(&t.as_str().unwrap()), "{t} in {v}");
                for c in categories {
                    let expected = EXPECTED_TYPES.iter().find(|(name, _)| c == name).map(|(_, types)| *types);
                    let expected = expected.unwrap_or_else(|| panic!("category {c} has no expected types here"));
                    assert!(expected.contains(&t.as_str().unwrap()), "{t} with {c} in {v}");
                }
            }
            if let Some(outcome) = at(v, "event.outcome").as_str() {
                assert!(["failure", "success", "unknown"].contains(&outcome), "{v}");
            }
            // Typed as ECS types them.
            for (field, number) in [("destination.port", true), ("process.pid", true), ("user.id", false)] {
                let value = at(v, field);
                assert!(value.is_null() || value.is_number() == number, "{field} in {v}");
            }
            assert!(at(v, "process.args").is_null() || at(v, "process.args").is_array(), "{v}");
        }
    }
}
