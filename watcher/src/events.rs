//! Decoding of ring-buffer records into [`SocketEvent`]s: the one place
//! where bytes from the kernel become Rust values.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use watcher_common::{AF_INET, AF_INET6, EventKind, IPPROTO_TCP, IPPROTO_UDP, SocketRecord};

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

#[derive(Debug, PartialEq, Eq)]
pub enum DecodeError {
    Size(usize),
    Kind(u32),
    Family(u16),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Size(n) => write!(
                f,
                "record of {n} bytes, expected {}",
                size_of::<SocketRecord>()
            ),
            Self::Kind(k) => write!(f, "unknown event kind {k}"),
            Self::Family(fam) => write!(f, "unknown address family {fam}"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl SocketEvent {
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != size_of::<SocketRecord>() {
            return Err(DecodeError::Size(bytes.len()));
        }
        // SAFETY: the length is checked above, SocketRecord is Pod (any bit
        // pattern is valid) and read_unaligned makes no alignment demand.
        let record: SocketRecord = unsafe { bytes.as_ptr().cast::<SocketRecord>().read_unaligned() };
        let kind = EventKind::try_from(record.kind).map_err(DecodeError::Kind)?;
        let (family, addr) = match record.family {
            AF_INET => {
                let [a, b, c, d, ..] = record.addr;
                (Family::Ipv4, IpAddr::V4(Ipv4Addr::new(a, b, c, d)))
            }
            AF_INET6 => (Family::Ipv6, IpAddr::V6(Ipv6Addr::from(record.addr))),
            other => return Err(DecodeError::Family(other)),
        };
        Ok(Self {
            kind,
            ktime_ns: record.ktime_ns,
            cgroup_id: record.cgroup_id,
            sock_id: record.sock_id,
            pid: record.tgid,
            tid: record.tid,
            uid: record.uid,
            gid: record.gid,
            comm: trim_nul(&record.comm).to_vec(),
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SocketRecord {
        let mut comm = [0u8; 16];
        comm[..6].copy_from_slice(b"python");
        SocketRecord {
            ktime_ns: 42,
            cgroup_id: 7,
            sock_id: 99,
            tgid: 1000,
            tid: 1001,
            uid: 65534,
            gid: 65534,
            kind: EventKind::Listen as u32,
            protocol: IPPROTO_TCP,
            sock_type: 1,
            addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            comm,
            family: AF_INET,
            port: 8080,
        }
    }

    fn bytes(record: &SocketRecord) -> Vec<u8> {
        // SAFETY: SocketRecord is Pod without padding.
        unsafe {
            std::slice::from_raw_parts(
                std::ptr::from_ref(record).cast::<u8>(),
                size_of::<SocketRecord>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn decodes_every_field() {
        let event = SocketEvent::decode(&bytes(&record())).unwrap();
        assert_eq!(event.kind, EventKind::Listen);
        assert_eq!(event.pid, 1000);
        assert_eq!(event.tid, 1001);
        assert_eq!(event.comm, b"python");
        assert_eq!(event.addr, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(event.port, 8080);
        assert_eq!(event.proto, Proto::Tcp);
        assert_eq!(event.family, Family::Ipv4);
    }

    #[test]
    fn rejects_bad_records() {
        assert_eq!(SocketEvent::decode(&[0; 3]), Err(DecodeError::Size(3)));
        let mut bad_kind = record();
        bad_kind.kind = 77;
        assert_eq!(SocketEvent::decode(&bytes(&bad_kind)), Err(DecodeError::Kind(77)));
        let mut bad_family = record();
        bad_family.family = 1;
        assert_eq!(SocketEvent::decode(&bytes(&bad_family)), Err(DecodeError::Family(1)));
    }

    #[test]
    fn ipv6_addresses_keep_their_byte_order() {
        let mut r = record();
        r.family = AF_INET6;
        r.addr = Ipv6Addr::LOCALHOST.octets();
        let event = SocketEvent::decode(&bytes(&r)).unwrap();
        assert_eq!(event.addr, IpAddr::V6(Ipv6Addr::LOCALHOST));
    }
}
