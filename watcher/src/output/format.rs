//! Printing reports: an aligned table for people, JSON lines for programs.
//! Everything a process chooses (comm, exe, argv, paths, device names) goes
//! through [`escape_bytes`] first, so no process can forge or break a line.
use std::{
    hash::{BuildHasher as _, RandomState},
    io::{self, Write},
    net::IpAddr,
};

use chrono::{DateTime, Local, Utc};
use serde::Serialize;

use crate::{
    enrich::{
        report::{Report, What, passive_proto},
        socket_options::PassiveSocket,
    },
    host::{cgroups::CgroupName, services},
    model::{
        escape::escape_bytes,
        event_name::EventName,
        holder::{Argv, Comm, Exe},
        socket::{Family, Local as Place},
        text::{attach_name, errno_name, rfc3339, sha256_hex, sock_type_name, socket_address, unix_path},
    },
    output::{
        event::{Event, change_name},
        json_line::{Fragment, ObjectWriter, SecondsCache, same},
    },
    record::decode::{DeniedCall, DeniedEvent, Filter, SockAddr},
    state::lifecycle::Change,
};

#[derive(Serialize)]
struct PassiveDetail {
    proto: String,
    family: String,
    fd: i32,
    sock_type: &'static str,
    protocol: u32,
    protocol_name: Option<&'static str>,
}

#[derive(Serialize)]
struct FilterDetail {
    fd: i32,
    attach: &'static str,
    filter: &'static str,
    /// Classic: the program's instruction count.
    instructions: Option<u32>,
    /// Classic: SHA-256 of the program's bytes (of the first 64 instructions
    /// when it has more: then `filter_complete` is false).
    sha256: Option<String>,
    filter_complete: Option<bool>,
    /// Extended: the program's fd in the attaching process.
    prog_fd: Option<u32>,
    proto: Option<String>,
    family: Option<String>,
}

#[derive(Serialize)]
struct FailureDetail {
    fd: i32,
    errno: String,
    errno_code: u32,
    family: Option<String>,
    addr: Option<String>,
    port: Option<u16>,
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backlog: Option<u32>,
}

#[derive(Serialize)]
struct UnixDetail {
    proto: &'static str,
    family: &'static str,
    path: String,
    sock_type: Option<&'static str>,
    fd: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    backlog: Option<u32>,
}

#[derive(Serialize)]
struct AcceptDetail {
    proto: &'static str,
    family: Option<String>,
    listen_fd: i32,
    fd: i32,
    addr: Option<String>,
    port: Option<u16>,
    peer_addr: Option<String>,
    peer_port: Option<u16>,
    peer_requested: bool,
}

#[derive(Serialize)]
struct DeniedDetail<'a> {
    /// What was refused: `bind`, `listen` or `socket`.
    call: &'static str,
    proto: String,
    family: String,
    /// bind, a TCP listen: the address and port.
    #[serde(skip_serializing_if = "Option::is_none")]
    addr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    port: Option<u16>,
    /// A UNIX listen: the name (`@name` for an abstract one).
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    sock_type: &'static str,
    /// socket(): its protocol argument, and its name, as `packet_socket`
    /// and `raw_socket` say them.
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    protocol_name: Option<&'static str>,
    /// What the caller's call returned.
    errno: &'static str,
    /// The rule that gives the port (path, kind of socket) to someone
    /// else; null when no rule covers it.
    rule: Option<&'a str>,
    reason: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonLost {
    time: String,
    event: EventName,
    count: u64,
    total: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

pub struct Printer<W: Write> {
    format: Format,
    out: W,
    /// The JSON line being written, kept from one line to the next.
    line: Vec<u8>,
    seconds: SecondsCache,
    /// The fields from `pid` to `netns` of the last line.
    task: Fragment<TaskFields>,
    /// Keys the hash that turns kernel socket identities into `sock_id`:
    /// a TCP socket's identity is its kernel address, which must not reach
    /// a log (it would undo KASLR). Equal within one run, random across runs.
    sock_id_key: RandomState,
}

// TIME EVENT USER COMMAND PID PROTO LOCAL-ADDRESS, in the spirit of sockstat.
const WIDTHS: [usize; 6] = [15, 15, 10, 16, 8, 6];

const HEADERS: [&str; 7] = ["TIME", "EVENT", "USER", "COMMAND", "PID", "PROTO", "LOCAL-ADDRESS"];

impl<W: Write> Printer<W> {
    pub fn new(format: Format, out: W) -> Self {
        Self {
            format,
            out,
            line: Vec::with_capacity(1024),
            seconds: SecondsCache::default(),
            task: Fragment::default(),
            sock_id_key: RandomState::new(),
        }
    }

    pub fn header(&mut self) -> io::Result<()> {
        if self.format == Format::Table {
            let cells = HEADERS.map(str::to_owned);
            self.row(&cells)?;
        }
        Ok(())
    }

    pub fn report(&mut self, report: &Report<'_>) -> io::Result<()> {
        match self.format {
            Format::Json => self.json(report),
            Format::Table => {
                let t = report.task;
                let user = report.user.map_or_else(|| t.uid.to_string(), str::to_owned);
                let cells = [
                    report.time.with_timezone(&Local).format("%H:%M:%S%.6f").to_string(),
                    report.what.event_name().as_str().to_owned(),
                    escape_bytes(user.as_bytes()),
                    escape_bytes(&t.comm),
                    t.pid.to_string(),
                    table_proto(&report.what),
                    table_detail(&report.what),
                ];
                self.row(&cells)
            }
        }
    }

    fn json(&mut self, report: &Report<'_>) -> io::Result<()> {
        let mut line = std::mem::take(&mut self.line);
        line.clear();
        let written = self.json_into(report, &mut line).and_then(|()| {
            line.push(b'\n');
            self.out.write_all(&line)
        });
        self.line = line;
        written
    }

    /// The line of a live event: the common fields and a socket event's
    /// own written by hand (most lines are those), any other event's
    /// fields by serde, after them.
    fn json_into(&mut self, report: &Report<'_>, line: &mut Vec<u8>) -> io::Result<()> {
        let mut fields = ObjectWriter::start(line);
        common_fields(&mut fields, report, &mut self.seconds, &mut self.task);
        match &report.what {
            What::Socket { event, fd_facts } => {
                let proto = event.proto.known_name();
                fields.name("proto", &proto);
                fields.name("family", &event.family.known_name());
                fields.addr("addr", event.addr);
                fields.u64("port", u64::from(event.port));
                if let Some(service) = services::name(&proto, event.port) {
                    fields.str("service", service);
                }
                fields.u64("sock_id", self.sock_id_key.hash_one(event.sock_id));
                fields.opt_i64("fd", event.fd.map(i64::from));
                if let Some(backlog) = event.backlog {
                    fields.u64("backlog", u64::from(backlog));
                }
                fields.str_list("options", fd_facts.map_or(&[], |f| f.options.as_slice()));
                fields.escaped("bind_device", fd_facts.and_then(|f| f.bind_device.as_deref()));
                fields.end();
                Ok(())
            }
            What::PassiveSocket { fd, socket } => fields.then(&PassiveDetail {
                proto: passive_proto(socket).name(),
                family: socket.family.name(),
                fd: *fd,
                sock_type: sock_type_name(socket.sock_type),
                protocol: socket.protocol,
                protocol_name: protocol_name(socket),
            }),
            What::FilterAttached { fd, optname, filter, socket } => {
                let (instructions, sha256, complete, prog_fd) = match filter {
                    Filter::Classic { instructions, bytes } => (
                        Some(*instructions),
                        Some(sha256_hex(bytes)),
                        Some(*instructions as usize * 8 == bytes.len()),
                        None,
                    ),
                    Filter::Extended { prog_fd } => (None, None, None, Some(*prog_fd)),
                };
                fields.then(&FilterDetail {
                    fd: *fd,
                    attach: attach_name(*optname),
                    filter: if prog_fd.is_some() { "extended" } else { "classic" },
                    instructions,
                    sha256,
                    filter_complete: complete,
                    prog_fd,
                    proto: socket.as_ref().map(|s| passive_proto(s).name()),
                    family: socket.map(|s| s.family.name()),
                })
            }
            What::BindFailed { fd, errno, addr } => {
                let (addr_text, port, path) = match addr {
                    Some(SockAddr::Inet { addr, port }) => (Some(addr.to_string()), Some(*port), None),
                    Some(SockAddr::Unix(path)) => (None, None, Some(unix_path(path))),
                    _ => (None, None, None),
                };
                fields.then(&FailureDetail {
                    fd: *fd,
                    errno: errno_name(*errno),
                    errno_code: *errno,
                    family: report.what.family().map(Family::name),
                    addr: addr_text,
                    port,
                    path,
                    backlog: None,
                })
            }
            What::Unix { fd, backlog, sock_type, path, .. } => fields.then(&UnixDetail {
                proto: "unix",
                family: "unix",
                path: unix_path(path),
                sock_type: (*sock_type != 0).then(|| sock_type_name(*sock_type)),
                fd: *fd,
                backlog: *backlog,
            }),
            What::Accept(a) => fields.then(&AcceptDetail {
                proto: "tcp",
                family: report.what.family().map(Family::name),
                listen_fd: a.listen_fd,
                fd: a.fd,
                addr: a.local.map(|(addr, _)| addr.to_string()),
                port: a.local.map(|(_, port)| port),
                peer_addr: a.peer.map(|(addr, _)| addr.to_string()),
                peer_port: a.peer.map(|(_, port)| port),
                peer_requested: a.peer_requested,
            }),
            What::Denied { event, why } => {
                let (addr, port, path) = match &event.target {
                    Some(SockAddr::Inet { addr, port }) => (Some(addr.to_string()), Some(*port), None),
                    Some(SockAddr::Unix(path)) => (None, None, Some(unix_path(path))),
                    Some(SockAddr::Other(_)) | None => (None, None, None),
                };
                let socket = denied_socket(event);
                fields.then(&DeniedDetail {
                    call: event.call.name(),
                    proto: event.proto.name(),
                    family: event.family.name(),
                    addr,
                    port,
                    path,
                    sock_type: sock_type_name(event.sock_type),
                    protocol: socket.as_ref().map(|s| s.protocol),
                    protocol_name: socket.as_ref().and_then(protocol_name),
                    errno: "EPERM",
                    rule: why.and_then(|w| w.rule.as_deref()),
                    reason: why.map(|w| w.reason.as_str()),
                })
            }
            What::ListenFailed { fd, errno, backlog } => fields.then(&FailureDetail {
                fd: *fd,
                errno: errno_name(*errno),
                errno_code: *errno,
                family: None,
                addr: None,
                port: None,
                path: None,
                backlog: Some(*backlog),
            }),
        }
    }

    pub fn write_json(&mut self, value: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value)?;
        self.out.write_all(b"\n")
    }

    /// A socket that was there when watching began (`existing`): its table
    /// cells as `watch` lays them out, and its JSON line.
    pub fn existing(&mut self, time: DateTime<Utc>, cells: [String; 5], json: &impl Serialize) -> io::Result<()> {
        match self.format {
            Format::Json => {
                #[derive(Serialize)]
                struct Timed<'a, J: Serialize> {
                    time: String,
                    #[serde(flatten)]
                    line: &'a J,
                }
                self.write_json(&Timed { time: rfc3339(time), line: json })
            }
            Format::Table => {
                let [user, comm, pid, proto, address] = cells;
                let time = time.with_timezone(&Local).format("%H:%M:%S%.6f").to_string();
                self.row(&[time, "existing".to_owned(), user, comm, pid, proto, address])
            }
        }
    }

    /// Records the kernel could not deliver: never silent.
    pub fn lost(&mut self, count: u64, total: u64, time: DateTime<Utc>) -> io::Result<()> {
        if self.format == Format::Json {
            self.write_json(&JsonLost { time: rfc3339(time), event: EventName::Lost, count, total })?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// A lifecycle change `watch` reports (`holders_changed`): its JSON
    /// line, or a table row naming the holders now.
    pub fn change(&mut self, time: DateTime<Utc>, change: &Change) -> io::Result<()> {
        match self.format {
            Format::Json => {
                let mut line = std::mem::take(&mut self.line);
                line.clear();
                let written =
                    Event::Lifecycle { time, change }.write_json(&mut line).and_then(|()| self.out.write_all(&line));
                self.line = line;
                written
            }
            Format::Table => {
                let (key, socket) = match change {
                    Change::HoldersChanged { key, socket, .. } => (key, socket),
                    _ => return Ok(()),
                };
                let first = socket.holders.first().unwrap_or(&socket.creator);
                let holders: Vec<String> =
                    socket.holders.iter().map(|h| format!("{}/{}", h.pid, escape_bytes(&h.comm))).collect();
                let (proto, place) = match &key.local {
                    Place::Inet { addr, port } => {
                        let v = if addr.is_ipv4() { "4" } else { "6" };
                        (format!("{}{v}", key.proto.name()), socket_address(*addr, *port))
                    }
                    Place::Unix { path } => ("unix".to_owned(), unix_path(path)),
                    Place::Raw { .. } | Place::Packet { .. } => (key.proto.name(), String::new()),
                };
                let cells = [
                    time.with_timezone(&Local).format("%H:%M:%S%.6f").to_string(),
                    change_name(change).as_str().to_owned(),
                    escape_bytes(
                        first.user.clone().or(first.uid.map(|u| u.to_string())).unwrap_or_default().as_bytes(),
                    ),
                    escape_bytes(&first.comm),
                    first.pid.to_string(),
                    proto,
                    format!("{place} holders={}", holders.join(",")),
                ];
                self.row(&cells)
            }
        }
    }

    /// Where the lines go (a buffer that a fan-out hands on, say).
    pub fn out_mut(&mut self) -> &mut W {
        &mut self.out
    }

    fn row(&mut self, cells: &[String; 7]) -> io::Result<()> {
        let mut line = String::with_capacity(120);
        for (cell, width) in cells.iter().zip(WIDTHS) {
            // Truncate rather than push the next column out of line.
            let cell: String = cell.chars().take(width).collect();
            line.push_str(&format!("{cell:<width$} "));
        }
        line.push_str(&cells[6]);
        line.push('\n');
        self.out.write_all(line.as_bytes())
    }
}

/// The fields every live event's JSON line has, in the README's order.
/// Those that name the task are written once for a run of its events.
fn common_fields(
    fields: &mut ObjectWriter<'_>,
    report: &Report<'_>,
    seconds: &mut SecondsCache,
    task: &mut Fragment<TaskFields>,
) {
    fields.time("time", report.time, seconds);
    fields.u64("ktime_ns", report.task.ktime_ns);
    fields.u64("seen_ktime_ns", report.seen_ktime_ns);
    fields.name("event", report.what.event_name().as_str());
    fields.cached(task, |of| of.is_of(report), || TaskFields::of(report), |fields| task_fields(fields, report));
}

/// Everything [`task_fields`] writes a line from.
struct TaskFields {
    pid: u32,
    tid: u32,
    ppid: Option<u32>,
    comm: Comm,
    exe: Option<Exe>,
    cmdline: Option<Argv>,
    uid: u32,
    gid: u32,
    user: Option<String>,
    cgroup_id: u64,
    cgroup: Option<CgroupName>,
    netns: u32,
}

impl TaskFields {
    fn of(report: &Report<'_>) -> Self {
        let (t, p) = (report.task, report.process);
        Self {
            pid: t.pid,
            tid: t.tid,
            ppid: p.ppid,
            comm: t.comm,
            exe: p.exe.clone(),
            cmdline: p.cmdline.clone(),
            uid: t.uid,
            gid: t.gid,
            user: report.user.map(str::to_owned),
            cgroup_id: t.cgroup_id,
            cgroup: report.cgroup.cloned(),
            netns: t.netns,
        }
    }

    /// Equal to [`Self::of`] `report`, without its copies.
    fn is_of(&self, report: &Report<'_>) -> bool {
        let (t, p) = (report.task, report.process);
        self.pid == t.pid
            && self.tid == t.tid
            && self.ppid == p.ppid
            && self.comm == t.comm
            && same(&self.exe, &p.exe)
            && same(&self.cmdline, &p.cmdline)
            && self.uid == t.uid
            && self.gid == t.gid
            && self.user.as_deref() == report.user
            && self.cgroup_id == t.cgroup_id
            && self.cgroup.as_ref() == report.cgroup
            && self.netns == t.netns
    }
}

/// `pid` … `netns`: what names the task and its process.
fn task_fields(fields: &mut ObjectWriter<'_>, report: &Report<'_>) {
    let t = report.task;
    let p = report.process;
    fields.u64("pid", u64::from(t.pid));
    fields.u64("tid", u64::from(t.tid));
    fields.opt_u64("ppid", p.ppid.map(u64::from));
    fields.escaped("comm", Some(&t.comm));
    fields.escaped("exe", p.exe.as_deref());
    fields.escaped_list("cmdline", p.cmdline.as_ref().map(|argv| argv.iter().map(Vec::as_slice)));
    fields.u64("uid", u64::from(t.uid));
    fields.u64("gid", u64::from(t.gid));
    fields.opt_str("user", report.user);
    fields.u64("cgroup_id", t.cgroup_id);
    fields.opt_str("cgroup", report.cgroup.map(|c| c.path.as_str()));
    fields.opt_str("container_id", report.cgroup.and_then(|c| c.container_id.as_deref()));
    // Network namespace inode; null when the kernel's BTF was unreadable.
    fields.opt_u64("netns", (t.netns != 0).then_some(u64::from(t.netns)));
}

fn table_proto(what: &What<'_>) -> String {
    let Some(proto) = what.proto() else {
        return "-".to_owned();
    };
    let suffix = match what.family() {
        Some(Family::Ipv4) => "4",
        Some(Family::Ipv6) => "6",
        _ => "",
    };
    format!("{}{suffix}", proto.name())
}

/// The LOCAL-ADDRESS column: the address, or what stands for one.
fn table_detail(what: &What<'_>) -> String {
    match what {
        What::Socket { event, fd_facts } => {
            let mut text = socket_address(event.addr, event.port);
            if let Some(name) = services::name(event.proto.name().as_str(), event.port) {
                text.push_str(&format!(" ({name})"));
            }
            if let Some(facts) = fd_facts {
                for option in &facts.options {
                    text.push(' ');
                    text.push_str(option);
                }
                if let Some(dev) = &facts.bind_device {
                    text.push_str(&format!(" dev={}", escape_bytes(dev)));
                }
            }
            text
        }
        What::PassiveSocket { fd, socket } => {
            let protocol = protocol_name(socket).map_or_else(|| socket.protocol.to_string(), str::to_owned);
            format!("fd {fd} {} protocol {protocol}", sock_type_name(socket.sock_type))
        }
        What::FilterAttached { fd, optname, filter, .. } => match filter {
            Filter::Classic { instructions, bytes } => format!(
                "fd {fd} {} classic {instructions} insns sha256:{}",
                attach_name(*optname),
                &sha256_hex(bytes)[..16]
            ),
            Filter::Extended { prog_fd } => {
                format!("fd {fd} {} extended prog fd {prog_fd}", attach_name(*optname))
            }
        },
        What::BindFailed { errno, addr, .. } => {
            let addr = match addr {
                Some(SockAddr::Inet { addr, port }) => socket_address(*addr, *port),
                Some(SockAddr::Unix(path)) => unix_path(path),
                Some(SockAddr::Other(af)) => format!("af {af}"),
                None => "?".to_owned(),
            };
            format!("{addr} {}", errno_name(*errno))
        }
        What::ListenFailed { fd, errno, backlog } => {
            format!("fd {fd} backlog {backlog} {}", errno_name(*errno))
        }
        What::Unix { path, .. } => unix_path(path),
        What::Denied { event, why } => {
            let rule = why.and_then(|w| w.rule.as_deref()).map_or_else(String::new, |r| format!(" rule {r:?}"));
            let target = match (&event.target, denied_socket(event)) {
                (Some(SockAddr::Inet { addr, port }), _) => socket_address(*addr, *port),
                (Some(SockAddr::Unix(path)), _) => unix_path(path),
                (Some(SockAddr::Other(af)), _) => format!("af {af}"),
                (None, Some(socket)) => {
                    protocol_name(&socket).map_or_else(|| format!("protocol {}", socket.protocol), str::to_owned)
                }
                (None, None) => "?".to_owned(),
            };
            // A bind as it always read; the calls the LSM hooks refuse are named.
            let call = if event.call == DeniedCall::Bind { String::new() } else { format!("{}() ", event.call.name()) };
            format!("{call}{target} EPERM{rule}")
        }
        What::Accept(a) => {
            let end =
                |e: Option<(IpAddr, u16)>| e.map_or_else(|| "?".to_owned(), |(addr, port)| socket_address(addr, port));
            format!("{} <- {}", end(a.local), end(a.peer))
        }
    }
}

/// A refused socket() as the socket it would have made, for the names of
/// its protocol; None for a refused bind or listen.
pub fn denied_socket(event: &DeniedEvent) -> Option<PassiveSocket> {
    (event.call == DeniedCall::Socket).then_some(PassiveSocket {
        family: event.family,
        sock_type: event.sock_type,
        protocol: event.protocol,
    })
}

/// IPPROTO_* of a raw socket; ETH_P_* (given in network order) of a packet socket.
pub fn protocol_name(socket: &PassiveSocket) -> Option<&'static str> {
    if socket.family == Family::Packet {
        match u16::from_be(socket.protocol as u16) {
            0x0003 => Some("ETH_P_ALL"),
            0x0800 => Some("ETH_P_IP"),
            0x0806 => Some("ETH_P_ARP"),
            0x86dd => Some("ETH_P_IPV6"),
            _ => None,
        }
    } else {
        match socket.protocol {
            1 => Some("IPPROTO_ICMP"),
            2 => Some("IPPROTO_IGMP"),
            6 => Some("IPPROTO_TCP"),
            17 => Some("IPPROTO_UDP"),
            58 => Some("IPPROTO_ICMPV6"),
            255 => Some("IPPROTO_RAW"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use watcher_common::SO_ATTACH_FILTER;

    use super::*;
    use crate::{
        host::process::ProcessInfo,
        model::socket::Proto,
        record::decode::{SocketEvent, SocketKind, Task},
    };

    fn task(comm: &[u8]) -> Task {
        Task {
            ktime_ns: 5,
            cgroup_id: 1,
            pid: 4242,
            tid: 4243,
            uid: 1000,
            gid: 1000,
            netns: 4026531840,
            comm: crate::model::holder::Comm::new(comm),
        }
    }

    fn event(comm: &[u8]) -> SocketEvent {
        SocketEvent {
            kind: SocketKind::Listen,
            task: task(comm),
            sock_id: 2,
            cookie: None,
            proto: Proto::Tcp,
            family: Family::Ipv4,
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8080,
            fd: Some(3),
            backlog: Some(128),
            stopped: false,
        }
    }

    fn print(format: Format, what: What<'_>, task: &Task, process: &ProcessInfo) -> String {
        let mut printer = Printer::new(format, Vec::new());
        printer.header().unwrap();
        printer
            .report(&Report {
                task,
                process,
                user: Some("alice"),
                time: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                seen_ktime_ns: 6,
                cgroup: None,
                what,
            })
            .unwrap();
        String::from_utf8(printer.out).unwrap()
    }

    fn print_socket(format: Format, event: &SocketEvent, process: &ProcessInfo) -> String {
        print(format, What::Socket { event, fd_facts: None }, &event.task, process)
    }

    #[test]
    fn hostile_comm_and_argv_stay_on_one_line() {
        let process = ProcessInfo {
            ppid: Some(1),
            exe: Some(b"/tmp/x\nFAKE".to_vec().into()),
            cmdline: Some(vec![b"a\nb".to_vec(), b"\x1b[2J".to_vec()].into()),
        };
        // 15 bytes, as long as a kernel comm gets.
        let e = event(b"evil\n12:00 lstn");
        let table = print_socket(Format::Table, &e, &process);
        assert_eq!(table.lines().count(), 2, "{table}");
        let json = print_socket(Format::Json, &e, &process);
        assert_eq!(json.lines().count(), 1);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["comm"], "evil\\n12:00 lstn");
        assert_eq!(value["exe"], "/tmp/x\\nFAKE");
        assert_eq!(value["cmdline"][1], "\\x1b[2J");
    }

    /// The line as serde wrote it before the hand-written writer, field
    /// for field: the bytes must not change.
    fn serde_line(report: &Report<'_>, printer: &Printer<Vec<u8>>) -> Vec<u8> {
        use std::borrow::Cow;

        use crate::model::escape::escape;
        #[derive(Serialize)]
        struct Common<'a> {
            time: String,
            ktime_ns: u64,
            seen_ktime_ns: u64,
            event: EventName,
            pid: u32,
            tid: u32,
            ppid: Option<u32>,
            comm: Cow<'a, str>,
            exe: Option<Cow<'a, str>>,
            cmdline: Option<Vec<Cow<'a, str>>>,
            uid: u32,
            gid: u32,
            user: Option<&'a str>,
            cgroup_id: u64,
            cgroup: Option<&'a str>,
            container_id: Option<&'a str>,
            netns: Option<u32>,
        }
        #[derive(Serialize)]
        struct SocketDetail {
            proto: String,
            family: String,
            addr: String,
            port: u16,
            #[serde(skip_serializing_if = "Option::is_none")]
            service: Option<&'static str>,
            sock_id: u64,
            fd: Option<i32>,
            #[serde(skip_serializing_if = "Option::is_none")]
            backlog: Option<u32>,
            options: Vec<&'static str>,
            bind_device: Option<String>,
        }
        #[derive(Serialize)]
        struct Line<'a, D: Serialize> {
            #[serde(flatten)]
            common: Common<'a>,
            #[serde(flatten)]
            detail: D,
        }
        let (t, p) = (report.task, report.process);
        let What::Socket { event, fd_facts } = &report.what else { panic!("a socket event") };
        let line = Line {
            common: Common {
                time: rfc3339(report.time),
                ktime_ns: t.ktime_ns,
                seen_ktime_ns: report.seen_ktime_ns,
                event: report.what.event_name(),
                pid: t.pid,
                tid: t.tid,
                ppid: p.ppid,
                comm: escape(&t.comm),
                exe: p.exe.as_deref().map(escape),
                cmdline: p.cmdline.as_ref().map(|argv| argv.iter().map(|a| escape(a)).collect()),
                uid: t.uid,
                gid: t.gid,
                user: report.user,
                cgroup_id: t.cgroup_id,
                cgroup: report.cgroup.map(|c| c.path.as_str()),
                container_id: report.cgroup.and_then(|c| c.container_id.as_deref()),
                netns: (t.netns != 0).then_some(t.netns),
            },
            detail: SocketDetail {
                proto: event.proto.name(),
                family: event.family.name(),
                addr: event.addr.to_string(),
                port: event.port,
                service: services::name(event.proto.name().as_str(), event.port),
                sock_id: printer.sock_id_key.hash_one(event.sock_id),
                fd: event.fd,
                backlog: event.backlog,
                options: fd_facts.map(|f| f.options.clone()).unwrap_or_default(),
                bind_device: fd_facts.and_then(|f| f.bind_device.as_deref()).map(escape_bytes),
            },
        };
        let mut out = serde_json::to_vec(&line).unwrap();
        out.push(b'\n');
        out
    }

    /// The hand-written line is byte for byte what serde wrote: hostile
    /// and plain names, known and unknown fields, IPv4 and IPv6, a cgroup,
    /// socket options, times within one second and across seconds.
    #[test]
    fn socket_lines_are_the_bytes_serde_wrote() {
        use crate::{enrich::socket_options::FdFacts, host::cgroups::CgroupName};
        let hostile = ProcessInfo {
            ppid: Some(1),
            exe: Some(b"/tmp/x\nFAKE \"quoted\" \xff".to_vec().into()),
            cmdline: Some(vec![b"a\nb".to_vec(), b"\x1b[2J".to_vec(), b"".to_vec(), b"back\\slash".to_vec()].into()),
        };
        let plain = ProcessInfo {
            ppid: None,
            exe: Some(b"/usr/sbin/sshd".to_vec().into()),
            cmdline: Some(vec![b"sshd: /usr/sbin/sshd -D".to_vec()].into()),
        };
        let cgroup = CgroupName { path: "/system.slice/ssh\"d.service".into(), container_id: Some("abc123".into()) };
        let facts = FdFacts {
            options: vec!["SO_REUSEADDR", "SO_REUSEPORT"],
            bind_device: Some(b"eth\n0".to_vec()),
            ..FdFacts::default()
        };
        let mut printer = Printer::new(Format::Json, Vec::new());
        let mut udp6 = event(b"plain");
        udp6.proto = Proto::Udp;
        udp6.family = Family::Ipv6;
        udp6.addr = IpAddr::V6(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0x2a));
        udp6.port = 53;
        udp6.fd = None;
        udp6.backlog = None;
        udp6.task.netns = 0;
        let tcp = event(b"evil\n\"comm\"");
        for (i, (event, process, user, cgroup, facts)) in [
            (&tcp, &hostile, Some("alice"), None, None),
            (&udp6, &plain, None, Some(&cgroup), Some(&facts)),
            (&tcp, &ProcessInfo::default(), Some("a\"b"), Some(&cgroup), None),
        ]
        .into_iter()
        .enumerate()
        {
            for time in [
                DateTime::from_timestamp(1_700_000_000, 123_456_789),
                DateTime::from_timestamp(1_700_000_000 + i as i64, 5_000),
            ] {
                let report = Report {
                    task: &event.task,
                    process,
                    user,
                    time: time.unwrap(),
                    seen_ktime_ns: 6,
                    cgroup,
                    what: What::Socket { event, fd_facts: facts },
                };
                printer.out.clear();
                printer.report(&report).unwrap();
                let want = serde_line(&report, &printer);
                assert_eq!(String::from_utf8_lossy(&printer.out), String::from_utf8_lossy(&want));
            }
        }
    }

    /// The fields kept from one line to the next are written again when
    /// anything they are written from changes, one thing at a time, and
    /// back: every line is the one serde wrote.
    #[test]
    fn kept_task_fields_follow_every_change() {
        use crate::host::cgroups::CgroupName;
        let base_event = event(b"sshd");
        let base_process = ProcessInfo {
            ppid: Some(1),
            exe: Some(b"/usr/sbin/sshd".to_vec().into()),
            cmdline: Some(vec![b"sshd".to_vec(), b"-D".to_vec()].into()),
        };
        let cgroup = CgroupName { path: "/system.slice/ssh.service".into(), container_id: None };
        let base = (base_event.clone(), base_process.clone(), Some("root"), Some(cgroup.clone()));
        let mut variants = Vec::new();
        /// What a line is written from: the event (and its task), the process, the user, the cgroup.
        type From = (SocketEvent, ProcessInfo, Option<&'static str>, Option<CgroupName>);
        let mut vary = |change: &dyn Fn(&mut From)| {
            let mut v = base.clone();
            change(&mut v);
            variants.push(base.clone());
            variants.push(v);
        };
        vary(&|v| v.0.task.pid += 1);
        vary(&|v| v.0.task.tid += 1);
        vary(&|v| v.0.task.uid += 1);
        vary(&|v| v.0.task.gid += 1);
        vary(&|v| v.0.task.cgroup_id += 1);
        vary(&|v| v.0.task.netns = 0);
        vary(&|v| v.0.task.comm = crate::model::holder::Comm::new(b"sshe"));
        vary(&|v| v.1.ppid = None);
        // Another exe, the same bytes in another allocation, none.
        vary(&|v| v.1.exe = Some(b"/usr/sbin/sshe".to_vec().into()));
        vary(&|v| v.1.exe = Some(b"/usr/sbin/sshd".to_vec().into()));
        vary(&|v| v.1.exe = None);
        vary(&|v| v.1.cmdline = Some(vec![b"sshd".to_vec(), b"-E".to_vec()].into()));
        vary(&|v| v.1.cmdline = Some(vec![b"sshd".to_vec(), b"-D".to_vec()].into()));
        vary(&|v| v.1.cmdline = None);
        vary(&|v| v.2 = Some("rooT"));
        vary(&|v| v.2 = None);
        vary(&|v| v.3.as_mut().unwrap().path.push('x'));
        vary(&|v| v.3.as_mut().unwrap().container_id = Some("abc".into()));
        vary(&|v| v.3 = None);
        // Fields outside the kept ones change beside them.
        vary(&|v| v.0.task.ktime_ns += 1);
        vary(&|v| v.0.port += 1);
        let mut printer = Printer::new(Format::Json, Vec::new());
        for (i, (event, process, user, cgroup)) in variants.iter().enumerate() {
            let report = Report {
                task: &event.task,
                process,
                user: *user,
                time: DateTime::from_timestamp(1_700_000_000, i as u32 * 1000).unwrap(),
                seen_ktime_ns: 6,
                cgroup: cgroup.as_ref(),
                what: What::Socket { event, fd_facts: None },
            };
            printer.out.clear();
            printer.report(&report).unwrap();
            let want = serde_line(&report, &printer);
            assert_eq!(String::from_utf8_lossy(&printer.out), String::from_utf8_lossy(&want), "variant {i}");
        }
    }

    #[test]
    fn unknown_process_fields_are_null() {
        let json = print_socket(Format::Json, &event(b"gone"), &ProcessInfo::default());
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(value["exe"].is_null() && value["cmdline"].is_null() && value["ppid"].is_null());
        assert_eq!(value["pid"], 4242);
        assert_eq!(value["time"], "2023-11-14T22:13:20.000000Z");
        assert_eq!((value["fd"].clone(), value["backlog"].clone()), (3.into(), 128.into()));
        assert_ne!(value["sock_id"], 2, "the kernel's identity is hashed");
    }

    #[test]
    fn table_columns_line_up() {
        let table = print_socket(Format::Table, &event(b"a-very-long-command-name"), &ProcessInfo::default());
        let mut lines = table.lines();
        let header = lines.next().unwrap();
        let row = lines.next().unwrap();
        for name in ["EVENT", "USER", "COMMAND", "PID", "PROTO", "LOCAL-ADDRESS"] {
            let col = header.find(name).unwrap();
            assert_eq!(&row[col - 1..col], " ", "column {name} in {row:?}");
            assert_ne!(&row[col..=col], " ", "column {name} in {row:?}");
        }
        assert!(row.contains("127.0.0.1:8080"), "{row}");
    }

    #[test]
    fn filters_are_hashed_and_failures_named() {
        let t = task(b"bpfdoor");
        let p = ProcessInfo::default();
        let filter = Filter::Classic { instructions: 1, bytes: vec![0x06, 0, 0, 0, 0xff, 0xff, 0, 0] };
        let socket = PassiveSocket { family: Family::Packet, sock_type: 3, protocol: 0x0300 };
        let what = What::FilterAttached { fd: 3, optname: SO_ATTACH_FILTER, filter: &filter, socket: Some(socket) };
        let json = print(Format::Json, what, &t, &p);
        let v: serde_json::Value = serde_json::from_str(json.lines().last().unwrap()).unwrap();
        assert_eq!(v["event"], "filter_attached");
        assert_eq!(v["instructions"], 1);
        assert_eq!(v["sha256"], sha256_hex(&[0x06, 0, 0, 0, 0xff, 0xff, 0, 0]));
        assert_eq!(v["sha256"].as_str().unwrap().len(), 64);
        assert_eq!((v["proto"].as_str(), v["filter_complete"].as_bool()), (Some("packet"), Some(true)));

        let addr = SockAddr::Inet { addr: IpAddr::V4(Ipv4Addr::LOCALHOST), port: 80 };
        let what = What::BindFailed { fd: 3, errno: 98, addr: Some(&addr) };
        let table = print(Format::Table, what, &t, &p);
        assert!(table.lines().last().unwrap().ends_with("127.0.0.1:80 EADDRINUSE"), "{table}");
        assert_eq!(errno_name(13), "EACCES");
        assert_eq!(unix_path(b"\0abstract"), "@abstract");
    }
}
