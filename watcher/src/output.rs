//! Printing reports: an aligned table for people, JSON lines for programs.
//! Everything a process chooses (comm, exe, argv) goes through
//! [`escape_bytes`] first, so no process can forge or break a line.
use std::{
    hash::{BuildHasher as _, RandomState},
    io::{self, Write},
    net::IpAddr,
};

use chrono::{DateTime, Local, SecondsFormat, Utc};
use serde::Serialize;

use crate::{
    escape::escape_bytes,
    events::{Family, SocketEvent, kind_name},
    process::ProcessInfo,
};

/// An event with everything known about its process.
pub struct Report<'a> {
    pub event: &'a SocketEvent,
    pub process: &'a ProcessInfo,
    pub user: Option<&'a str>,
    pub time: DateTime<Utc>,
    /// CLOCK_MONOTONIC when userspace decoded the record: minus
    /// `event.ktime_ns`, how long the event took to reach watcher.
    pub seen_ktime_ns: u64,
}

#[derive(Serialize)]
struct JsonEvent<'a> {
    time: String,
    ktime_ns: u64,
    seen_ktime_ns: u64,
    event: &'static str,
    proto: String,
    family: &'static str,
    addr: String,
    port: u16,
    pid: u32,
    tid: u32,
    ppid: Option<u32>,
    comm: String,
    exe: Option<String>,
    cmdline: Option<Vec<String>>,
    uid: u32,
    gid: u32,
    user: Option<&'a str>,
    cgroup_id: u64,
    sock_id: u64,
}

#[derive(Serialize)]
struct JsonLost {
    time: String,
    event: &'static str,
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
    /// Keys the hash that turns kernel socket identities into `sock_id`:
    /// a TCP socket's identity is its kernel address, which must not reach
    /// a log (it would undo KASLR). Equal within one run, random across runs.
    sock_id_key: RandomState,
}

// TIME EVENT USER COMMAND PID PROTO LOCAL-ADDRESS, in the spirit of sockstat.
const WIDTHS: [usize; 6] = [15, 6, 10, 16, 8, 5];
const HEADERS: [&str; 7] = ["TIME", "EVENT", "USER", "COMMAND", "PID", "PROTO", "LOCAL-ADDRESS"];

impl<W: Write> Printer<W> {
    pub fn new(format: Format, out: W) -> Self {
        Self {
            format,
            out,
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
            Format::Json => {
                let sock_id = self.sock_id_key.hash_one(report.event.sock_id);
                serde_json::to_writer(&mut self.out, &json_event(report, sock_id))?;
                self.out.write_all(b"\n")
            }
            Format::Table => {
                let e = report.event;
                let user = report.user.map_or_else(|| e.uid.to_string(), str::to_owned);
                let cells = [
                    report
                        .time
                        .with_timezone(&Local)
                        .format("%H:%M:%S%.6f")
                        .to_string(),
                    kind_name(e.kind).to_owned(),
                    escape_bytes(user.as_bytes()),
                    escape_bytes(&e.comm),
                    e.pid.to_string(),
                    format!(
                        "{}{}",
                        e.proto.name(),
                        match e.family {
                            Family::Ipv4 => "4",
                            Family::Ipv6 => "6",
                        }
                    ),
                    socket_address(e.addr, e.port),
                ];
                self.row(&cells)
            }
        }
    }

    /// Records the kernel could not deliver: never silent.
    pub fn lost(&mut self, count: u64, total: u64, time: DateTime<Utc>) -> io::Result<()> {
        if self.format == Format::Json {
            let line = JsonLost {
                time: rfc3339(time),
                event: "lost",
                count,
                total,
            };
            serde_json::to_writer(&mut self.out, &line)?;
            self.out.write_all(b"\n")?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    fn row(&mut self, cells: &[String; 7]) -> io::Result<()> {
        let mut line = String::with_capacity(100);
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

fn json_event<'a>(report: &Report<'a>, sock_id: u64) -> JsonEvent<'a> {
    let e = report.event;
    let p = report.process;
    JsonEvent {
        time: rfc3339(report.time),
        ktime_ns: e.ktime_ns,
        seen_ktime_ns: report.seen_ktime_ns,
        event: kind_name(e.kind),
        proto: e.proto.name(),
        family: e.family.name(),
        addr: e.addr.to_string(),
        port: e.port,
        pid: e.pid,
        tid: e.tid,
        ppid: p.ppid,
        comm: escape_bytes(&e.comm),
        exe: p.exe.as_deref().map(escape_bytes),
        cmdline: p
            .cmdline
            .as_ref()
            .map(|argv| argv.iter().map(|a| escape_bytes(a)).collect()),
        uid: e.uid,
        gid: e.gid,
        user: report.user,
        cgroup_id: e.cgroup_id,
        sock_id,
    }
}

pub fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `127.0.0.1:80`, `[::1]:80`.
pub fn socket_address(addr: IpAddr, port: u16) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use watcher_common::EventKind;

    use super::*;
    use crate::events::Proto;

    fn event(comm: &[u8]) -> SocketEvent {
        SocketEvent {
            kind: EventKind::Listen,
            ktime_ns: 5,
            cgroup_id: 1,
            sock_id: 2,
            pid: 4242,
            tid: 4243,
            uid: 1000,
            gid: 1000,
            comm: comm.to_vec(),
            proto: Proto::Tcp,
            family: Family::Ipv4,
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8080,
        }
    }

    fn print(format: Format, event: &SocketEvent, process: &ProcessInfo) -> String {
        let mut printer = Printer::new(format, Vec::new());
        printer.header().unwrap();
        printer
            .report(&Report {
                event,
                process,
                user: Some("alice"),
                time: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
                seen_ktime_ns: 6,
            })
            .unwrap();
        String::from_utf8(printer.out).unwrap()
    }

    #[test]
    fn hostile_comm_and_argv_stay_on_one_line() {
        let process = ProcessInfo {
            ppid: Some(1),
            exe: Some(b"/tmp/x\nFAKE".to_vec()),
            cmdline: Some(vec![b"a\nb".to_vec(), b"\x1b[2J".to_vec()]),
        };
        let e = event(b"evil\n12:00 listen");
        let table = print(Format::Table, &e, &process);
        assert_eq!(table.lines().count(), 2, "{table}");
        let json = print(Format::Json, &e, &process);
        assert_eq!(json.lines().count(), 1);
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["comm"], "evil\\n12:00 listen");
        assert_eq!(value["exe"], "/tmp/x\\nFAKE");
        assert_eq!(value["cmdline"][1], "\\x1b[2J");
    }

    #[test]
    fn unknown_process_fields_are_null() {
        let json = print(Format::Json, &event(b"gone"), &ProcessInfo::default());
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(value["exe"].is_null() && value["cmdline"].is_null() && value["ppid"].is_null());
        assert_eq!(value["pid"], 4242);
        assert_eq!(value["time"], "2023-11-14T22:13:20.000000Z");
        assert_ne!(value["sock_id"], 2, "the kernel's identity is hashed");
    }

    #[test]
    fn table_columns_line_up() {
        let table = print(Format::Table, &event(b"a-very-long-command-name"), &ProcessInfo::default());
        let mut lines = table.lines();
        let header = lines.next().unwrap();
        let row = lines.next().unwrap();
        for name in ["EVENT", "USER", "COMMAND", "PID", "PROTO", "LOCAL-ADDRESS"] {
            let col = header.find(name).unwrap();
            assert_eq!(&row[col - 1..col], " ", "column {name} in {row:?}");
            assert_ne!(&row[col..=col], " ", "column {name} in {row:?}");
        }
        assert!(row.ends_with("127.0.0.1:8080"));
    }
}
