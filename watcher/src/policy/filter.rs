//! The user's filters (`--pid`, `--comm`, `--port`, `--proto`, `-4`, `-6`,
//! `--netns`),
//! applied to decoded events. A single `--pid` is also pushed into the
//! kernel (see `loader::KernelFilter`) so that other processes' events do
//! not even cross the ring buffer.
use std::collections::HashMap;

use crate::{
    enrich::report::What,
    model::socket::{Family, Proto},
    record::decode::Task,
    snapshot::{
        holders::{self, HolderInfo},
        sock_diag::{ExistingSocket, Snapshot},
    },
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtoFilter {
    Tcp,
    Udp,
    /// SOCK_RAW sockets.
    Raw,
    /// AF_PACKET sockets.
    Packet,
    /// UNIX domain sockets.
    Unix,
}

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub pids: Vec<u32>,
    /// Matched against the kernel's comm (at most 15 bytes, as `ps -o comm`).
    pub comms: Vec<String>,
    pub ports: Vec<u16>,
    pub proto: Option<ProtoFilter>,
    pub family: Option<Family>,
    /// Network namespace inodes.
    pub netns: Vec<u32>,
}

impl Filter {
    /// Whether an event passes. An event that has no port (a packet socket)
    /// fails a port filter; one whose protocol the kernel could not tell (a
    /// failed bind) passes a protocol filter rather than hide a port fight.
    pub fn matches(&self, task: &Task, what: &What<'_>) -> bool {
        (self.pids.is_empty() || self.pids.contains(&task.pid))
            && (self.comms.is_empty() || self.comms.iter().any(|c| c.as_bytes() == &*task.comm))
            && (self.ports.is_empty() || what.port().is_some_and(|p| self.ports.contains(&p)))
            && self.proto.is_none_or(|want| {
                what.proto().is_none_or(|proto| match want {
                    ProtoFilter::Tcp => proto == Proto::Tcp,
                    ProtoFilter::Udp => proto == Proto::Udp,
                    ProtoFilter::Raw => proto == Proto::Raw,
                    ProtoFilter::Packet => proto == Proto::Packet,
                    ProtoFilter::Unix => proto == Proto::Unix,
                })
            })
            && self.family.is_none_or(|f| what.family() == Some(f))
            && (self.netns.is_empty() || self.netns.contains(&task.netns))
    }

    /// The tgid the kernel can filter on by itself, when exactly one is asked for.
    pub fn kernel_tgid(&self) -> u32 {
        match self.pids.as_slice() {
            [pid] => *pid,
            _ => 0,
        }
    }
}

/// A socket and one holder of it, or none.
pub type Row<'a> = (&'a ExistingSocket, Option<&'a HolderInfo>);

/// The rows the filter keeps, sockets in the snapshot's order, holders by pid and fd.
pub fn rows<'a>(snapshot: &'a Snapshot, holders: &'a HashMap<u64, Vec<HolderInfo>>, filter: &Filter) -> Vec<Row<'a>> {
    let mut rows = Vec::new();
    for socket in &snapshot.sockets {
        let infos = holders.get(&socket.inode).map(Vec::as_slice).unwrap_or_default();
        rows.extend(holders::rows(infos).map(|h| (socket, h)));
    }
    rows.retain(|(socket, holder)| matches(filter, socket, *holder));
    rows
}

/// `watch`'s filters, for an existing socket: `--pid` and `--comm` keep only
/// rows whose holder matches (so never an unheld socket), `--port` only
/// TCP and UDP sockets, `-4`/`-6` only that IP family.
pub fn matches(filter: &Filter, socket: &ExistingSocket, holder: Option<&HolderInfo>) -> bool {
    (filter.pids.is_empty() || holder.is_some_and(|h| filter.pids.contains(&h.pid)))
        && (filter.comms.is_empty()
            || holder
                .and_then(|h| h.comm.as_deref())
                .is_some_and(|comm| filter.comms.iter().any(|c| c.as_bytes() == comm)))
        && (filter.ports.is_empty() || socket.port().is_some_and(|p| filter.ports.contains(&p)))
        && filter.proto.is_none_or(|want| {
            socket.proto
                == match want {
                    ProtoFilter::Tcp => Proto::Tcp,
                    ProtoFilter::Udp => Proto::Udp,
                    ProtoFilter::Raw => Proto::Raw,
                    ProtoFilter::Packet => Proto::Packet,
                    ProtoFilter::Unix => Proto::Unix,
                }
        })
        && filter.family.is_none_or(|f| socket.family == f)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr};

    use super::*;
    use crate::{
        enrich::socket_options::PassiveSocket,
        record::decode::{SockAddr, SocketEvent, SocketKind},
    };

    fn event() -> SocketEvent {
        SocketEvent {
            kind: SocketKind::Bind,
            task: Task {
                ktime_ns: 1,
                cgroup_id: 1,
                pid: 10,
                tid: 10,
                uid: 0,
                gid: 0,
                netns: 4026531840,
                comm: crate::model::holder::Comm::from(b"socat"),
            },
            sock_id: 1,
            cookie: None,
            proto: Proto::Udp,
            family: Family::Ipv6,
            addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port: 53,
            fd: None,
            backlog: None,
            stopped: false,
        }
    }

    #[test]
    fn every_filter_can_exclude() {
        let e = event();
        let what = What::Socket { event: &e, fd_facts: None };
        let only = |f: Filter| f.matches(&e.task, &what);
        assert!(only(Filter::default()));
        assert!(only(Filter { pids: vec![10], ..Default::default() }));
        assert!(!only(Filter { pids: vec![11], ..Default::default() }));
        assert!(only(Filter { comms: vec!["socat".into()], ..Default::default() }));
        assert!(!only(Filter { comms: vec!["soc".into()], ..Default::default() }));
        assert!(only(Filter { ports: vec![80, 53], ..Default::default() }));
        assert!(!only(Filter { ports: vec![80], ..Default::default() }));
        assert!(only(Filter { proto: Some(ProtoFilter::Udp), ..Default::default() }));
        assert!(!only(Filter { proto: Some(ProtoFilter::Tcp), ..Default::default() }));
        assert!(only(Filter { family: Some(Family::Ipv6), ..Default::default() }));
        assert!(!only(Filter { family: Some(Family::Ipv4), ..Default::default() }));
        assert!(only(Filter { netns: vec![4026531840], ..Default::default() }));
        assert!(!only(Filter { netns: vec![4026532000], ..Default::default() }));
    }

    #[test]
    fn passive_sockets_and_failures() {
        let task = event().task;
        let packet = What::PassiveSocket {
            fd: 3,
            socket: PassiveSocket { family: Family::Packet, sock_type: 3, protocol: 0x300 },
        };
        assert!(Filter { proto: Some(ProtoFilter::Packet), ..Default::default() }.matches(&task, &packet));
        assert!(!Filter { proto: Some(ProtoFilter::Raw), ..Default::default() }.matches(&task, &packet));
        assert!(!Filter { ports: vec![53], ..Default::default() }.matches(&task, &packet));
        assert!(!Filter { family: Some(Family::Ipv4), ..Default::default() }.matches(&task, &packet));
        let addr = SockAddr::Inet { addr: IpAddr::V6(Ipv6Addr::LOCALHOST), port: 80 };
        let failed = What::BindFailed { fd: 3, errno: 98, addr: Some(&addr) };
        assert!(
            Filter { proto: Some(ProtoFilter::Tcp), ports: vec![80], ..Default::default() }.matches(&task, &failed)
        );
        assert!(Filter { family: Some(Family::Ipv6), ..Default::default() }.matches(&task, &failed));
    }

    #[test]
    fn kernel_filters_only_a_single_pid() {
        assert_eq!(Filter { pids: vec![7], ..Default::default() }.kernel_tgid(), 7);
        assert_eq!(Filter { pids: vec![7, 8], ..Default::default() }.kernel_tgid(), 0);
        assert_eq!(Filter::default().kernel_tgid(), 0);
    }
}
