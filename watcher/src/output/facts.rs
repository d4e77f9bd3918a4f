//! What the SIEM formats say of an event, read once from the typed
//! [`Event`]: the listening side, the process, the alert or refusal, and
//! the native fields neither schema has a place for (`extra`, under their
//! native names). [`crate::output::ecs`] and [`crate::output::ocsf`] each
//! lay these facts out in their schema; neither reads watcher's JSON.
//!
//! Everything a process chooses (comm, exe, argv, paths, device names) is
//! escaped here, as in the native JSON.
use std::{
    borrow::Borrow,
    hash::{BuildHasher as _, RandomState},
    net::IpAddr,
};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use crate::{
    config::Severity,
    enrich::report::{Report, What, passive_proto},
    host::{hostname::hostname, services},
    model::{
        escape::escape_bytes,
        event_name::EventName,
        holder::Holder,
        socket::{Family, Local, Proto},
        text::{attach_name, errno_name, sha256_hex, sock_type_name, unix_path},
    },
    output::{
        event::Event,
        format::{denied_socket, protocol_name},
    },
    record::decode::{Filter, SockAddr},
    snapshot::{holders::HolderInfo, sock_diag},
    state::lifecycle::{Change, ListenerKey},
};

/// What stays the same from one line to the next.
pub struct Context {
    /// This host's name (escaped), for `host.name` / `device.hostname`.
    pub host_name: Option<String>,
    /// Keys the hash that turns kernel socket identities into `sock_id`,
    /// as the native printer does: never a kernel address in a log.
    sock_id_key: RandomState,
}

impl Default for Context {
    fn default() -> Self {
        Self::named(hostname().map(|n| escape_bytes(n.as_bytes())))
    }
}

impl Context {
    /// A context for a host of this name.
    pub fn named(host_name: Option<String>) -> Self {
        Self { host_name, sock_id_key: RandomState::new() }
    }
}

/// The process behind an event, as far as it is known.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Process {
    pub pid: Option<u32>,
    pub tid: Option<u32>,
    pub ppid: Option<u32>,
    /// The kernel's comm.
    pub name: Option<String>,
    pub executable: Option<String>,
    pub args: Option<Vec<String>>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub user: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

/// An alert's own facts (its rule and reason are in [`Facts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlertFacts {
    pub severity: Severity,
    /// The event that raised it (`listener_up`, `raw_socket`, `existing`…).
    pub subject: EventName,
}

#[derive(Debug)]
pub struct Facts {
    pub time: DateTime<Utc>,
    pub name: EventName,
    pub proto: Option<Proto>,
    pub family: Option<Family>,
    /// The listening (local) side: address and port, or a UNIX path.
    pub addr: Option<IpAddr>,
    pub port: Option<u16>,
    pub path: Option<String>,
    /// The remote side of an accepted connection.
    pub peer: Option<(IpAddr, u16)>,
    /// The IP protocol number (6, 17, a raw socket's protocol).
    pub iana_number: Option<u32>,
    /// The port's name in /etc/services.
    pub service: Option<&'static str>,
    pub process: Option<Process>,
    pub container_id: Option<String>,
    pub outcome: Option<Outcome>,
    /// `EADDRINUSE`, `EPERM`…
    pub errno: Option<String>,
    /// The rule of an alert or a refused bind (the one whose port another
    /// program took); None when no rule covers it.
    pub rule: Option<String>,
    /// Why: an alert's, a refusal's, a kill's or a rejected reload's reason.
    pub reason: Option<String>,
    pub alert: Option<AlertFacts>,
    /// Native fields the schemas have no place for, by their native names.
    pub extra: Map<String, Value>,
}

impl Facts {
    /// The transport as IANA names it (`tcp`, `udp`, a raw socket's
    /// `icmp`…); None for UNIX and packet sockets, and raw IP.
    pub fn transport(&self) -> Option<&'static str> {
        match (self.proto?, self.iana_number) {
            (Proto::Tcp, _) | (Proto::Raw, Some(6)) => Some("tcp"),
            (Proto::Udp, _) | (Proto::Raw, Some(17)) => Some("udp"),
            (Proto::Raw, Some(1)) => Some("icmp"),
            (Proto::Raw, Some(2)) => Some("igmp"),
            (Proto::Raw, Some(58)) => Some("ipv6-icmp"),
            _ => None,
        }
    }

    fn new(time: DateTime<Utc>, name: EventName) -> Self {
        Self {
            time,
            name,
            proto: None,
            family: None,
            addr: None,
            port: None,
            path: None,
            peer: None,
            iana_number: None,
            service: None,
            process: None,
            container_id: None,
            outcome: None,
            errno: None,
            rule: None,
            reason: None,
            alert: None,
            extra: Map::new(),
        }
    }

    pub fn of(event: &Event<'_>, ctx: &Context) -> Self {
        match event {
            Event::Live(report) => live(report, ctx),
            Event::Existing { time, socket, holder, netns } => {
                let mut f = Self::new(*time, EventName::Existing);
                f.proto = Some(socket.proto);
                f.family = Some(socket.family);
                f.local(&socket.local);
                f.extra_set("inode", socket.inode);
                f.extra_set("sock_type", sock_type_name(u32::from(socket.sock_type)));
                f.extra_opt("netns", *netns);
                if let Some(name) = sock_diag::interface_name(socket.ifindex) {
                    f.extra_set("interface", escape_bytes(&name));
                }
                if let Some(h) = holder {
                    f.process = Some(holder_info_process(h));
                    f.extra_set("fd", h.fd);
                }
                f
            }
            Event::Lost { time, count, total } => {
                let mut f = Self::new(*time, EventName::Lost);
                f.extra_set("count", *count);
                f.extra_set("total", *total);
                f
            }
            Event::Lifecycle { time, change } => lifecycle(*time, change),
            Event::Alert { time, alert } => {
                let mut f = Self::new(*time, EventName::Alert);
                if let Some(key) = &alert.key {
                    f.key(key);
                }
                f.process = Some(holder_process(&alert.holder));
                f.rule = alert.rule.clone();
                f.reason = Some(alert.reason.clone());
                f.alert = Some(AlertFacts { severity: alert.severity, subject: alert.subject });
                f.extra_set("subject", alert.subject.as_str());
                f.extra_set("severity", alert.severity.name());
                if !alert.holders.is_empty() {
                    f.extra_set("holders", holders_value(&alert.holders));
                }
                f
            }
            Event::Kill { time, outcome } => {
                let mut f = Self::new(*time, event.name());
                if let Some(key) = &outcome.key {
                    f.key(key);
                }
                f.process = Some(holder_process(&outcome.holder));
                f.reason = Some(outcome.reason.clone());
                f.outcome = Some(if outcome.succeeded() { Outcome::Success } else { Outcome::Failure });
                f.extra_set("killed", outcome.killed.clone());
                if !outcome.survivors.is_empty() {
                    f.extra_set("survivors", outcome.survivors.iter().map(|(pid, _)| *pid).collect::<Vec<_>>());
                    let error: Vec<String> =
                        outcome.survivors.iter().map(|(pid, why)| format!("pid {pid}: {why}")).collect();
                    f.extra_set("error", error.join("; "));
                }
                f
            }
            Event::ConfigReloaded { time, path, rules } => {
                let mut f = Self::new(*time, EventName::ConfigReloaded);
                f.outcome = Some(Outcome::Success);
                f.extra_set("path", escape_bytes(path.as_os_str().as_encoded_bytes()));
                f.extra_set("rules", *rules);
                f
            }
            Event::ConfigRejected { time, path, reason } => {
                let mut f = Self::new(*time, EventName::ConfigRejected);
                f.outcome = Some(Outcome::Failure);
                f.reason = Some((*reason).to_owned());
                f.extra_set("path", escape_bytes(path.as_os_str().as_encoded_bytes()));
                f
            }
            Event::Resynced { time, live_listeners } => {
                let mut f = Self::new(*time, EventName::Resynced);
                f.extra_set("live_listeners", *live_listeners);
                f
            }
            Event::OutputDropped { time, output, dropped, since, error } => {
                let mut f = Self::new(*time, EventName::OutputDropped);
                f.outcome = Some(Outcome::Failure);
                f.reason = Some((*error).to_owned());
                f.extra_set("output", *output);
                f.extra_set("dropped", *dropped);
                f.extra_set("since", crate::model::text::rfc3339(*since));
                f.extra_set("error", *error);
                f
            }
        }
    }

    fn extra_set(&mut self, name: &str, value: impl Into<Value>) {
        self.extra.insert(name.to_owned(), value.into());
    }

    fn extra_opt(&mut self, name: &str, value: Option<impl Into<Value>>) {
        if let Some(value) = value {
            self.extra_set(name, value);
        }
    }

    /// The listening side, from where a socket waits.
    fn local(&mut self, local: &Local) {
        match local {
            Local::Inet { addr, port } => self.inet(*addr, *port),
            Local::Raw { addr, protocol } => {
                self.addr = Some(*addr);
                self.iana_number = Some(u32::from(*protocol));
                self.extra_set("protocol", *protocol);
            }
            Local::Unix { path } => self.path = Some(unix_path(path)),
            Local::Packet { protocol } => {
                // In host order here; the native lines give it as socket() took it.
                let as_given = u32::from(protocol.to_be());
                self.extra_set("protocol", as_given);
                let passive = crate::enrich::socket_options::PassiveSocket {
                    family: Family::Packet,
                    sock_type: 3,
                    protocol: as_given,
                };
                self.extra_opt("protocol_name", protocol_name(&passive));
            }
        }
    }

    fn inet(&mut self, addr: IpAddr, port: u16) {
        self.addr = Some(addr);
        self.port = Some(port);
        if let Some(proto) = self.proto {
            self.service = services::name(&proto.name(), port);
            self.iana_number = self.iana_number.or(iana_number(proto));
        }
    }

    fn key(&mut self, key: &ListenerKey) {
        self.proto = Some(key.proto);
        match &key.local {
            Local::Inet { addr, .. } | Local::Raw { addr, .. } => {
                self.family = Some(if addr.is_ipv4() { Family::Ipv4 } else { Family::Ipv6 })
            }
            Local::Unix { .. } => self.family = Some(Family::Unix),
            Local::Packet { .. } => self.family = Some(Family::Packet),
        }
        self.local(&key.local);
        self.extra_opt("netns", (key.netns != 0).then_some(key.netns));
    }
}

fn iana_number(proto: Proto) -> Option<u32> {
    match proto {
        Proto::Tcp => Some(6),
        Proto::Udp => Some(17),
        Proto::Other(n) => Some(n),
        Proto::Raw | Proto::Packet | Proto::Unix => None,
    }
}

fn live(report: &Report<'_>, ctx: &Context) -> Facts {
    let t = report.task;
    let p = report.process;
    let mut f = Facts::new(report.time, report.what.event_name());
    f.process = Some(Process {
        pid: Some(t.pid),
        tid: Some(t.tid),
        ppid: p.ppid,
        name: Some(escape_bytes(&t.comm)),
        executable: p.exe.as_deref().map(escape_bytes),
        args: p.cmdline.as_ref().map(|argv| argv.iter().map(|a| escape_bytes(a)).collect()),
        uid: Some(t.uid),
        gid: Some(t.gid),
        user: report.user.map(str::to_owned),
    });
    f.container_id = report.cgroup.and_then(|c| c.container_id.clone());
    f.extra_set("ktime_ns", t.ktime_ns);
    f.extra_set("seen_ktime_ns", report.seen_ktime_ns);
    f.extra_set("cgroup_id", t.cgroup_id);
    f.extra_opt("cgroup", report.cgroup.map(|c| c.path.clone()));
    f.extra_opt("netns", (t.netns != 0).then_some(t.netns));
    f.proto = report.what.proto();
    f.family = report.what.family();
    match &report.what {
        What::Socket { event, fd_facts } => {
            f.outcome = Some(Outcome::Success);
            f.inet(event.addr, event.port);
            // A string: 64 bits overflow a SIEM's signed long.
            f.extra_set("sock_id", ctx.sock_id_key.hash_one(event.sock_id).to_string());
            f.extra_opt("fd", event.fd);
            f.extra_opt("backlog", event.backlog);
            if let Some(facts) = fd_facts {
                if !facts.options.is_empty() {
                    f.extra_set("options", facts.options.clone());
                }
                f.extra_opt("bind_device", facts.bind_device.as_deref().map(escape_bytes));
            }
        }
        What::PassiveSocket { fd, socket } => {
            f.outcome = Some(Outcome::Success);
            if passive_proto(socket) == Proto::Raw {
                f.iana_number = Some(socket.protocol);
            }
            f.extra_set("fd", *fd);
            f.extra_set("sock_type", sock_type_name(socket.sock_type));
            f.extra_set("protocol", socket.protocol);
            f.extra_opt("protocol_name", protocol_name(socket));
        }
        What::FilterAttached { fd, optname, filter, .. } => {
            f.outcome = Some(Outcome::Success);
            f.extra_set("fd", *fd);
            f.extra_set("attach", attach_name(*optname));
            match filter {
                Filter::Classic { instructions, bytes } => {
                    f.extra_set("filter", "classic");
                    f.extra_set("instructions", *instructions);
                    f.extra_set("sha256", sha256_hex(bytes));
                    f.extra_set("filter_complete", *instructions as usize * 8 == bytes.len());
                }
                Filter::Extended { prog_fd } => {
                    f.extra_set("filter", "extended");
                    f.extra_set("prog_fd", *prog_fd);
                }
            }
        }
        What::BindFailed { fd, errno, addr } => {
            f.outcome = Some(Outcome::Failure);
            f.errno = Some(errno_name(*errno));
            match addr {
                Some(SockAddr::Inet { addr, port }) => {
                    f.addr = Some(*addr);
                    f.port = Some(*port);
                }
                Some(SockAddr::Unix(path)) => f.path = Some(unix_path(path)),
                _ => {}
            }
            f.extra_set("fd", *fd);
            f.extra_set("errno_code", *errno);
        }
        What::ListenFailed { fd, errno, backlog } => {
            f.outcome = Some(Outcome::Failure);
            f.errno = Some(errno_name(*errno));
            f.extra_set("fd", *fd);
            f.extra_set("backlog", *backlog);
            f.extra_set("errno_code", *errno);
        }
        What::Unix { fd, backlog, sock_type, path, .. } => {
            f.outcome = Some(Outcome::Success);
            f.path = Some(unix_path(path));
            f.extra_set("fd", *fd);
            f.extra_opt("backlog", *backlog);
            f.extra_opt("sock_type", (*sock_type != 0).then(|| sock_type_name(*sock_type)));
        }
        What::Accept(a) => {
            f.outcome = Some(Outcome::Success);
            if let Some((addr, port)) = a.local {
                f.inet(addr, port);
            }
            f.peer = a.peer;
            f.extra_set("listen_fd", a.listen_fd);
            f.extra_set("fd", a.fd);
            f.extra_set("peer_requested", a.peer_requested);
        }
        What::Denied { event, why } => {
            f.outcome = Some(Outcome::Failure);
            match &event.target {
                Some(SockAddr::Inet { addr, port }) => f.inet(*addr, *port),
                Some(SockAddr::Unix(path)) => f.path = Some(unix_path(path)),
                Some(SockAddr::Other(_)) | None => {}
            }
            f.errno = Some("EPERM".to_owned());
            f.rule = why.and_then(|w| w.rule.clone());
            f.reason = why.map(|w| w.reason.clone());
            f.extra_set("call", event.call.name());
            f.extra_set("sock_type", sock_type_name(event.sock_type));
            if let Some(socket) = denied_socket(event) {
                if socket.family != Family::Packet {
                    f.iana_number = Some(socket.protocol);
                }
                f.extra_set("protocol", socket.protocol);
                f.extra_opt("protocol_name", protocol_name(&socket));
            }
        }
    }
    f
}

fn lifecycle(time: DateTime<Utc>, change: &Change) -> Facts {
    let (key, socket) = match change {
        Change::Up { key, socket }
        | Change::Down { key, socket, .. }
        | Change::Restarted { key, socket, .. }
        | Change::OwnerChanged { key, socket, .. }
        | Change::ReuseportJoined { key, socket, .. }
        | Change::HoldersChanged { key, socket, .. } => (key, socket),
    };
    let mut f = Facts::new(time, crate::output::event::change_name(change));
    f.key(key);
    f.process = Some(holder_process(&socket.creator));
    let others = socket.other_holders();
    match change {
        Change::Up { .. } => {}
        Change::Down { lived_ns, .. } => f.extra_set("lived_ms", *lived_ns as f64 / 1e6),
        Change::Restarted { previous, gap_ns, same_exe, same_user, same_cmdline, .. } => {
            f.extra_set("gap_ms", *gap_ns as f64 / 1e6);
            f.extra_set("same_exe", *same_exe);
            f.extra_set("same_user", *same_user);
            f.extra_set("same_cmdline", *same_cmdline);
            f.extra_set("previous", holder_value(previous));
        }
        Change::OwnerChanged { previous, .. } => f.extra_set("previous", holder_value(previous)),
        Change::ReuseportJoined { existing, .. } => f.extra_set("existing", holder_value(existing)),
        Change::HoldersChanged { previous, .. } => {
            f.extra_set("holders", holders_value(&socket.holders));
            f.extra_set("previous_holders", holders_value(previous));
        }
    }
    if !matches!(change, Change::Down { .. } | Change::HoldersChanged { .. } | Change::ReuseportJoined { .. })
        && !others.is_empty()
    {
        f.extra_set("holders", holders_value(&others));
    }
    f
}

fn holder_process(h: &Holder) -> Process {
    Process {
        pid: (h.pid != 0).then_some(h.pid),
        name: (!h.comm.is_empty()).then(|| escape_bytes(&h.comm)),
        executable: h.exe.as_deref().map(escape_bytes),
        args: h.cmdline.as_ref().map(|argv| argv.iter().map(|a| escape_bytes(a)).collect()),
        uid: h.uid,
        user: h.user.clone(),
        ..Process::default()
    }
}

fn holder_info_process(h: &HolderInfo) -> Process {
    Process {
        pid: Some(h.pid),
        ppid: h.process.ppid,
        name: h.comm.as_deref().map(escape_bytes),
        executable: h.process.exe.as_deref().map(escape_bytes),
        args: h.process.cmdline.as_ref().map(|argv| argv.iter().map(|a| escape_bytes(a)).collect()),
        uid: h.uid,
        user: h.user.clone(),
        ..Process::default()
    }
}

/// A holder as the native lines name it: pid, comm, exe, cmdline, uid, user.
fn holder_value(h: &Holder) -> Value {
    let p = holder_process(h);
    json!({ "pid": p.pid, "comm": p.name, "exe": p.executable, "cmdline": p.args, "uid": p.uid, "user": p.user })
}

fn holders_value<H: Borrow<Holder>>(holders: &[H]) -> Value {
    Value::Array(holders.iter().map(|h| holder_value(h.borrow())).collect())
}

/// One line of text for people: who did what where.
pub fn summary(f: &Facts) -> String {
    let who = f.process.as_ref().map(|p| {
        let name = p.name.as_deref().unwrap_or("?");
        match p.pid {
            Some(pid) => format!("{name} (pid {pid})"),
            None => name.to_owned(),
        }
    });
    let proto = f.proto.map(|p| p.name());
    let place = match (f.addr, f.port, &f.path) {
        (Some(addr), Some(port), _) => Some(crate::model::text::socket_address(addr, port)),
        (Some(addr), None, _) => Some(addr.to_string()),
        (_, _, Some(path)) => Some(path.clone()),
        _ => None,
    };
    let mut text = f.name.as_str().to_owned();
    if let Some(proto) = proto {
        text.push(' ');
        text.push_str(&proto);
    }
    if let Some(place) = place {
        text.push(' ');
        text.push_str(&place);
    }
    if let Some(who) = who {
        text.push_str(" by ");
        text.push_str(&who);
    }
    if let Some(errno) = &f.errno {
        text.push_str(": ");
        text.push_str(errno);
    }
    if let Some(reason) = &f.reason {
        text.push_str(": ");
        text.push_str(reason);
    }
    text
}

/// Events of every kind the SIEM formats' tests check, built as the
/// pipeline and the daemon build them.
#[cfg(test)]
pub mod fixtures {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use chrono::{DateTime, Utc};
    use serde_json::Value;

    use crate::{
        config::Severity,
        enrich::report::{Denial, Report, What},
        host::{cgroups::CgroupName, process::ProcessInfo},
        model::{
            event_name::EventName,
            holder::Holder,
            socket::{Family, Local, Proto},
        },
        output::event::{Alert, Event},
        record::decode::{DeniedCall, DeniedEvent, SockAddr, SocketEvent, SocketKind, Task},
        state::lifecycle::{Change, ListenerKey, Socket, SocketId},
    };

    pub const CONTAINER: &str = "4f1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";

    /// 2023-11-14T22:13:20.123456Z.
    pub fn time() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap()
    }

    pub fn task() -> Task {
        Task {
            ktime_ns: 5,
            cgroup_id: 7,
            pid: 4242,
            tid: 4243,
            uid: 1000,
            gid: 1001,
            netns: 4026531840,
            comm: crate::model::holder::Comm::from(b"python3"),
        }
    }

    fn process() -> ProcessInfo {
        ProcessInfo {
            ppid: Some(1),
            exe: Some(b"/usr/bin/python3.11".to_vec().into()),
            cmdline: Some(vec![b"python3".to_vec(), b"-m".to_vec(), b"http.server\n".to_vec()].into()),
        }
    }

    pub fn socket_event(kind: SocketKind) -> SocketEvent {
        SocketEvent {
            kind,
            task: task(),
            sock_id: 2,
            cookie: None,
            proto: Proto::Tcp,
            family: Family::Ipv4,
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8080,
            fd: Some(3),
            backlog: (kind == SocketKind::Listen).then_some(128),
            stopped: false,
        }
    }

    pub fn udp_bind() -> SocketEvent {
        SocketEvent {
            proto: Proto::Udp,
            family: Family::Ipv6,
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            port: 5353,
            ..socket_event(SocketKind::Bind)
        }
    }

    pub fn denied_event() -> DeniedEvent {
        DeniedEvent {
            task: task(),
            call: DeniedCall::Bind,
            proto: Proto::Tcp,
            family: Family::Ipv4,
            target: Some(SockAddr::Inet { addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED), port: 22 }),
            sock_type: 1,
            protocol: 6,
            class: 0,
            exe_id: None,
        }
    }

    pub fn denial() -> Denial {
        Denial { rule: Some("sshd".into()), reason: "tcp port 22 belongs to rule sshd".into() }
    }

    pub fn bind_failed_addr() -> SockAddr {
        SockAddr::Inet { addr: IpAddr::V4(Ipv4Addr::LOCALHOST), port: 8080 }
    }

    /// `render` of a live event in a container.
    pub fn live(what: What<'_>, render: impl FnOnce(&Event<'_>) -> Value) -> Value {
        let (task, process) = (task(), process());
        let cgroup = CgroupName {
            path: format!("/system.slice/docker-{CONTAINER}.scope"),
            container_id: Some(CONTAINER.to_owned()),
        };
        let report = Report {
            task: &task,
            process: &process,
            user: Some("alice"),
            time: time(),
            seen_ktime_ns: 6,
            cgroup: Some(&cgroup),
            what,
        };
        render(&Event::Live(&report))
    }

    pub fn holder() -> Holder {
        Holder {
            pid: 4242,
            uid: Some(33),
            user: Some("www-data".into()),
            comm: crate::model::holder::Comm::from(b"nc"),
            exe: Some(b"/usr/bin/nc.openbsd".to_vec().into()),
            cmdline: Some(vec![b"nc".to_vec(), b"-l".to_vec(), b"4444".to_vec()].into()),
        }
    }

    pub fn key() -> ListenerKey {
        ListenerKey {
            netns: 4026531840,
            proto: Proto::Tcp,
            local: Local::Inet { addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED), port: 4444 },
        }
    }

    pub fn alert() -> Alert {
        Alert {
            severity: Severity::Critical,
            rule: None,
            reason: "no rule allows tcp 0.0.0.0:4444 (nc, /usr/bin/nc.openbsd, www-data)".into(),
            subject: EventName::ListenerUp,
            key: Some(key()),
            holder: holder(),
            holders: Vec::new(),
        }
    }

    pub fn listener_down() -> Change {
        Change::Down {
            key: key(),
            socket: Socket::new(Some(SocketId::Inode(9)), holder(), vec![]),
            lived_ns: 2_500_000,
        }
    }

    /// A JSON value at a dotted path (`event.kind`); Null when absent.
    pub fn at<'a>(value: &'a Value, path: &str) -> &'a Value {
        static NULL: Value = Value::Null;
        path.split('.').try_fold(value, |v, name| v.get(name)).unwrap_or(&NULL)
    }
}
