//! The user's filters (`--pid`, `--comm`, `--port`, `--proto`, `-4`, `-6`),
//! applied to decoded events. A single `--pid` is also pushed into the
//! kernel (see `loader::KernelFilter`) so that other processes' events do
//! not even cross the ring buffer.
use crate::events::{Family, Proto, SocketEvent};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProtoFilter {
    Tcp,
    Udp,
}

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub pids: Vec<u32>,
    /// Matched against the kernel's comm (at most 15 bytes, as `ps -o comm`).
    pub comms: Vec<String>,
    pub ports: Vec<u16>,
    pub proto: Option<ProtoFilter>,
    pub family: Option<Family>,
}

impl Filter {
    pub fn matches(&self, event: &SocketEvent) -> bool {
        (self.pids.is_empty() || self.pids.contains(&event.pid))
            && (self.comms.is_empty() || self.comms.iter().any(|c| c.as_bytes() == event.comm))
            && (self.ports.is_empty() || self.ports.contains(&event.port))
            && match self.proto {
                None => true,
                Some(ProtoFilter::Tcp) => event.proto == Proto::Tcp,
                Some(ProtoFilter::Udp) => event.proto == Proto::Udp,
            }
            && self.family.is_none_or(|f| f == event.family)
    }

    /// The tgid the kernel can filter on by itself, when exactly one is asked for.
    pub fn kernel_tgid(&self) -> u32 {
        match self.pids.as_slice() {
            [pid] => *pid,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv6Addr};

    use watcher_common::EventKind;

    use super::*;

    fn event() -> SocketEvent {
        SocketEvent {
            kind: EventKind::Bind,
            ktime_ns: 1,
            cgroup_id: 1,
            sock_id: 1,
            pid: 10,
            tid: 10,
            uid: 0,
            gid: 0,
            comm: b"socat".to_vec(),
            proto: Proto::Udp,
            family: Family::Ipv6,
            addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            port: 53,
        }
    }

    #[test]
    fn every_filter_can_exclude() {
        let e = event();
        assert!(Filter::default().matches(&e));
        let only = |f: Filter| f.matches(&e);
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
    }

    #[test]
    fn kernel_filters_only_a_single_pid() {
        assert_eq!(Filter { pids: vec![7], ..Default::default() }.kernel_tgid(), 7);
        assert_eq!(Filter { pids: vec![7, 8], ..Default::default() }.kernel_tgid(), 0);
        assert_eq!(Filter::default().kernel_tgid(), 0);
    }
}
