//! What a socket is and where it waits: its protocol, its address family,
//! and its local address. One type each, used by live events, the
//! snapshot, the listener table, the allowlist and every output.
use std::{borrow::Cow, net::IpAddr};

use watcher_common::{AF_INET, AF_INET6, AF_PACKET, AF_UNIX, IPPROTO_TCP, IPPROTO_UDP};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    /// A SOCK_RAW socket (of any family).
    Raw,
    /// An AF_PACKET socket.
    Packet,
    /// A UNIX domain socket.
    Unix,
    /// Another protocol bound through the inet hooks (SCTP…), by number.
    Other(u32),
}

impl Proto {
    pub fn from_ipproto(protocol: u32) -> Self {
        match protocol {
            IPPROTO_TCP => Self::Tcp,
            IPPROTO_UDP => Self::Udp,
            other => Self::Other(other),
        }
    }

    pub fn name(self) -> String {
        self.known_name().into_owned()
    }

    /// [`Self::name`], allocating only for a protocol known by number.
    pub fn known_name(self) -> Cow<'static, str> {
        match self {
            Self::Tcp => "tcp".into(),
            Self::Udp => "udp".into(),
            Self::Raw => "raw".into(),
            Self::Packet => "packet".into(),
            Self::Unix => "unix".into(),
            Self::Other(n) => format!("ipproto-{n}").into(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
    Unix,
    Packet,
    Other(u16),
}

impl Family {
    pub fn from_af(af: u16) -> Self {
        match af {
            AF_INET => Self::Ipv4,
            AF_INET6 => Self::Ipv6,
            AF_UNIX => Self::Unix,
            f if u32::from(f) == AF_PACKET => Self::Packet,
            other => Self::Other(other),
        }
    }

    pub fn name(self) -> String {
        self.known_name().into_owned()
    }

    /// [`Self::name`], allocating only for a family known by number.
    pub fn known_name(self) -> Cow<'static, str> {
        match self {
            Self::Ipv4 => "ipv4".into(),
            Self::Ipv6 => "ipv6".into(),
            Self::Unix => "unix".into(),
            Self::Packet => "packet".into(),
            Self::Other(n) => format!("af-{n}").into(),
        }
    }
}

/// Where a socket waits, by kind.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Local {
    /// TCP and UDP: the local address and port.
    Inet { addr: IpAddr, port: u16 },
    /// Raw: the local address and the IP protocol it receives (a raw
    /// socket has no port; the kernel shows the protocol in its place).
    Raw { addr: IpAddr, protocol: u16 },
    /// UNIX: the bound name, as bytes; an abstract name begins with NUL.
    Unix { path: Vec<u8> },
    /// Packet: the ethertype it receives, in host order (3 = ETH_P_ALL).
    Packet { protocol: u16 },
}
