//! The `existing` event: one socket of the snapshot and one process that
//! holds it, as `watcher list` and the start of `watch` print it (a table
//! row, or a JSON line). Everything a process chooses is escaped.
use std::io;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{
    enrich::socket_options::PassiveSocket,
    host::services,
    model::{
        escape::escape_bytes,
        event_name::EventName,
        socket::{Family, Local},
        text,
    },
    output::format::{Format, Printer, protocol_name},
    policy::filter::Row,
    snapshot::{
        holders::HolderInfo,
        sock_diag::{self, ExistingSocket},
    },
};

impl<W: io::Write> Printer<W> {
    /// An `existing` event: a table row as `watch` lays it out, or its JSON line.
    pub fn existing_socket(
        &mut self,
        time: DateTime<Utc>,
        socket: &ExistingSocket,
        holder: Option<&HolderInfo>,
        netns: Option<u64>,
    ) -> io::Result<()> {
        let dash = || "-".to_owned();
        let cells = [
            holder
                .and_then(|h| h.user.clone().or(h.uid.map(|u| u.to_string())))
                .map_or_else(dash, |u| escape_bytes(u.as_bytes())),
            holder.and_then(|h| h.comm.as_deref()).map_or_else(dash, escape_bytes),
            holder.map_or_else(dash, |h| h.pid.to_string()),
            table_proto(socket),
            table_address(socket),
        ];
        self.existing(time, cells, &json_line(socket, holder, netns))
    }
}

/// One JSON line: the socket, then its holder (all null when none).
#[derive(Serialize)]
pub struct JsonLine<'a> {
    event: EventName,
    proto: String,
    family: String,
    /// Local address: TCP, UDP, raw.
    addr: Option<String>,
    /// Local port: TCP, UDP.
    port: Option<u16>,
    /// The port's well-known name from /etc/services (ssh, smtp…), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    service: Option<&'static str>,
    /// UNIX: the bound name, escaped; an abstract one as `@name`.
    path: Option<String>,
    sock_type: &'static str,
    /// Raw: the IP protocol; packet: the ethertype as given to socket()
    /// (network byte order), as `watch`'s packet_socket events give it.
    protocol: Option<u32>,
    protocol_name: Option<&'static str>,
    /// The interface the socket is bound to, if any.
    interface: Option<String>,
    inode: u64,
    netns: Option<u64>,
    pid: Option<u32>,
    comm: Option<String>,
    exe: Option<String>,
    cmdline: Option<Vec<String>>,
    uid: Option<u32>,
    user: Option<&'a str>,
    fd: Option<i32>,
}

/// Prints the rows: a header and one line each for the table, one JSON
/// object each for `--json`.
pub fn print(out: &mut impl io::Write, format: Format, netns: Option<u64>, rows: &[Row<'_>]) -> io::Result<()> {
    match format {
        Format::Json => {
            for &(socket, holder) in rows {
                serde_json::to_writer(&mut *out, &json_line(socket, holder, netns))?;
                out.write_all(b"\n")?;
            }
        }
        Format::Table => {
            table_row(out, &HEADERS.map(str::to_owned))?;
            for &(socket, holder) in rows {
                let dash = || "-".to_owned();
                let cells = [
                    holder.map_or_else(dash, |h| {
                        escape_bytes(h.user.clone().or(h.uid.map(|u| u.to_string())).unwrap_or_else(dash).as_bytes())
                    }),
                    holder.and_then(|h| h.comm.as_deref()).map_or_else(dash, escape_bytes),
                    holder.map_or_else(dash, |h| h.pid.to_string()),
                    holder.map_or_else(dash, |h| h.fd.to_string()),
                    table_proto(socket),
                    socket.inode.to_string(),
                    table_address(socket),
                ];
                table_row(out, &cells)?;
            }
        }
    }
    Ok(())
}

pub fn json_line<'a>(socket: &ExistingSocket, holder: Option<&'a HolderInfo>, netns: Option<u64>) -> JsonLine<'a> {
    let passive = passive(socket);
    let (addr, port, path) = match &socket.local {
        Local::Inet { addr, port } => (Some(addr.to_string()), Some(*port), None),
        Local::Raw { addr, .. } => (Some(addr.to_string()), None, None),
        Local::Unix { path } => (None, None, Some(text::unix_path(path))),
        Local::Packet { .. } => (None, None, None),
    };
    JsonLine {
        event: EventName::Existing,
        proto: socket.proto.name(),
        family: socket.family.name(),
        addr,
        port,
        service: port.and_then(|p| services::name(socket.proto.name().as_str(), p)),
        path,
        sock_type: text::sock_type_name(u32::from(socket.sock_type)),
        protocol: passive.map(|p| p.protocol),
        protocol_name: passive.as_ref().and_then(protocol_name),
        interface: sock_diag::interface_name(socket.ifindex).map(|name| escape_bytes(&name)),
        inode: socket.inode,
        netns,
        pid: holder.map(|h| h.pid),
        comm: holder.and_then(|h| h.comm.as_deref()).map(escape_bytes),
        exe: holder.and_then(|h| h.process.exe.as_deref()).map(escape_bytes),
        cmdline: holder
            .and_then(|h| h.process.cmdline.as_ref())
            .map(|argv| argv.iter().map(|a| escape_bytes(a)).collect()),
        uid: holder.and_then(|h| h.uid),
        user: holder.and_then(|h| h.user.as_deref()),
        fd: holder.map(|h| h.fd),
    }
}

/// A raw or packet socket as `output` names them.
fn passive(socket: &ExistingSocket) -> Option<PassiveSocket> {
    let protocol = match socket.local {
        Local::Raw { protocol, .. } => u32::from(protocol),
        Local::Packet { protocol } => u32::from(protocol.to_be()),
        _ => return None,
    };
    Some(PassiveSocket { family: socket.family, sock_type: u32::from(socket.sock_type), protocol })
}

// USER COMMAND PID FD PROTO INODE LOCAL-ADDRESS, in the spirit of sockstat -l.
// The numeric columns are wide enough for any value (pid_max 4194304, fd
// below nr_open's 1048576 limit, 32-bit inodes): a cut number would lie.
const WIDTHS: [usize; 6] = [10, 16, 8, 7, 6, 10];

const HEADERS: [&str; 7] = ["USER", "COMMAND", "PID", "FD", "PROTO", "INODE", "LOCAL-ADDRESS"];

fn table_row(out: &mut impl io::Write, cells: &[String; 7]) -> io::Result<()> {
    let mut line = String::with_capacity(120);
    for (cell, width) in cells.iter().zip(WIDTHS) {
        // Truncate rather than push the next column out of line.
        let cell: String = cell.chars().take(width).collect();
        line.push_str(&format!("{cell:<width$} "));
    }
    line.push_str(&cells[6]);
    line.push('\n');
    out.write_all(line.as_bytes())
}

/// `tcp4`, `udp6`, `unix`, `raw4`, `packet`.
pub fn table_proto(socket: &ExistingSocket) -> String {
    let suffix = match socket.family {
        Family::Ipv4 => "4",
        Family::Ipv6 => "6",
        _ => "",
    };
    format!("{}{suffix}", socket.proto.name())
}

/// The LOCAL-ADDRESS column: the address, or what stands for one.
pub fn table_address(socket: &ExistingSocket) -> String {
    let mut text = match &socket.local {
        Local::Inet { addr, port } => {
            let mut text = text::socket_address(*addr, *port);
            if let Some(name) = services::name(socket.proto.name().as_str(), *port) {
                text.push_str(&format!(" ({name})"));
            }
            text
        }
        Local::Unix { path } => {
            let mut text = text::unix_path(path);
            match socket.sock_type {
                2 => text.push_str(" (dgram)"),
                5 => text.push_str(" (seqpacket)"),
                _ => {}
            }
            text
        }
        Local::Raw { addr, protocol } => {
            let name = passive(socket).as_ref().and_then(protocol_name);
            format!("{addr} {}", name.map_or_else(|| format!("protocol {protocol}"), str::to_owned))
        }
        Local::Packet { protocol } => {
            let name = passive(socket).as_ref().and_then(protocol_name);
            let interface =
                sock_diag::interface_name(socket.ifindex).map_or_else(|| "*".to_owned(), |n| escape_bytes(&n));
            let protocol = name.map_or_else(|| format!("ethertype {protocol:#06x}"), str::to_owned);
            return format!("{interface} {protocol} {}", text::sock_type_name(u32::from(socket.sock_type)));
        }
    };
    if let Some(interface) = sock_diag::interface_name(socket.ifindex) {
        text.push_str(&format!(" dev={}", escape_bytes(&interface)));
    }
    text
}

#[cfg(test)]
mod tests {
    use std::{
        collections::HashMap,
        net::{IpAddr, Ipv4Addr, Ipv6Addr},
    };

    use super::*;
    use crate::{
        host::process::ProcessInfo,
        model::socket::Proto,
        policy::filter::{Filter, ProtoFilter, matches, rows},
        snapshot::{holders::parse_uid, sock_diag::Snapshot},
    };

    fn socket(proto: Proto, family: Family, local: Local) -> ExistingSocket {
        let sock_type = match proto {
            Proto::Udp => 2,
            Proto::Raw | Proto::Packet => 3,
            _ => 1,
        };
        ExistingSocket { proto, family, sock_type, local, ifindex: 0, inode: 99, owner_uid: None, cookie: None }
    }

    fn holder(pid: u32, comm: &[u8]) -> HolderInfo {
        HolderInfo {
            pid,
            fd: 3,
            comm: Some(crate::model::holder::Comm::new(comm)),
            uid: Some(0),
            user: Some("root".into()),
            process: ProcessInfo {
                ppid: Some(1),
                exe: Some(b"/usr/sbin/evil\nd".to_vec().into()),
                cmdline: Some(vec![b"evil".to_vec(), b"\x1b[2J".to_vec()].into()),
            },
        }
    }

    fn tcp() -> ExistingSocket {
        socket(Proto::Tcp, Family::Ipv4, Local::Inet { addr: IpAddr::V4(Ipv4Addr::LOCALHOST), port: 8080 })
    }

    fn printed(format: Format, rows: &[Row<'_>]) -> String {
        let mut out = Vec::new();
        print(&mut out, format, Some(4026531840), rows).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn json_has_every_field_and_escapes_what_processes_choose() {
        let s = tcp();
        let h = holder(42, b"a\nb");
        let text = printed(Format::Json, &[(&s, Some(&h))]);
        assert_eq!(text.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["event"], "existing");
        assert_eq!((v["proto"].as_str(), v["family"].as_str()), (Some("tcp"), Some("ipv4")));
        assert_eq!((v["addr"].as_str(), v["port"].as_u64()), (Some("127.0.0.1"), Some(8080)));
        assert!(v["path"].is_null());
        assert_eq!((v["inode"].as_u64(), v["netns"].as_u64()), (Some(99), Some(4026531840)));
        assert_eq!((v["pid"].as_u64(), v["fd"].as_u64(), v["uid"].as_u64()), (Some(42), Some(3), Some(0)));
        assert_eq!(v["comm"], "a\\nb");
        assert_eq!(v["exe"], "/usr/sbin/evil\\nd");
        assert_eq!(v["cmdline"], serde_json::json!(["evil", "\\x1b[2J"]));
        assert_eq!(v["user"], "root");
    }

    #[test]
    fn unheld_socket_has_one_line_with_null_holder() {
        let s = socket(Proto::Unix, Family::Unix, Local::Unix { path: b"\0hidden\n".to_vec() });
        let text = printed(Format::Json, &[(&s, None)]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["path"], "@hidden\\n");
        assert_eq!(v["sock_type"], "SOCK_STREAM");
        for field in ["pid", "comm", "exe", "cmdline", "uid", "user", "fd", "addr", "port"] {
            assert!(v[field].is_null(), "{field}: {v}");
        }
        let table = printed(Format::Table, &[(&s, None)]);
        let row = table.lines().nth(1).unwrap();
        assert!(
            row.starts_with("-          -                -        -       unix   99         @hidden\\n"),
            "{row:?}"
        );
    }

    #[test]
    fn raw_and_packet_name_their_protocol() {
        let raw =
            socket(Proto::Raw, Family::Ipv6, Local::Raw { addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED), protocol: 58 });
        let packet = socket(Proto::Packet, Family::Packet, Local::Packet { protocol: 3 });
        let text = printed(Format::Json, &[(&raw, None), (&packet, None)]);
        let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(
            (lines[0]["protocol"].as_u64(), lines[0]["protocol_name"].as_str()),
            (Some(58), Some("IPPROTO_ICMPV6"))
        );
        assert_eq!(lines[0]["addr"], "::");
        assert_eq!(lines[1]["protocol_name"], "ETH_P_ALL");
        assert_eq!(lines[1]["protocol"].as_u64(), Some(u64::from(3u16.to_be())));
        assert_eq!((lines[1]["proto"].as_str(), lines[1]["family"].as_str()), (Some("packet"), Some("packet")));
        let table = printed(Format::Table, &[(&raw, None), (&packet, None)]);
        assert!(table.lines().nth(1).unwrap().ends_with("raw6   99         :: IPPROTO_ICMPV6"), "{table}");
        assert!(table.lines().nth(2).unwrap().ends_with("* ETH_P_ALL SOCK_RAW"), "{table}");
    }

    #[test]
    fn table_columns_line_up() {
        let s = tcp();
        let h = holder(4242, b"nginx");
        let table = printed(Format::Table, &[(&s, Some(&h))]);
        let mut lines = table.lines();
        let header = lines.next().unwrap();
        let row = lines.next().unwrap();
        for name in ["COMMAND", "PID", "FD", "PROTO", "INODE", "LOCAL-ADDRESS"] {
            let col = header.find(name).unwrap();
            assert_eq!(&row[col - 1..col], " ", "column {name} in {row:?}");
            assert_ne!(&row[col..=col], " ", "column {name} in {row:?}");
        }
        assert!(row.starts_with("root       nginx            4242     3       tcp4 "), "{row:?}");
        assert!(row.contains("127.0.0.1:8080"), "{row}");
    }

    /// Names may be cut to keep the columns; numbers never are.
    #[test]
    fn large_fds_and_inodes_are_printed_whole() {
        let mut s = tcp();
        s.inode = u64::from(u32::MAX);
        let mut h = holder(4_194_304, b"nginx");
        h.fd = 1_048_575;
        let table = printed(Format::Table, &[(&s, Some(&h))]);
        let row = table.lines().nth(1).unwrap();
        assert!(row.contains(" 4194304 ") && row.contains(" 1048575 ") && row.contains(" 4294967295 "), "{row:?}");
    }

    #[test]
    fn filters_keep_rows_by_holder_and_by_socket() {
        let s = tcp();
        let unix = socket(Proto::Unix, Family::Unix, Local::Unix { path: b"/run/x".to_vec() });
        let h = holder(10, b"sshd");
        let f = |f: Filter, s: &ExistingSocket, h: Option<&HolderInfo>| matches(&f, s, h);
        assert!(f(Filter::default(), &s, None));
        assert!(f(Filter { pids: vec![10], ..Default::default() }, &s, Some(&h)));
        assert!(!f(Filter { pids: vec![11], ..Default::default() }, &s, Some(&h)));
        assert!(!f(Filter { pids: vec![10], ..Default::default() }, &s, None));
        assert!(f(Filter { comms: vec!["sshd".into()], ..Default::default() }, &s, Some(&h)));
        assert!(!f(Filter { comms: vec!["ssh".into()], ..Default::default() }, &s, Some(&h)));
        assert!(f(Filter { ports: vec![8080], ..Default::default() }, &s, None));
        assert!(!f(Filter { ports: vec![8080], ..Default::default() }, &unix, None));
        assert!(f(Filter { proto: Some(ProtoFilter::Unix), ..Default::default() }, &unix, None));
        assert!(!f(Filter { proto: Some(ProtoFilter::Udp), ..Default::default() }, &s, None));
        assert!(f(Filter { family: Some(Family::Ipv4), ..Default::default() }, &s, None));
        assert!(!f(Filter { family: Some(Family::Ipv6), ..Default::default() }, &s, None));
        assert!(!f(Filter { family: Some(Family::Ipv4), ..Default::default() }, &unix, None));
    }

    #[test]
    fn shared_socket_has_a_row_per_holder() {
        let snapshot = Snapshot {
            netns: None,
            sockets: vec![tcp()],
            holders: HashMap::new(),
            raw_source: sock_diag::Source::ProcNet,
            packet_source: sock_diag::Source::SockDiag,
            unreadable: 0,
        };
        let holders =
            HashMap::from([(99, vec![holder(10, b"apache2"), holder(11, b"apache2"), holder(12, b"apache2")])]);
        let all = rows(&snapshot, &holders, &Filter::default());
        assert_eq!(all.iter().map(|(_, h)| h.unwrap().pid).collect::<Vec<_>>(), [10, 11, 12]);
        let one = rows(&snapshot, &holders, &Filter { pids: vec![11], ..Default::default() });
        assert_eq!(one.len(), 1);
        let nobody = HashMap::new();
        let none = rows(&snapshot, &nobody, &Filter::default());
        assert!(none.len() == 1 && none[0].1.is_none());
    }

    #[test]
    fn uid_is_the_real_one() {
        assert_eq!(parse_uid("Name:\tx\nUid:\t1000\t0\t0\t0\nGid:\t5\n"), Some(1000));
        assert_eq!(parse_uid("Name:\tx\n"), None);
    }
}
