//! `--format ocsf` and `[output] format = "ocsf"`: each event as an OCSF
//! 1.3 event, one JSON object a line. Socket events, lifecycle changes and
//! the daemon's own events are Network Activity (class 4001); an alert is
//! a Detection Finding (class 2004), which is where a SIEM built on OCSF
//! (Security Lake, Splunk's OCSF add-on) looks for what to act on. The
//! mapping is in the README; native fields OCSF has no place for are in
//! `unmapped`, with their native names. What the schema requires of each
//! class and object is in [`schema`], read from the schema's own files.
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
    let mut profiles = profiles(f);
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
    e.insert("metadata".into(), metadata(f, &profiles(f)));
    e.insert("unmapped".into(), unmapped(f));
    Value::Object(e)
}

/// The profiles an event uses: `host` (its `actor` and `device`), and
/// `container` when the process is in one (`process.container` is that
/// profile's attribute).
fn profiles(f: &Facts) -> Vec<&'static str> {
    let mut profiles = vec!["host"];
    if f.container_id.is_some() && f.process.as_ref().is_some_and(|p| p.pid.is_some()) {
        profiles.push("container");
    }
    profiles
}

/// This host's name, for `device` and the listening endpoint, which OCSF
/// wants named by at least one of a few attributes (ip, name, hostname…):
/// "localhost" when the host's name could not be read.
fn host_name(ctx: &Context) -> &str {
    ctx.host_name.as_deref().unwrap_or("localhost")
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
    endpoint.insert("hostname".into(), host_name(ctx).into());
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

/// `actor`: the process (with its user) and the user. OCSF's process
/// needs a pid (or a uid, which watcher has none of): without one, the
/// actor is the user alone, or there is none.
fn actor(f: &Facts) -> Option<Value> {
    let p: &Process = f.process.as_ref()?;
    let user = user(p);
    let Some(pid) = p.pid else {
        return user.map(|user| json!({ "user": user }));
    };
    let mut process = Map::new();
    process.insert("pid".into(), pid.into());
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
    json!({ "type_id": 0, "type": "Unknown", "hostname": host_name(ctx) })
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

/// What OCSF 1.3.0 asks of the events watcher writes, as the schema's
/// own files say it: read at tag `1.3.0` of github.com/ocsf/ocsf-schema
/// (events/base_event.json, events/network/network.json,
/// events/network/network_activity.json and its
/// includes/network/network_activities.json, events/findings/finding.json,
/// events/findings/detection_finding.json, profiles/host.json,
/// profiles/security_control.json, profiles/container.json, and the
/// objects/*.json named below with what each `extends`), each attribute's
/// `"requirement": "required"` and each object's `"constraints"`. Also the
/// attributes watcher writes in each, every one of them checked there to
/// be that object's (or a profile's it declares), so that a name written
/// from memory fails [`violations`]. The tests run every event through it.
pub mod schema {
    use serde_json::Value;

    /// One class or object of the schema.
    pub struct Shape {
        /// The schema file that defines it (with what it extends).
        pub file: &'static str,
        /// Attributes whose `requirement` is `required`.
        pub required: &'static [&'static str],
        /// Its `constraints.at_least_one`, if any.
        pub at_least_one: &'static [&'static str],
        /// The attributes watcher writes in it.
        pub attributes: &'static [Attribute],
    }

    /// An attribute watcher writes: its name, the object it holds (for an
    /// object or an array of them), the profile it belongs to (to be
    /// named in `metadata.profiles`), and the ids its enum allows.
    pub struct Attribute {
        pub name: &'static str,
        pub object: Option<&'static Shape>,
        pub profile: Option<&'static str>,
        pub ids: &'static [u64],
    }

    const fn plain(name: &'static str) -> Attribute {
        Attribute { name, object: None, profile: None, ids: &[] }
    }
    const fn object(name: &'static str, shape: &'static Shape) -> Attribute {
        Attribute { name, object: Some(shape), profile: None, ids: &[] }
    }
    const fn ids(name: &'static str, ids: &'static [u64]) -> Attribute {
        Attribute { name, object: None, profile: None, ids }
    }
    const fn of_profile(profile: &'static str, attribute: Attribute) -> Attribute {
        Attribute { profile: Some(profile), ..attribute }
    }

    /// severity_id (base_event.json): 0-6 and 99 Other.
    const SEVERITY_IDS: &[u64] = &[0, 1, 2, 3, 4, 5, 6, 99];
    /// status_id (base_event.json).
    const STATUS_IDS: &[u64] = &[0, 1, 2, 99];

    pub static NETWORK_ACTIVITY: Shape = Shape {
        file: "events/network/network_activity.json (extends network.json, base_event.json)",
        required: &[
            "activity_id",
            "category_uid",
            "class_uid",
            "dst_endpoint",
            "metadata",
            "severity_id",
            "time",
            "type_uid",
        ],
        at_least_one: &[],
        attributes: &[
            // network_activities.json: 1 Open … 7 Listen; 0 and 99 from base_event.
            ids("activity_id", &[0, 1, 2, 3, 4, 5, 6, 7, 99]),
            plain("activity_name"),
            ids("category_uid", &[4]),
            plain("category_name"),
            ids("class_uid", &[4001]),
            plain("class_name"),
            plain("type_uid"),
            plain("type_name"),
            plain("time"),
            ids("severity_id", SEVERITY_IDS),
            plain("severity"),
            plain("message"),
            ids("status_id", STATUS_IDS),
            plain("status"),
            plain("status_code"),
            plain("status_detail"),
            of_profile("security_control", ids("action_id", &[0, 1, 2, 99])),
            of_profile("security_control", plain("action")),
            of_profile(
                "security_control",
                ids(
                    "disposition_id",
                    &[
                        0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
                        26, 27, 99,
                    ],
                ),
            ),
            of_profile("security_control", plain("disposition")),
            object("dst_endpoint", &NETWORK_ENDPOINT),
            object("src_endpoint", &NETWORK_ENDPOINT),
            object("connection_info", &NETWORK_CONNECTION_INFO),
            of_profile("host", object("actor", &ACTOR)),
            of_profile("host", object("device", &DEVICE)),
            object("metadata", &METADATA),
            plain("unmapped"),
        ],
    };

    pub static DETECTION_FINDING: Shape = Shape {
        file: "events/findings/detection_finding.json (extends finding.json, base_event.json)",
        required: &[
            "activity_id",
            "category_uid",
            "class_uid",
            "finding_info",
            "metadata",
            "severity_id",
            "time",
            "type_uid",
        ],
        at_least_one: &[],
        attributes: &[
            // finding.json: 1 Create, 2 Update, 3 Close; 0 and 99 from base_event.
            ids("activity_id", &[0, 1, 2, 3, 99]),
            plain("activity_name"),
            ids("category_uid", &[2]),
            plain("category_name"),
            ids("class_uid", &[2004]),
            plain("class_name"),
            plain("type_uid"),
            plain("type_name"),
            plain("time"),
            ids("severity_id", SEVERITY_IDS),
            plain("severity"),
            // finding.json's own: 1 New … 4 Resolved.
            ids("status_id", &[0, 1, 2, 3, 4, 99]),
            plain("status"),
            plain("message"),
            object("finding_info", &FINDING_INFO),
            object("evidences", &EVIDENCES),
            object("device", &DEVICE),
            object("metadata", &METADATA),
            plain("unmapped"),
        ],
    };

    static NETWORK_ENDPOINT: Shape = Shape {
        file: "objects/network_endpoint.json (extends endpoint.json)",
        required: &[],
        at_least_one: &["ip", "uid", "name", "hostname", "svc_name", "instance_uid", "interface_uid", "interface_name"],
        attributes: &[plain("ip"), plain("port"), plain("svc_name"), plain("name"), plain("hostname")],
    };

    static NETWORK_CONNECTION_INFO: Shape = Shape {
        file: "objects/network_connection_info.json",
        required: &["direction_id"],
        at_least_one: &[],
        attributes: &[
            ids("direction_id", &[0, 1, 2, 3, 99]),
            plain("direction"),
            plain("protocol_name"),
            plain("protocol_num"),
            ids("protocol_ver_id", &[0, 4, 6, 99]),
            plain("protocol_ver"),
        ],
    };

    static ACTOR: Shape = Shape {
        file: "objects/actor.json",
        required: &[],
        at_least_one: &["process", "user", "invoked_by", "session", "app_name", "app_uid"],
        attributes: &[object("process", &PROCESS), object("user", &USER)],
    };

    static PROCESS: Shape = Shape {
        file: "objects/process.json (extends _entity.json)",
        required: &[],
        at_least_one: &["pid", "uid"],
        attributes: &[
            plain("pid"),
            plain("tid"),
            plain("name"),
            plain("cmd_line"),
            object("file", &FILE),
            object("parent_process", &PROCESS),
            object("user", &USER),
            of_profile("container", object("container", &CONTAINER)),
        ],
    };

    static USER: Shape = Shape {
        file: "objects/user.json (extends _entity.json)",
        required: &[],
        at_least_one: &["account", "name", "uid"],
        attributes: &[plain("uid"), plain("name")],
    };

    static FILE: Shape = Shape {
        file: "objects/file.json (extends _entity.json)",
        required: &["name", "type_id"],
        at_least_one: &["name", "uid"],
        attributes: &[plain("name"), plain("path"), ids("type_id", &[0, 1, 2, 3, 4, 5, 6, 7, 99]), plain("type")],
    };

    static CONTAINER: Shape = Shape {
        file: "objects/container.json",
        required: &[],
        at_least_one: &["uid", "name"],
        attributes: &[plain("uid")],
    };

    static DEVICE: Shape = Shape {
        file: "objects/device.json (extends endpoint.json)",
        required: &["type_id"],
        at_least_one: &["ip", "uid", "name", "hostname", "instance_uid", "interface_uid", "interface_name"],
        // endpoint.json's type_id: 1 Server … 15; watcher writes 0 Unknown
        // (a host running it may be a server, a desktop, a Domain-0…).
        attributes: &[
            ids("type_id", &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 99]),
            plain("type"),
            plain("hostname"),
        ],
    };

    static METADATA: Shape = Shape {
        file: "objects/metadata.json",
        required: &["product", "version"],
        at_least_one: &[],
        attributes: &[object("product", &PRODUCT), plain("version"), plain("event_code"), plain("profiles")],
    };

    static PRODUCT: Shape = Shape {
        file: "objects/product.json (extends _entity.json)",
        required: &["vendor_name"],
        at_least_one: &["name", "uid"],
        attributes: &[plain("name"), plain("vendor_name"), plain("version")],
    };

    static FINDING_INFO: Shape = Shape {
        file: "objects/finding_info.json",
        required: &["title", "uid"],
        at_least_one: &[],
        attributes: &[plain("uid"), plain("title"), plain("desc"), plain("types"), object("analytic", &ANALYTIC)],
    };

    static ANALYTIC: Shape = Shape {
        file: "objects/analytic.json (extends _entity.json)",
        required: &["type_id"],
        at_least_one: &["name", "uid"],
        attributes: &[plain("name"), ids("type_id", &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 99]), plain("type")],
    };

    static EVIDENCES: Shape = Shape {
        file: "objects/evidences.json",
        required: &[],
        at_least_one: &[
            "actor",
            "api",
            "connection_info",
            "data",
            "database",
            "databucket",
            "device",
            "dst_endpoint",
            "email",
            "file",
            "process",
            "query",
            "src_endpoint",
            "url",
            "user",
            "job",
        ],
        attributes: &[
            object("dst_endpoint", &NETWORK_ENDPOINT),
            object("connection_info", &NETWORK_CONNECTION_INFO),
            object("process", &PROCESS),
            object("actor", &ACTOR),
        ],
    };

    /// Every way `event` falls short of OCSF 1.3.0 as read above (empty
    /// when it does not): a required attribute or a constraint missing,
    /// an attribute the schema does not define where it is, an id outside
    /// its enum, a profile's attribute without the profile declared, and
    /// a profile's required attribute missing (security_control: action_id).
    pub fn violations(event: &Value) -> Vec<String> {
        let mut found = Vec::new();
        let class = match event.get("class_uid").and_then(Value::as_u64) {
            Some(4001) => &NETWORK_ACTIVITY,
            Some(2004) => &DETECTION_FINDING,
            other => return vec![format!("class_uid {other:?} is neither 4001 nor 2004")],
        };
        let profiles: Vec<&str> = event
            .pointer("/metadata/profiles")
            .and_then(Value::as_array)
            .map(|p| p.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if profiles.contains(&"security_control") && event.get("action_id").is_none() {
            found.push("action_id: required by the security_control profile".to_owned());
        }
        check(event, class, "", &profiles, &mut found);
        found
    }

    fn check(value: &Value, shape: &Shape, path: &str, profiles: &[&str], found: &mut Vec<String>) {
        let Some(fields) = value.as_object() else {
            found.push(format!("{path}: not an object ({})", shape.file));
            return;
        };
        for name in shape.required {
            if !fields.contains_key(*name) {
                found.push(format!("{path}{name}: required ({})", shape.file));
            }
        }
        if !shape.at_least_one.is_empty() && !shape.at_least_one.iter().any(|name| fields.contains_key(*name)) {
            found.push(format!("{path}: none of {:?} ({})", shape.at_least_one, shape.file));
        }
        for (name, v) in fields {
            let Some(attribute) = shape.attributes.iter().find(|a| a.name == name) else {
                found.push(format!("{path}{name}: not an attribute watcher writes in {}", shape.file));
                continue;
            };
            if let Some(profile) = attribute.profile
                && !profiles.contains(&profile)
            {
                found.push(format!("{path}{name}: of the {profile} profile, not in metadata.profiles"));
            }
            if !attribute.ids.is_empty() && !v.as_u64().is_some_and(|id| attribute.ids.contains(&id)) {
                found.push(format!("{path}{name}: {v} is not one of {:?}", attribute.ids));
            }
            if let Some(object) = attribute.object {
                let inner = format!("{path}{name}.");
                match v.as_array() {
                    Some(items) => items.iter().for_each(|item| check(item, object, &inner, profiles, found)),
                    None => check(v, object, &inner, profiles, found),
                }
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
        assert_eq!(at(&v, "metadata.profiles"), &json!(["host", "container", "security_control"]));
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

    /// Every kind of event, run through [`schema::violations`] (OCSF 1.3.0
    /// as its files say, see there), and the class-wide rules it leaves to
    /// the tests: integers where the schema has integer_t, type_uid.
    #[test]
    fn every_event_meets_the_published_schema() {
        let mut events = Vec::new();
        for kind in [SocketKind::Listen, SocketKind::Bind, SocketKind::Close] {
            events.push(socket(kind));
        }
        let addr = fixtures::bind_failed_addr();
        events.push(fixtures::live(What::BindFailed { fd: 3, errno: 98, addr: Some(&addr) }, ocsf));
        let (event, why) = (fixtures::denied_event(), fixtures::denial());
        events.push(fixtures::live(What::Denied { event: &event, why: Some(&why) }, ocsf));
        let down = fixtures::listener_down();
        events.push(ocsf(&Event::Lifecycle { time: fixtures::time(), change: &down }));
        events.push(ocsf(&Event::Lost { time: fixtures::time(), count: 3, total: 9 }));
        events.push(ocsf(&Event::Resynced { time: fixtures::time(), live_listeners: 2 }));
        let alert = fixtures::alert();
        events.push(ocsf(&Event::Alert { time: fixtures::time(), alert: &alert }));
        // A host whose name could not be read: device and the endpoint
        // still name it (their at_least_one constraints).
        let nameless = Context::named(None);
        let lost = Event::Lost { time: fixtures::time(), count: 1, total: 1 };
        let v = super::event(&Facts::of(&lost, &nameless), &nameless);
        assert_eq!(
            (at(&v, "device.hostname"), at(&v, "dst_endpoint.hostname")),
            (&json!("localhost"), &json!("localhost"))
        );
        events.push(v);
        for v in &events {
            assert_eq!(schema::violations(v), Vec::<String>::new(), "{v}");
            for field in ["activity_id", "category_uid", "class_uid", "severity_id", "time", "type_uid"] {
                assert!(at(v, field).is_i64(), "{field} is an integer in {v}");
            }
            let (class, activity) = (at(v, "class_uid").as_u64().unwrap(), at(v, "activity_id").as_u64().unwrap());
            assert_eq!(at(v, "type_uid").as_u64().unwrap(), class * 100 + activity, "{v}");
        }
        // The container profile is declared where process.container is written.
        assert_eq!(at(&events[0], "metadata.profiles"), &json!(["host", "container"]));
    }

    /// The check finds what it must: each rule broken once.
    #[test]
    fn the_schema_check_finds_what_is_missing_or_invented() {
        let good = socket(SocketKind::Listen);
        assert!(schema::violations(&good).is_empty());
        let broken = |edit: &dyn Fn(&mut Value)| {
            let mut v = good.clone();
            edit(&mut v);
            schema::violations(&v)
        };
        let one = |found: Vec<String>, what: &str| {
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(found[0].contains(what), "{found:?} lacks {what}");
        };
        one(broken(&|v| drop(v.as_object_mut().unwrap().remove("dst_endpoint"))), "dst_endpoint: required");
        one(broken(&|v| v["dst_endpoint"] = json!({"port": 8080})), "dst_endpoint.: none of");
        one(broken(&|v| drop(v["metadata"]["product"].as_object_mut().unwrap().remove("vendor_name"))), "vendor_name");
        one(broken(&|v| v["actor"]["process"] = json!({"name": "x"})), "actor.process.: none of [\"pid\", \"uid\"]");
        one(
            broken(&|v| drop(v["actor"]["process"]["file"].as_object_mut().unwrap().remove("type_id"))),
            "file.type_id",
        );
        one(broken(&|v| v["connection_info"]["direction_id"] = json!(7)), "direction_id: 7");
        one(broken(&|v| v["dst_endpoint"]["address"] = json!("x")), "dst_endpoint.address: not an attribute");
        one(broken(&|v| v["metadata"]["profiles"] = json!(["host"])), "container profile");
        one(broken(&|v| v["metadata"]["profiles"] = json!(["host", "container", "security_control"])), "action_id");
        one(broken(&|v| v["class_uid"] = json!(4002)), "class_uid");
    }
}
