//! Records that cross the ring buffer from the kernel programs to userspace,
//! and the constants both sides agree on. Nothing else lives here.
#![no_std]

/// Name of the one ring buffer every program writes to.
pub const EVENTS_MAP: &str = "EVENTS";
/// Name of the per-CPU counter of records that could not be reserved.
pub const LOST_MAP: &str = "LOST";
/// Bytes in the ring buffer (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 4 << 20;
/// How many bound UDP sockets the kernel side remembers, so that it reports
/// the close of those (and only those) without sending every socket release
/// on the host through the ring buffer.
pub const BOUND_SOCKETS_MAX: u32 = 65_536;

/// Global set by the loader: report only this tgid (0 = every process).
pub const FILTER_TGID_GLOBAL: &str = "FILTER_TGID";

pub const TASK_COMM_LEN: usize = 16;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u32 = 6;
pub const IPPROTO_UDP: u32 = 17;

/// What happened to a socket. Crosses the ring buffer as a `u32`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A TCP socket entered LISTEN.
    Listen = 1,
    /// A bind() succeeded (TCP or UDP); the port is the one the kernel assigned.
    Bind = 2,
    /// A TCP listener left LISTEN, or an explicitly bound UDP socket was released.
    Close = 3,
}

impl TryFrom<u32> for EventKind {
    type Error = u32;

    fn try_from(value: u32) -> Result<Self, Self::Error> {
        match value {
            1 => Ok(Self::Listen),
            2 => Ok(Self::Bind),
            3 => Ok(Self::Close),
            other => Err(other),
        }
    }
}

/// One socket event, as the kernel fills it.
///
/// Fields are ordered by size so that the layout has no padding (the kernel
/// and userspace must agree byte for byte); the assert below keeps it so.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SocketRecord {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, in nanoseconds.
    pub ktime_ns: u64,
    /// `bpf_get_current_cgroup_id()` of the calling task (cgroup v2).
    pub cgroup_id: u64,
    /// Identifies the socket across its events: the `struct sock` address
    /// for TCP state changes, the socket cookie for bind and UDP close.
    pub sock_id: u64,
    pub tgid: u32,
    pub tid: u32,
    pub uid: u32,
    pub gid: u32,
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub protocol: u32,
    /// `SOCK_STREAM`, `SOCK_DGRAM`, … (0 where the hook does not say).
    pub sock_type: u32,
    /// IPv4 addresses use the first four bytes, in network order.
    pub addr: [u8; 16],
    pub comm: [u8; TASK_COMM_LEN],
    /// `AF_INET` or `AF_INET6`.
    pub family: u16,
    /// Local port, host byte order.
    pub port: u16,
}

const _: () = assert!(core::mem::size_of::<SocketRecord>() == 88);

#[cfg(feature = "user")]
// SAFETY: SocketRecord is repr(C), has no padding and every bit pattern is valid.
unsafe impl aya::Pod for SocketRecord {}
