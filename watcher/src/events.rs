//! Decoding of ring-buffer records into [`Record`]s: the one place where
//! bytes from the kernel become Rust values.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use watcher_common::{
    AF_INET, AF_INET6, ARGV_SLOTS, EXEC_ARGS_MORE, EventKind, ExecArgsRecord, ExecRecord,
    IPPROTO_TCP, IPPROTO_UDP, ProcessRecord, RecordHeader, SocketRecord,
};

use crate::escape::trim_nul;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    /// Another L4 protocol bound through the inet hooks (SCTP, raw IP…).
    Other(u32),
}

impl Proto {
    fn from_ipproto(protocol: u32) -> Self {
        match protocol {
            IPPROTO_TCP => Self::Tcp,
            IPPROTO_UDP => Self::Udp,
            other => Self::Other(other),
        }
    }

    pub fn name(self) -> String {
        match self {
            Self::Tcp => "tcp".into(),
            Self::Udp => "udp".into(),
            Self::Other(n) => format!("ipproto-{n}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
        }
    }
}

/// A socket event as the kernel saw it, before the process is looked up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketEvent {
    pub kind: EventKind,
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    pub sock_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Raw bytes of the task's comm: a process chooses it, so it is
    /// escaped only when printed.
    pub comm: Vec<u8>,
    pub proto: Proto,
    pub family: Family,
    pub addr: IpAddr,
    pub port: u16,
}

/// One record from the kernel, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Socket(SocketEvent),
    /// `parent` forked `child` (a thread's tid when the clone made a thread).
    Fork { parent: Task, child: u32 },
    /// A task exited; `group_dead` when it was the process's last thread.
    Exit { task: Task, group_dead: bool },
    /// argv of an exec that is starting; `complete` is false when arguments
    /// past the kernel's slots were left out or one was cut.
    ExecArgs { task: Task, args: Vec<Vec<u8>>, complete: bool },
    /// An exec succeeded: `task` is the process after it (new comm);
    /// `old_tid` called execve (differs from the pid when a thread did).
    Exec { task: Task, old_tid: u32, filename: Vec<u8> },
}

/// Who a record is about, as the kernel captured it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: Vec<u8>,
}

impl Task {
    fn from_header(h: &RecordHeader) -> Self {
        Self {
            ktime_ns: h.ktime_ns,
            cgroup_id: h.cgroup_id,
            pid: h.tgid,
            tid: h.tid,
            uid: h.uid,
            gid: h.gid,
            comm: trim_nul(&h.comm).to_vec(),
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Size { kind: Option<EventKind>, len: usize },
    Kind(u32),
    Family(u16),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Size { kind: Some(kind), len } => {
                write!(f, "{kind:?} record of {len} bytes, expected {}", record_size(*kind))
            }
            Self::Size { kind: None, len } => write!(f, "record of {len} bytes, shorter than a header"),
            Self::Kind(k) => write!(f, "unknown event kind {k}"),
            Self::Family(fam) => write!(f, "unknown address family {fam}"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn record_size(kind: EventKind) -> usize {
    match kind {
        EventKind::Listen | EventKind::Bind | EventKind::Close => size_of::<SocketRecord>(),
        EventKind::Fork | EventKind::Exit => size_of::<ProcessRecord>(),
        EventKind::ExecArgs => size_of::<ExecArgsRecord>(),
        EventKind::Exec => size_of::<ExecRecord>(),
    }
}

/// Reads a `T` from the start of `bytes`.
///
/// # Safety
/// `T` must be plain old data (any bit pattern valid), as the records in
/// watcher-common are; `bytes` must hold at least `size_of::<T>()` bytes.
unsafe fn read_record<T: aya::Pod>(bytes: &[u8]) -> T {
    debug_assert!(bytes.len() >= size_of::<T>());
    // SAFETY: by the caller; read_unaligned makes no alignment demand.
    unsafe { bytes.as_ptr().cast::<T>().read_unaligned() }
}

impl Record {
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() < size_of::<RecordHeader>() {
            return Err(DecodeError::Size { kind: None, len: bytes.len() });
        }
        // SAFETY: RecordHeader is Pod and the length was checked above.
        let header: RecordHeader = unsafe { read_record(bytes) };
        let kind = EventKind::try_from(header.kind).map_err(DecodeError::Kind)?;
        if bytes.len() != record_size(kind) {
            return Err(DecodeError::Size { kind: Some(kind), len: bytes.len() });
        }
        // SAFETY (each read below): the record type is the one `kind` names
        // and its exact size was checked above.
        Ok(match kind {
            EventKind::Listen | EventKind::Bind | EventKind::Close => {
                Self::Socket(SocketEvent::from_record(kind, &unsafe { read_record(bytes) })?)
            }
            EventKind::Fork | EventKind::Exit => {
                let r: ProcessRecord = unsafe { read_record(bytes) };
                let task = Task::from_header(&r.header);
                if kind == EventKind::Fork {
                    Self::Fork { parent: task, child: r.pid }
                } else {
                    Self::Exit { task, group_dead: r.group_dead != 0 }
                }
            }
            EventKind::ExecArgs => {
                let r: ExecArgsRecord = unsafe { read_record(bytes) };
                let argc = (r.argc as usize).min(ARGV_SLOTS);
                Self::ExecArgs {
                    task: Task::from_header(&r.header),
                    args: r.args[..argc].iter().map(|a| trim_nul(a).to_vec()).collect(),
                    complete: r.header.flags & EXEC_ARGS_MORE == 0 && r.truncated == 0,
                }
            }
            EventKind::Exec => {
                let r: ExecRecord = unsafe { read_record(bytes) };
                let len = (r.filename_len as usize).min(r.filename.len());
                Self::Exec {
                    task: Task::from_header(&r.header),
                    old_tid: r.old_pid,
                    filename: trim_nul(&r.filename[..len]).to_vec(),
                }
            }
        })
    }
}

impl SocketEvent {
    fn from_record(kind: EventKind, record: &SocketRecord) -> Result<Self, DecodeError> {
        let (family, addr) = match record.family {
            AF_INET => {
                let [a, b, c, d, ..] = record.addr;
                (Family::Ipv4, IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
            }
            AF_INET6 => (Family::Ipv6, IpAddr::V6(Ipv6Addr::from(record.addr))),
            other => return Err(DecodeError::Family(other)),
        };
        let h = &record.header;
        Ok(Self {
            kind,
            ktime_ns: h.ktime_ns,
            cgroup_id: h.cgroup_id,
            sock_id: record.sock_id,
            pid: h.tgid,
            tid: h.tid,
            uid: h.uid,
            gid: h.gid,
            comm: trim_nul(&h.comm).to_vec(),
            proto: Proto::from_ipproto(record.protocol),
            family,
            addr,
            port: record.port,
        })
    }
}

pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Listen => "listen",
        EventKind::Bind => "bind",
        EventKind::Close => "close",
        EventKind::Fork => "fork",
        EventKind::Exit => "exit",
        EventKind::ExecArgs => "exec_args",
        EventKind::Exec => "exec",
    }
}

#[cfg(test)]
mod tests {
    use watcher_common::{ARG_BYTES, FILENAME_BYTES};

    use super::*;

    fn header(kind: EventKind) -> RecordHeader {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"python");
        RecordHeader {
            ktime_ns: 42,
            cgroup_id: 7,
            kind: kind as u32,
            tgid: 1000,
            tid: 1001,
            uid: 65534,
            gid: 65534,
            flags: 0,
            comm,
        }
    }

    fn socket() -> SocketRecord {
        SocketRecord {
            header: header(EventKind::Listen),
            sock_id: 99,
            protocol: IPPROTO_TCP,
            sock_type: 1,
            errno: 0,
            addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            family: AF_INET,
            port: 8080,
        }
    }

    fn bytes<T>(record: &T) -> Vec<u8> {
        // SAFETY: the records are Pod without padding.
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(record).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }

    fn decode_socket(record: &SocketRecord) -> Result<SocketEvent, DecodeError> {
        match Record::decode(&bytes(record))? {
            Record::Socket(event) => Ok(event),
            other => panic!("not a socket event: {other:?}"),
        }
    }

    #[test]
    fn decodes_every_socket_field() {
        let event = decode_socket(&socket()).unwrap();
        assert_eq!(event.kind, EventKind::Listen);
        assert_eq!((event.pid, event.tid, event.uid, event.gid), (1000, 1001, 65534, 65534));
        assert_eq!((event.ktime_ns, event.cgroup_id, event.sock_id), (42, 7, 99));
        assert_eq!(event.comm, b"python");
        assert_eq!(event.addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(event.port, 8080);
        assert_eq!(event.proto, Proto::Tcp);
        assert_eq!(event.family, Family::Ipv4);
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(Record::decode(&[0; 3]), Err(DecodeError::Size { kind: None, len: 3 }));
        let mut bad_kind = socket();
        bad_kind.header.kind = 77;
        assert_eq!(Record::decode(&bytes(&bad_kind)), Err(DecodeError::Kind(77)));
        let mut bad_family = socket();
        bad_family.family = 1;
        assert_eq!(decode_socket(&bad_family), Err(DecodeError::Family(1)));
        // A socket kind with a process record's size.
        let mut short = bytes(&socket());
        short.truncate(size_of::<ProcessRecord>());
        assert_eq!(
            Record::decode(&short),
            Err(DecodeError::Size { kind: Some(EventKind::Listen), len: 64 })
        );
    }

    #[test]
    fn ipv6_addresses_keep_their_byte_order() {
        let mut r = socket();
        r.family = AF_INET6;
        r.addr = Ipv6Addr::LOCALHOST.octets();
        assert_eq!(decode_socket(&r).unwrap().addr, IpAddr::V6(Ipv6Addr::LOCALHOST));
    }

    #[test]
    fn decodes_process_records() {
        let fork = ProcessRecord { header: header(EventKind::Fork), pid: 2000, group_dead: 0 };
        let Record::Fork { parent, child } = Record::decode(&bytes(&fork)).unwrap() else {
            panic!()
        };
        assert_eq!((parent.pid, child), (1000, 2000));
        let exit = ProcessRecord { header: header(EventKind::Exit), pid: 1001, group_dead: 1 };
        assert!(matches!(Record::decode(&bytes(&exit)).unwrap(), Record::Exit { group_dead: true, .. }));

        let mut exec = ExecRecord {
            header: header(EventKind::Exec),
            old_pid: 1001,
            filename_len: 8,
            filename: [0; FILENAME_BYTES],
        };
        exec.filename[..8].copy_from_slice(b"/bin/nc\0");
        let Record::Exec { old_tid, filename, .. } = Record::decode(&bytes(&exec)).unwrap() else {
            panic!()
        };
        assert_eq!((old_tid, filename.as_slice()), (1001, b"/bin/nc".as_slice()));

        let mut args = ExecArgsRecord {
            header: header(EventKind::ExecArgs),
            argc: 2,
            truncated: 0,
            args: [[0; ARG_BYTES]; ARGV_SLOTS],
        };
        args.args[0][..2].copy_from_slice(b"nc");
        args.args[1][..3].copy_from_slice(b"-lp");
        let Record::ExecArgs { args: argv, complete, .. } = Record::decode(&bytes(&args)).unwrap()
        else {
            panic!()
        };
        assert_eq!(argv, vec![b"nc".to_vec(), b"-lp".to_vec()]);
        assert!(complete);
        args.header.flags = EXEC_ARGS_MORE;
        args.argc = 99; // never trusted past the slots
        let Record::ExecArgs { args: argv, complete, .. } = Record::decode(&bytes(&args)).unwrap()
        else {
            panic!()
        };
        assert_eq!(argv.len(), ARGV_SLOTS);
        assert!(!complete);
    }
}
