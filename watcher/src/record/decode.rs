//! Decoding of ring-buffer records into [`Record`]s: the one place where
//! bytes from the kernel become Rust values.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use watcher_common::{
    AF_INET, AF_INET6, AF_PACKET, AF_UNIX, ARGV_BYTES, AcceptRecord, DENIED_BIND, DENIED_LISTEN, DENIED_SOCKET,
    DeniedRecord, EventKind, ExecArgsRecord, ExecRecord, FILTER_BYTES, OPTVAL_BYTES, PassiveRecord, ProcessRecord,
    RecordHeader, SO_ATTACH_FILTER, SO_ATTACH_REUSEPORT_CBPF, SOCKET_STOPPED, SocketRecord, SockoptRecord,
    SyscallRecord,
};

use crate::model::{
    escape::trim_nul,
    event_name::EventName,
    holder::Comm,
    socket::{Family, Proto},
};

/// Who a record is about, as the kernel captured it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    pub ktime_ns: u64,
    pub cgroup_id: u64,
    pub pid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Network namespace inode (the socket's where the hook had it); 0 if unknown.
    pub netns: u32,
    /// Raw bytes of the task's comm: a process chooses it, so it is
    /// escaped only when printed.
    pub comm: Comm,
}

#[cfg(test)]
impl Task {
    /// A process's main thread named `comm`, every other field 0: what the
    /// unit tests of the later stages feed them.
    pub fn of_process(pid: u32, comm: &[u8]) -> Self {
        Self { ktime_ns: 0, cgroup_id: 0, pid, tid: pid, uid: 0, gid: 0, netns: 0, comm: Comm::new(comm) }
    }
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
            netns: h.netns,
            comm: Comm::new(trim_nul(&h.comm)),
        }
    }
}

/// What a socket event is about: listen, bind, close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketKind {
    Listen,
    Bind,
    Close,
}

impl SocketKind {
    pub fn name(self) -> EventName {
        match self {
            Self::Listen => EventName::Listen,
            Self::Bind => EventName::Bind,
            Self::Close => EventName::Close,
        }
    }
}

/// A listener or bound socket event, as the kernel saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketEvent {
    pub kind: SocketKind,
    pub task: Task,
    pub sock_id: u64,
    /// The socket cookie, when the socket had one (see `SocketRecord::cookie`).
    pub cookie: Option<u64>,
    pub proto: Proto,
    pub family: Family,
    pub addr: IpAddr,
    pub port: u16,
    /// The fd of the bind()/listen() call, when the hook ran inside one.
    pub fd: Option<i32>,
    /// listen()'s backlog, on a listen event from listen().
    pub backlog: Option<u32>,
    /// The kernel stopped the caller at this listen (`kill_unexpected`,
    /// see `SOCKET_STOPPED`).
    pub stopped: bool,
}

/// A local address as a bind() call gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SockAddr {
    Inet {
        addr: IpAddr,
        port: u16,
    },
    /// A UNIX path; abstract names start with a NUL byte.
    Unix(Vec<u8>),
    Other(u16),
}

impl SockAddr {
    /// Parses a `struct sockaddr` of `len` bytes as the caller passed it.
    pub fn parse(bytes: &[u8], len: usize) -> Option<Self> {
        let bytes = &bytes[..len.min(bytes.len())];
        let family = u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?);
        Some(match family {
            AF_INET => {
                let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
                let ip: [u8; 4] = bytes.get(4..8)?.try_into().ok()?;
                Self::Inet { addr: IpAddr::V4(Ipv4Addr::from(ip)), port }
            }
            AF_INET6 => {
                let port = u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?);
                let ip: [u8; 16] = bytes.get(8..24)?.try_into().ok()?;
                Self::Inet { addr: IpAddr::V6(Ipv6Addr::from(ip)), port }
            }
            AF_UNIX => {
                let path = &bytes[2..];
                // A filesystem path ends at its NUL; an abstract name (first
                // byte NUL) is exactly as long as the caller said.
                let path = if path.first() == Some(&0) { path } else { trim_nul(path) };
                Self::Unix(path.to_vec())
            }
            other => Self::Other(other),
        })
    }
}

/// A BPF program attached to a socket with setsockopt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Filter {
    /// Classic BPF: its instruction count and (up to FILTER_BYTES of) its bytes.
    Classic { instructions: u32, bytes: Vec<u8> },
    /// Extended BPF: the program's fd in the attaching process.
    Extended { prog_fd: u32 },
}

/// One record from the kernel, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Socket(SocketEvent),
    /// `parent` forked `child` (a thread's tid when the clone made a thread).
    Fork {
        parent: Task,
        child: u32,
    },
    /// A task exited; `group_dead` when it was the process's last thread.
    Exit {
        task: Task,
        group_dead: bool,
    },
    /// argv of an exec that is starting; `complete` is false when arguments
    /// past the kernel's slots were left out or one was cut.
    ExecArgs {
        task: Task,
        args: Vec<Vec<u8>>,
        complete: bool,
    },
    /// An exec succeeded: `task` is the process after it (new comm);
    /// `old_tid` called execve (differs from the pid when a thread did).
    Exec {
        task: Task,
        old_tid: u32,
        filename: Vec<u8>,
    },
    /// A raw or packet socket was created.
    PassiveSocket {
        task: Task,
        fd: i32,
        family: Family,
        sock_type: u32,
        protocol: u32,
    },
    /// A BPF filter was attached to a socket (`optname` is the SO_ATTACH_* used).
    FilterAttached {
        task: Task,
        fd: i32,
        optname: u32,
        filter: Filter,
    },
    /// A socket option that matters for listeners was set.
    SockoptSet {
        task: Task,
        fd: i32,
        level: u32,
        optname: u32,
        value: Vec<u8>,
    },
    /// socket() returned `fd`, whose options a `SockoptSet` reported:
    /// they belonged to a socket closed since.
    SocketOnFd {
        task: Task,
        fd: i32,
    },
    BindFailed {
        task: Task,
        fd: i32,
        errno: u32,
        addr: Option<SockAddr>,
    },
    ListenFailed {
        task: Task,
        fd: i32,
        errno: u32,
        backlog: u32,
    },
    /// bind() of a UNIX datagram socket to `path` (or an abstract name)
    /// succeeded: such a socket never listens, and waits from here on.
    UnixBind {
        task: Task,
        fd: i32,
        /// SOCK_DGRAM.
        sock_type: u32,
        path: Vec<u8>,
    },
    /// listen() succeeded on a UNIX socket this process bound to `path`.
    UnixListen {
        task: Task,
        fd: i32,
        backlog: u32,
        /// SOCK_STREAM or SOCK_SEQPACKET; 0 when the kernel could not read it.
        sock_type: u32,
        path: Vec<u8>,
    },
    /// close() of the fd of a UNIX listener or named datagram socket.
    UnixClose {
        task: Task,
        fd: i32,
        sock_type: u32,
        path: Vec<u8>,
    },
    Accept(AcceptEvent),
    /// Enforcement refused a bind(), listen() or socket() (the caller got EPERM).
    Denied(DeniedEvent),
}

/// What enforcement refused the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeniedCall {
    /// bind() of a TCP or UDP port (the cgroup bind hooks).
    Bind,
    /// listen() on a TCP port or a UNIX name (BPF LSM).
    Listen,
    /// socket() of a raw or packet socket (BPF LSM).
    Socket,
}

impl DeniedCall {
    pub const fn name(self) -> &'static str {
        match self {
            Self::Bind => "bind",
            Self::Listen => "listen",
            Self::Socket => "socket",
        }
    }
}

/// A call the enforcement programs refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeniedEvent {
    pub task: Task,
    pub call: DeniedCall,
    /// tcp, udp (another IP protocol by number), unix, raw or packet.
    pub proto: Proto,
    pub family: Family,
    /// What the call was for: the address and port asked for (bind) or
    /// bound (a TCP listen), the UNIX name (a UNIX listen); None for socket().
    pub target: Option<SockAddr>,
    pub sock_type: u32,
    /// socket(): its protocol argument (IPPROTO_* of a raw socket, ETH_P_*
    /// in network order of a packet socket); else the socket's IPPROTO_*.
    pub protocol: u32,
    /// The class slot of the port, UNIX name or kind of socket: which rules
    /// cover it (`watcher_common::ENFORCE_NO_RULE`: none).
    pub class: u32,
    /// The caller's executable as the kernel identifies it: (device in the
    /// kernel's encoding, inode); None when it could not be read.
    pub exe_id: Option<(u32, u64)>,
}

/// A connection accepted on `listen_fd` as `fd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptEvent {
    pub task: Task,
    pub listen_fd: i32,
    pub fd: i32,
    /// Whether the caller asked for the peer's address.
    pub peer_requested: bool,
    /// Both ends, (address, port); None when the socket could not be read.
    pub local: Option<(IpAddr, u16)>,
    pub peer: Option<(IpAddr, u16)>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Size {
        kind: Option<EventKind>,
        len: usize,
    },
    Kind(u32),
    Family(u16),
    /// A denied record whose `call` is none of DENIED_*.
    DeniedCall(u32),
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
            Self::DeniedCall(call) => write!(f, "denied record of unknown call {call}"),
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
        EventKind::PassiveSocket | EventKind::FilterAttached => size_of::<PassiveRecord>(),
        EventKind::SockoptSet | EventKind::SocketOnFd => size_of::<SockoptRecord>(),
        EventKind::BindFailed
        | EventKind::ListenFailed
        | EventKind::UnixBind
        | EventKind::UnixListen
        | EventKind::UnixClose => size_of::<SyscallRecord>(),
        EventKind::Accept => size_of::<AcceptRecord>(),
        EventKind::Denied => size_of::<DeniedRecord>(),
    }
}

/// argv from the kernel's copy of the new program's `arg_start..arg_end`:
/// NUL-terminated strings back to back (an empty argument is a lone NUL).
/// Incomplete when the kernel copied less than there was; the last
/// argument is then cut (or, if the copy ended on a NUL, the ones after it
/// are missing).
fn split_argv(r: &ExecArgsRecord) -> (Vec<Vec<u8>>, bool) {
    let len = (r.len as usize).min(ARGV_BYTES);
    let data = &r.args[..len];
    let complete = len > 0 && r.full_len == len as u64;
    let body = data.strip_suffix(&[0]).unwrap_or(data);
    if body.is_empty() && data.is_empty() {
        return (Vec::new(), complete);
    }
    (body.split(|&b| b == 0).map(<[u8]>::to_vec).collect(), complete)
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
        let task = Task::from_header(&header);
        // SAFETY (each read_record below): the record type is the one
        // `kind` names, and its exact size was checked above.
        Ok(match kind {
            EventKind::Listen | EventKind::Bind | EventKind::Close => {
                let r: SocketRecord = unsafe { read_record(bytes) };
                Self::Socket(SocketEvent::from_record(kind, task, &r)?)
            }
            EventKind::Fork => {
                let r: ProcessRecord = unsafe { read_record(bytes) };
                Self::Fork { parent: task, child: r.pid }
            }
            EventKind::Exit => {
                let r: ProcessRecord = unsafe { read_record(bytes) };
                Self::Exit { task, group_dead: r.group_dead != 0 }
            }
            EventKind::ExecArgs => {
                let r: ExecArgsRecord = unsafe { read_record(bytes) };
                let (args, complete) = split_argv(&r);
                // Keyed like the exec record's old_tid: the thread that exec'd.
                Self::ExecArgs { task: Task { tid: r.old_pid, ..task }, args, complete }
            }
            EventKind::Exec => {
                let r: ExecRecord = unsafe { read_record(bytes) };
                let len = (r.filename_len as usize).min(r.filename.len());
                Self::Exec { task, old_tid: r.old_pid, filename: trim_nul(&r.filename[..len]).to_vec() }
            }
            EventKind::PassiveSocket => {
                let r: PassiveRecord = unsafe { read_record(bytes) };
                Self::PassiveSocket {
                    task,
                    fd: r.fd,
                    family: Family::from_af(r.family as u16),
                    sock_type: r.sock_type,
                    protocol: r.protocol,
                }
            }
            EventKind::FilterAttached => {
                let r: PassiveRecord = unsafe { read_record(bytes) };
                let filter = match r.optname {
                    SO_ATTACH_FILTER | SO_ATTACH_REUSEPORT_CBPF => {
                        let len = (r.filter_len as usize * 8).min(FILTER_BYTES);
                        Filter::Classic { instructions: r.filter_len, bytes: r.filter[..len].to_vec() }
                    }
                    _ => Filter::Extended { prog_fd: r.filter_len },
                };
                Self::FilterAttached { task, fd: r.fd, optname: r.optname, filter }
            }
            EventKind::SockoptSet => {
                let r: SockoptRecord = unsafe { read_record(bytes) };
                let len = (r.optlen as usize).min(OPTVAL_BYTES);
                Self::SockoptSet { task, fd: r.fd, level: r.level, optname: r.optname, value: r.value[..len].to_vec() }
            }
            EventKind::SocketOnFd => {
                let r: SockoptRecord = unsafe { read_record(bytes) };
                Self::SocketOnFd { task, fd: r.fd }
            }
            EventKind::BindFailed => {
                let r: SyscallRecord = unsafe { read_record(bytes) };
                Self::BindFailed { task, fd: r.fd, errno: r.errno, addr: SockAddr::parse(&r.addr, r.addr_len as usize) }
            }
            EventKind::ListenFailed => {
                let r: SyscallRecord = unsafe { read_record(bytes) };
                Self::ListenFailed { task, fd: r.fd, errno: r.errno, backlog: r.backlog }
            }
            EventKind::Accept => {
                let r: AcceptRecord = unsafe { read_record(bytes) };
                let ends = |local: [u8; 16], port: u16| match r.family {
                    AF_INET => {
                        let [a, b, c, d, ..] = local;
                        Some((IpAddr::V4(Ipv4Addr::new(a, b, c, d)), port))
                    }
                    AF_INET6 => Some((IpAddr::V6(Ipv6Addr::from(local)), port)),
                    _ => None,
                };
                Self::Accept(AcceptEvent {
                    task,
                    listen_fd: r.listen_fd,
                    fd: r.fd,
                    peer_requested: r.peer_requested != 0,
                    local: ends(r.local_addr, r.local_port),
                    peer: ends(r.peer_addr, r.peer_port),
                })
            }
            EventKind::Denied => {
                let r: DeniedRecord = unsafe { read_record(bytes) };
                let call = match r.call {
                    DENIED_BIND => DeniedCall::Bind,
                    DENIED_LISTEN => DeniedCall::Listen,
                    DENIED_SOCKET => DeniedCall::Socket,
                    other => return Err(DecodeError::DeniedCall(other)),
                };
                let (proto, target) = match (call, r.family) {
                    (DeniedCall::Socket, f) if u32::from(f) == AF_PACKET => (Proto::Packet, None),
                    (DeniedCall::Socket, AF_INET | AF_INET6) => (Proto::Raw, None),
                    (DeniedCall::Socket, other) => return Err(DecodeError::Family(other)),
                    (DeniedCall::Listen, AF_UNIX) => {
                        let len = (r.path_len as usize).min(r.path.len());
                        (Proto::Unix, Some(SockAddr::Unix(r.path[..len].to_vec())))
                    }
                    (_, family) => {
                        let (_, addr) = inet_address(family, r.addr)?;
                        (Proto::from_ipproto(r.protocol), Some(SockAddr::Inet { addr, port: r.port }))
                    }
                };
                Self::Denied(DeniedEvent {
                    task,
                    call,
                    proto,
                    family: Family::from_af(r.family),
                    target,
                    sock_type: r.sock_type,
                    protocol: r.protocol,
                    class: r.class,
                    exe_id: (r.exe_ino != 0).then_some((r.exe_dev, r.exe_ino)),
                })
            }
            EventKind::UnixBind | EventKind::UnixListen | EventKind::UnixClose => {
                let r: SyscallRecord = unsafe { read_record(bytes) };
                let path = match SockAddr::parse(&r.addr, r.addr_len as usize) {
                    Some(SockAddr::Unix(path)) => path,
                    _ => return Err(DecodeError::Family(u16::from_ne_bytes([r.addr[0], r.addr[1]]))),
                };
                let (fd, sock_type) = (r.fd, r.sock_type);
                match kind {
                    EventKind::UnixBind => Self::UnixBind { task, fd, sock_type, path },
                    EventKind::UnixListen => Self::UnixListen { task, fd, backlog: r.backlog, sock_type, path },
                    _ => Self::UnixClose { task, fd, sock_type, path },
                }
            }
        })
    }
}

impl SocketEvent {
    fn from_record(kind: EventKind, task: Task, record: &SocketRecord) -> Result<Self, DecodeError> {
        let (family, addr) = inet_address(record.family, record.addr)?;
        let kind = match kind {
            EventKind::Listen => SocketKind::Listen,
            EventKind::Bind => SocketKind::Bind,
            _ => SocketKind::Close,
        };
        Ok(Self {
            kind,
            task,
            sock_id: record.sock_id,
            cookie: (record.cookie != 0).then_some(record.cookie),
            proto: Proto::from_ipproto(record.protocol),
            family,
            addr,
            port: record.port,
            fd: (record.fd >= 0).then_some(record.fd),
            backlog: (kind == SocketKind::Listen && record.fd >= 0).then_some(record.backlog),
            stopped: record.flags & SOCKET_STOPPED != 0,
        })
    }
}

/// An AF_INET or AF_INET6 address as the records carry it (IPv4 in the
/// first four bytes, network order).
fn inet_address(family: u16, addr: [u8; 16]) -> Result<(Family, IpAddr), DecodeError> {
    match family {
        AF_INET => {
            let [a, b, c, d, ..] = addr;
            Ok((Family::Ipv4, IpAddr::V4(Ipv4Addr::new(a, b, c, d))))
        }
        AF_INET6 => Ok((Family::Ipv6, IpAddr::V6(Ipv6Addr::from(addr)))),
        other => Err(DecodeError::Family(other)),
    }
}

#[cfg(test)]
mod tests {
    use watcher_common::{ARGV_BYTES, FILENAME_BYTES, IPPROTO_TCP, IPPROTO_UDP, SOCKADDR_BYTES};

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
            netns: 4026531840,
            comm,
        }
    }

    fn socket() -> SocketRecord {
        SocketRecord {
            header: header(EventKind::Listen),
            sock_id: 99,
            cookie: 0,
            protocol: IPPROTO_TCP,
            sock_type: 1,
            fd: 3,
            backlog: 128,
            flags: 0,
            addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            family: AF_INET,
            port: 8080,
        }
    }

    fn bytes<T>(record: &T) -> Vec<u8> {
        // SAFETY: the records are Pod without padding.
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(record).cast::<u8>(), size_of::<T>()) }.to_vec()
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
        assert_eq!(event.kind, SocketKind::Listen);
        let t = &event.task;
        assert_eq!((t.pid, t.tid, t.uid, t.gid), (1000, 1001, 65534, 65534));
        assert_eq!((t.ktime_ns, t.cgroup_id, event.sock_id, t.netns), (42, 7, 99, 4026531840));
        assert_eq!(event.cookie, None, "0: the socket had no cookie");
        let with_cookie = decode_socket(&SocketRecord { cookie: 5, ..socket() }).unwrap();
        assert_eq!(with_cookie.cookie, Some(5));
        assert_eq!(t.comm, b"python");
        assert_eq!(event.addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(event.port, 8080);
        assert_eq!(event.proto, Proto::Tcp);
        assert_eq!(event.family, Family::Ipv4);
        assert_eq!((event.fd, event.backlog), (Some(3), Some(128)));
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
        let mut short = bytes(&socket());
        short.truncate(size_of::<ProcessRecord>());
        assert_eq!(Record::decode(&short), Err(DecodeError::Size { kind: Some(EventKind::Listen), len: 64 }));
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
        let Record::Fork { parent, child } = Record::decode(&bytes(&fork)).unwrap() else { panic!() };
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
        let Record::Exec { old_tid, filename, .. } = Record::decode(&bytes(&exec)).unwrap() else { panic!() };
        assert_eq!((old_tid, filename.as_slice()), (1001, b"/bin/nc".as_slice()));

        let argv_of = |text: &[u8], full_len: u64| {
            let mut args = ExecArgsRecord {
                header: header(EventKind::ExecArgs),
                old_pid: 1001,
                len: text.len() as u32,
                full_len,
                args: [0xaa; ARGV_BYTES], // what lies past `len` is never read
            };
            args.args[..text.len()].copy_from_slice(text);
            let Record::ExecArgs { task, args, complete } = Record::decode(&bytes(&args)).unwrap() else { panic!() };
            assert_eq!(task.tid, 1001, "keyed by the thread that exec'd");
            (args.into_iter().map(|a| String::from_utf8(a).unwrap()).collect::<Vec<_>>(), complete)
        };
        assert_eq!(argv_of(b"nc\0-lp\0", 7), (vec!["nc".into(), "-lp".into()], true));
        // An empty argument, and one with a space.
        assert_eq!(argv_of(b"x\0\0a b\0", 7), (vec!["x".into(), "".into(), "a b".into()], true));
        // Cut by the kernel's copy: the last argument is partial.
        assert_eq!(argv_of(b"nc\0-l", 40), (vec!["nc".into(), "-l".into()], false));
        // Nothing copied (the read faulted): no argv, and not complete.
        assert_eq!(argv_of(b"", 7), (vec![], false));
        // len larger than the buffer is never trusted past it.
        let mut big = ExecArgsRecord {
            header: header(EventKind::ExecArgs),
            old_pid: 1,
            len: u32::MAX,
            full_len: u64::MAX,
            args: [b'a'; ARGV_BYTES],
        };
        big.args[ARGV_BYTES - 1] = 0;
        let Record::ExecArgs { args: argv, complete, .. } = Record::decode(&bytes(&big)).unwrap() else { panic!() };
        assert_eq!((argv.len(), argv[0].len(), complete), (1, ARGV_BYTES - 1, false));
    }

    #[test]
    fn decodes_filters_and_failures() {
        let mut filter = PassiveRecord {
            header: header(EventKind::FilterAttached),
            fd: 5,
            family: 0,
            sock_type: 0,
            protocol: 0,
            optname: SO_ATTACH_FILTER,
            filter_len: 2,
            filter: [0xab; FILTER_BYTES],
        };
        let Record::FilterAttached { filter: Filter::Classic { instructions, bytes: b }, .. } =
            Record::decode(&bytes(&filter)).unwrap()
        else {
            panic!()
        };
        assert_eq!((instructions, b.len()), (2, 16));
        // A count past what the kernel copied is kept, the bytes are capped.
        filter.filter_len = 1000;
        let Record::FilterAttached { filter: Filter::Classic { instructions, bytes: b }, .. } =
            Record::decode(&bytes(&filter)).unwrap()
        else {
            panic!()
        };
        assert_eq!((instructions, b.len()), (1000, FILTER_BYTES));

        let mut failed = SyscallRecord {
            header: header(EventKind::BindFailed),
            fd: 3,
            errno: 98,
            backlog: 0,
            addr_len: 16,
            sock_type: 0,
            reserved: 0,
            addr: [0; SOCKADDR_BYTES],
        };
        failed.addr[..2].copy_from_slice(&AF_INET.to_ne_bytes());
        failed.addr[2..4].copy_from_slice(&8080u16.to_be_bytes());
        failed.addr[4..8].copy_from_slice(&[127, 0, 0, 1]);
        let Record::BindFailed { errno, addr, .. } = Record::decode(&bytes(&failed)).unwrap() else { panic!() };
        assert_eq!(errno, 98);
        assert_eq!(addr, Some(SockAddr::Inet { addr: IpAddr::V4(Ipv4Addr::LOCALHOST), port: 8080 }));
    }

    fn denied_record() -> DeniedRecord {
        DeniedRecord {
            header: header(EventKind::Denied),
            exe_ino: 1234,
            exe_dev: (8 << 20) | 1,
            protocol: IPPROTO_UDP,
            sock_type: 2,
            class: 3,
            call: DENIED_BIND,
            addr: Ipv6Addr::LOCALHOST.octets(),
            family: AF_INET6,
            port: 53,
            path_len: 0,
            path: [0; watcher_common::UNIX_PATH_BYTES],
        }
    }

    #[test]
    fn decodes_denied_binds() {
        let mut denied = denied_record();
        let Record::Denied(event) = Record::decode(&bytes(&denied)).unwrap() else { panic!() };
        assert_eq!((event.call, event.proto, event.family), (DeniedCall::Bind, Proto::Udp, Family::Ipv6));
        assert_eq!(event.target, Some(SockAddr::Inet { addr: IpAddr::V6(Ipv6Addr::LOCALHOST), port: 53 }));
        assert_eq!((event.class, event.exe_id, event.sock_type), (3, Some(((8 << 20) | 1, 1234)), 2));
        assert_eq!(event.task.pid, 1000);
        denied.exe_ino = 0;
        denied.family = AF_INET;
        denied.addr = [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let Record::Denied(event) = Record::decode(&bytes(&denied)).unwrap() else { panic!() };
        assert_eq!(event.exe_id, None);
        assert_eq!(event.target, Some(SockAddr::Inet { addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), port: 53 }));
        denied.family = 1;
        assert_eq!(Record::decode(&bytes(&denied)), Err(DecodeError::Family(1)));
        denied.call = 7;
        assert_eq!(Record::decode(&bytes(&denied)), Err(DecodeError::DeniedCall(7)));
    }

    #[test]
    fn decodes_denied_listens_and_sockets() {
        let mut unix =
            DeniedRecord { call: DENIED_LISTEN, family: AF_UNIX, protocol: 0, sock_type: 1, ..denied_record() };
        unix.addr = [0; 16];
        unix.port = 0;
        unix.path[..5].copy_from_slice(b"\0name");
        unix.path_len = 5;
        let Record::Denied(event) = Record::decode(&bytes(&unix)).unwrap() else { panic!() };
        assert_eq!((event.call, event.proto, event.family), (DeniedCall::Listen, Proto::Unix, Family::Unix));
        assert_eq!(event.target, Some(SockAddr::Unix(b"\0name".to_vec())));

        let tcp = DeniedRecord { call: DENIED_LISTEN, protocol: IPPROTO_TCP, sock_type: 1, ..denied_record() };
        let Record::Denied(event) = Record::decode(&bytes(&tcp)).unwrap() else { panic!() };
        assert_eq!((event.call, event.proto), (DeniedCall::Listen, Proto::Tcp));

        let packet = DeniedRecord {
            call: DENIED_SOCKET,
            family: AF_PACKET as u16,
            protocol: u32::from(0x0003u16.to_be()),
            sock_type: 3,
            ..denied_record()
        };
        let Record::Denied(event) = Record::decode(&bytes(&packet)).unwrap() else { panic!() };
        assert_eq!((event.call, event.proto, event.family), (DeniedCall::Socket, Proto::Packet, Family::Packet));
        assert_eq!((event.target, event.protocol), (None, 0x0300));
        let raw = DeniedRecord { call: DENIED_SOCKET, family: AF_INET, protocol: 1, sock_type: 3, ..denied_record() };
        let Record::Denied(event) = Record::decode(&bytes(&raw)).unwrap() else { panic!() };
        assert_eq!((event.proto, event.family, event.target), (Proto::Raw, Family::Ipv4, None));
    }

    #[test]
    fn decodes_unix_datagram_binds_and_closes() {
        let mut record = SyscallRecord {
            header: header(EventKind::UnixBind),
            fd: 4,
            errno: 0,
            backlog: 0,
            addr_len: 2 + 8,
            sock_type: 2,
            reserved: 0,
            addr: [0; SOCKADDR_BYTES],
        };
        record.addr[..2].copy_from_slice(&AF_UNIX.to_ne_bytes());
        record.addr[2..10].copy_from_slice(b"/dev/log");
        assert_eq!(
            Record::decode(&bytes(&record)).unwrap(),
            Record::UnixBind {
                task: Task::from_header(&record.header),
                fd: 4,
                sock_type: 2,
                path: b"/dev/log".to_vec()
            }
        );
        record.header.kind = EventKind::UnixClose as u32;
        let Record::UnixClose { fd, sock_type, path, .. } = Record::decode(&bytes(&record)).unwrap() else { panic!() };
        assert_eq!((fd, sock_type, path.as_slice()), (4, 2, b"/dev/log".as_slice()));
        record.addr[..2].copy_from_slice(&AF_INET.to_ne_bytes());
        assert_eq!(Record::decode(&bytes(&record)), Err(DecodeError::Family(AF_INET)));
    }

    #[test]
    fn unix_addresses_filesystem_and_abstract() {
        let mut raw = AF_UNIX.to_ne_bytes().to_vec();
        raw.extend_from_slice(b"/dev/printer\0\0\0");
        assert_eq!(SockAddr::parse(&raw, raw.len()), Some(SockAddr::Unix(b"/dev/printer".to_vec())));
        let mut abs = AF_UNIX.to_ne_bytes().to_vec();
        abs.extend_from_slice(b"\0name");
        assert_eq!(SockAddr::parse(&abs, abs.len()), Some(SockAddr::Unix(b"\0name".to_vec())));
        assert_eq!(SockAddr::parse(&[1], 1), None);
    }
}
