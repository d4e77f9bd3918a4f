//! A live event with everything known about it: the decoded record, its
//! process (from the process table), its cgroup, the socket options set on
//! its fd. What every sink receives for a kernel event.
use std::net::IpAddr;

use chrono::{DateTime, Utc};

use crate::{
    enrich::socket_options::{FdFacts, PassiveSocket},
    host::{cgroups::CgroupName, process::ProcessInfo},
    model::{
        event_name::EventName,
        socket::{Family, Proto},
    },
    record::decode::{AcceptEvent, DeniedEvent, Filter, SockAddr, SocketEvent, SocketKind, Task},
};

/// Why a bind was refused, as the `denied` event says it (filled in by
/// the daemon's enforcement, which knows the rules it put in the kernel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denial {
    /// The rule that gives the port to someone else; None when no rule covers it.
    pub rule: Option<String>,
    pub reason: String,
}

/// An event with everything known about its process.
pub struct Report<'a> {
    pub task: &'a Task,
    pub process: &'a ProcessInfo,
    pub user: Option<&'a str>,
    pub time: DateTime<Utc>,
    /// CLOCK_MONOTONIC when userspace decoded the record: minus
    /// `task.ktime_ns`, how long the event took to reach watcher.
    pub seen_ktime_ns: u64,
    /// The task's cgroup, when it could be named.
    pub cgroup: Option<&'a CgroupName>,
    pub what: What<'a>,
}

/// What happened, by kind of event.
pub enum What<'a> {
    /// listen, bind, close; with what setsockopt() said of its fd.
    Socket {
        event: &'a SocketEvent,
        fd_facts: Option<&'a FdFacts>,
    },
    /// raw_socket, packet_socket.
    PassiveSocket {
        fd: i32,
        socket: PassiveSocket,
    },
    /// filter_attached; `socket` when the fd is a raw or packet socket watcher saw made.
    FilterAttached {
        fd: i32,
        optname: u32,
        filter: &'a Filter,
        socket: Option<PassiveSocket>,
    },
    BindFailed {
        fd: i32,
        errno: u32,
        addr: Option<&'a SockAddr>,
    },
    ListenFailed {
        fd: i32,
        errno: u32,
        backlog: u32,
    },
    /// listen or close of a UNIX socket; bind of a UNIX datagram socket to a name.
    Unix {
        kind: SocketKind,
        fd: i32,
        backlog: Option<u32>,
        /// SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET; 0 when unknown.
        sock_type: u32,
        path: &'a [u8],
    },
    Accept(&'a AcceptEvent),
    /// A bind() enforcement refused; `why` is filled in by the daemon,
    /// which knows the rules that filled the kernel's maps.
    Denied {
        event: &'a DeniedEvent,
        why: Option<&'a Denial>,
    },
}

impl What<'_> {
    pub fn event_name(&self) -> EventName {
        match self {
            Self::Socket { event, .. } => event.kind.name(),
            Self::PassiveSocket { socket, .. } if socket.family == Family::Packet => EventName::PacketSocket,
            Self::PassiveSocket { .. } => EventName::RawSocket,
            Self::FilterAttached { .. } => EventName::FilterAttached,
            Self::BindFailed { .. } => EventName::BindFailed,
            Self::ListenFailed { .. } => EventName::ListenFailed,
            Self::Unix { kind, .. } => kind.name(),
            Self::Accept(_) => EventName::Accept,
            Self::Denied { .. } => EventName::Denied,
        }
    }

    /// The protocol, for filters and the table; None when unknown.
    pub fn proto(&self) -> Option<Proto> {
        match self {
            Self::Socket { event, .. } => Some(event.proto),
            Self::PassiveSocket { socket, .. } => Some(passive_proto(socket)),
            Self::FilterAttached { socket, .. } => socket.as_ref().map(passive_proto),
            Self::BindFailed { .. } | Self::ListenFailed { .. } => None,
            Self::Unix { .. } => Some(Proto::Unix),
            Self::Accept(_) => Some(Proto::Tcp),
            Self::Denied { event, .. } => Some(event.proto),
        }
    }

    pub fn family(&self) -> Option<Family> {
        match self {
            Self::Socket { event, .. } => Some(event.family),
            Self::PassiveSocket { socket, .. } => Some(socket.family),
            Self::FilterAttached { socket, .. } => socket.map(|s| s.family),
            Self::BindFailed { addr: Some(SockAddr::Inet { addr, .. }), .. } => Some(ip_family(*addr)),
            Self::BindFailed { addr: Some(SockAddr::Unix(_)), .. } | Self::Unix { .. } => Some(Family::Unix),
            Self::Accept(a) => a.local.map(|(addr, _)| ip_family(addr)),
            Self::Denied { event, .. } => Some(event.family),
            _ => None,
        }
    }

    pub fn port(&self) -> Option<u16> {
        match self {
            Self::Socket { event, .. } => Some(event.port),
            Self::BindFailed { addr: Some(SockAddr::Inet { port, .. }), .. } => Some(*port),
            Self::Accept(a) => a.local.map(|(_, port)| port),
            Self::Denied { event, .. } => match event.target {
                Some(SockAddr::Inet { port, .. }) => Some(port),
                _ => None,
            },
            _ => None,
        }
    }
}

pub fn ip_family(addr: IpAddr) -> Family {
    match addr {
        IpAddr::V4(_) => Family::Ipv4,
        IpAddr::V6(_) => Family::Ipv6,
    }
}

pub fn passive_proto(socket: &PassiveSocket) -> Proto {
    if socket.family == Family::Packet { Proto::Packet } else { Proto::Raw }
}
