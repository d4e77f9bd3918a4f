//! Sockets that already exist when watcher starts, and the processes that
//! hold them: what `watcher list` prints, and what `watch` cannot see
//! because it only hears about sockets made after it attached.
//!
//! Where each kind comes from, all in the network namespace watcher runs in:
//! - TCP listeners and bound UDP sockets: NETLINK_SOCK_DIAG's inet_diag,
//!   through the `netlink-packet-sock-diag` crate (TCP in LISTEN; UDP in
//!   CLOSE, which for UDP means bound and not connected, as `ss -lu`).
//! - UNIX sockets: unix_diag through the same crate, with their names:
//!   stream and seqpacket sockets in LISTEN, and bound datagram sockets.
//! - Packet sockets: packet_diag. The crate knows only inet and unix, so the
//!   request (`struct packet_diag_req`) and the answer (`struct
//!   packet_diag_msg` and its PACKET_DIAG_INFO attribute) are laid out here
//!   from `linux/packet_diag.h`, framed by `netlink-packet-core`. A kernel
//!   built without CONFIG_PACKET_DIAG answers ENOENT; then /proc/net/packet
//!   is read instead.
//! - Raw sockets: inet_diag with IPPROTO_RAW reaches raw_diag, which many
//!   kernels do not build (CONFIG_INET_RAW_DIAG; the 6.18 kernel these tests
//!   run on has it unset and answers ENOENT). Then /proc/net/raw and
//!   /proc/net/raw6 are read instead, as `ss -w` does. Both give the same
//!   facts: local address, protocol (a raw socket's "port") and inode.
//!
//! Holders come from one pass over /proc/<pid>/fd: every fd whose link reads
//! `socket:[INODE]` for an inode found above. A socket no process holds (a
//! kernel socket, or one in flight in an SCM_RIGHTS message) has none.
//! Reading other users' fd tables needs CAP_SYS_PTRACE and
//! CAP_DAC_READ_SEARCH (see `privileges::check_list`).
//!
//! The dumps and the /proc pass are not one atomic picture: a socket closed
//! in between is listed without holders, one opened in between is missed.
use std::{
    collections::{HashMap, HashSet},
    fs, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::ffi::OsStrExt as _,
    path::Path,
};

use anyhow::Context as _;
use log::debug;
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    NetlinkSerializable, Nla as _, NlasIterator, ParseableParametrized as _,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, AF_PACKET, IPPROTO_RAW, IPPROTO_TCP, IPPROTO_UDP, SOCK_DIAG_BY_FAMILY},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    unix::{self, ShowFlags, UnixRequest, nlas::UnixDiagName},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

use crate::model::socket::{Family, Local, Proto};

/// unix_diag: ask for the socket's owner uid, and its attribute.
const UDIAG_SHOW_UID: u32 = 0x40;
const UNIX_DIAG_UID: u16 = 9;
const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;
const SOCK_STREAM: u8 = 1;
const SOCK_DGRAM: u8 = 2;
const SOCK_SEQPACKET: u8 = 5;
/// packet_diag_req.pdiag_show: ask for PACKET_DIAG_INFO (the bound ifindex).
const PACKET_SHOW_INFO: u32 = 1;
const PACKET_DIAG_INFO: u16 = 0;
/// Netlink dumps come in datagrams of at most 32 KiB; a bigger buffer
/// never truncates one.
const RECV_BUFFER: usize = 64 * 1024;

/// One socket of this network namespace that waits for others.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExistingSocket {
    pub proto: Proto,
    pub family: Family,
    /// SOCK_STREAM (1), SOCK_DGRAM (2), SOCK_RAW (3), SOCK_SEQPACKET (5).
    pub sock_type: u8,
    pub local: Local,
    /// The interface it is bound to (SO_BINDTODEVICE, or a packet socket's
    /// bind); 0 for none.
    pub ifindex: u32,
    pub inode: u64,
    /// The socket's owner (`sk_uid`): the uid of the task that created it,
    /// kept when that task later drops privileges. sock_diag tells it for
    /// TCP, UDP, raw and (Linux 5.3 and later) UNIX sockets; None for the others.
    pub owner_uid: Option<u32>,
    /// The socket cookie (what `bpf_get_socket_cookie` returns in the
    /// kernel programs, and the live UDP events carry as their socket id):
    /// inet_diag and unix_diag report it, generating it if the socket had
    /// none yet. None where the source does not tell it (/proc/net).
    pub cookie: Option<u64>,
}

impl ExistingSocket {
    pub fn port(&self) -> Option<u16> {
        match self.local {
            Local::Inet { port, .. } => Some(port),
            _ => None,
        }
    }
}

/// A process that holds a socket, and the fd it holds it by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Holder {
    pub pid: u32,
    pub fd: i32,
}

/// How raw and packet sockets were read (see the module comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    SockDiag,
    ProcNet,
}

#[derive(Debug)]
pub struct Snapshot {
    /// Inode of the network namespace the listing ran in.
    pub netns: Option<u64>,
    pub sockets: Vec<ExistingSocket>,
    /// inode → holders, sorted by pid then fd; sockets no process holds are absent.
    pub holders: HashMap<u64, Vec<Holder>>,
    pub raw_source: Source,
    pub packet_source: Source,
    /// Processes whose fd table could not be read (gone, or not permitted).
    pub unreadable: usize,
}

/// Takes the snapshot: the sockets first, then their holders. With
/// `only_pids` non-empty, only those processes' fd tables are read.
pub fn take(proc_root: &Path, only_pids: &[u32]) -> anyhow::Result<Snapshot> {
    let diag = Diag::open().context("opening a NETLINK_SOCK_DIAG socket")?;
    let mut sockets = Vec::new();
    for family in [AF_INET, AF_INET6] {
        sockets.extend(diag.inet(family, IPPROTO_TCP)?);
        sockets.extend(diag.inet(family, IPPROTO_UDP)?);
    }
    sockets.extend(diag.unix()?);

    let mut raw_source = Source::SockDiag;
    let mut raw = Vec::new();
    for family in [AF_INET, AF_INET6] {
        match diag.inet(family, IPPROTO_RAW) {
            Ok(found) => raw.extend(found),
            Err(e) => {
                debug!("raw sockets not available from sock_diag ({e:#}); reading /proc/net/raw");
                raw_source = Source::ProcNet;
                break;
            }
        }
    }
    if raw_source == Source::ProcNet {
        raw = proc_net_raw(proc_root)?;
    }
    sockets.extend(raw);

    let (packet, packet_source) = match diag.packet() {
        Ok(found) => (found, Source::SockDiag),
        Err(e) => {
            debug!("packet sockets not available from sock_diag ({e}); reading /proc/net/packet");
            (proc_net_packet(proc_root)?, Source::ProcNet)
        }
    };
    sockets.extend(packet);
    drop(diag);

    sockets.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
    sockets.dedup_by_key(|s| s.inode);
    let inodes: HashSet<u64> = sockets.iter().map(|s| s.inode).collect();
    let (holders, unreadable) = holders(proc_root, &inodes, only_pids);
    Ok(Snapshot { netns: netns(proc_root), sockets, holders, raw_source, packet_source, unreadable })
}

fn sort_key(s: &ExistingSocket) -> (u8, u8, &Local, u64) {
    let proto = match s.proto {
        Proto::Tcp => 0,
        Proto::Udp => 1,
        Proto::Unix => 2,
        Proto::Raw => 3,
        Proto::Packet => 4,
        Proto::Other(_) => 5,
    };
    let family = match s.family {
        Family::Ipv4 => 0,
        Family::Ipv6 => 1,
        _ => 2,
    };
    (proto, family, &s.local, s.inode)
}

/// The inode of the network namespace this process is in (`net:[N]`).
pub fn netns(proc_root: &Path) -> Option<u64> {
    let link = fs::read_link(proc_root.join("self/ns/net")).ok()?;
    bracketed_number(link.as_os_str().as_bytes(), b"net:[")
}

/// N of `PREFIXN]`.
fn bracketed_number(link: &[u8], prefix: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(prefix)?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// One pass over /proc/<pid>/fd: which processes hold which of `inodes`.
/// Returns them by inode, and how many processes could not be read.
pub fn holders(proc_root: &Path, inodes: &HashSet<u64>, only_pids: &[u32]) -> (HashMap<u64, Vec<Holder>>, usize) {
    let mut found: HashMap<u64, Vec<Holder>> = HashMap::new();
    let mut unreadable = 0;
    let Ok(entries) = fs::read_dir(proc_root) else {
        return (found, unreadable);
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if !only_pids.is_empty() && !only_pids.contains(&pid) {
            continue;
        }
        let fds = match fs::read_dir(entry.path().join("fd")) {
            Ok(fds) => fds,
            // Gone since /proc was listed: not an error.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(_) => {
                unreadable += 1;
                continue;
            }
        };
        let mut denied = false;
        for fd_entry in fds.flatten() {
            let Some(fd) = fd_entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            let link = match fs::read_link(fd_entry.path()) {
                Ok(link) => link,
                Err(e) => {
                    // Closed since the directory was read, or not permitted.
                    denied |= e.kind() == io::ErrorKind::PermissionDenied;
                    continue;
                }
            };
            if let Some(inode) = bracketed_number(link.as_os_str().as_bytes(), b"socket:[")
                && inodes.contains(&inode)
            {
                found.entry(inode).or_default().push(Holder { pid, fd });
            }
        }
        unreadable += usize::from(denied);
    }
    for list in found.values_mut() {
        list.sort_unstable();
    }
    (found, unreadable)
}

/// Whether `pid` still holds socket `inode` as `fd`.
pub fn holds(proc_root: &Path, pid: u32, fd: i32, inode: u64) -> bool {
    fs::read_link(proc_root.join(format!("{pid}/fd/{fd}")))
        .is_ok_and(|link| bracketed_number(link.as_os_str().as_bytes(), b"socket:[") == Some(inode))
}

/// A NETLINK_SOCK_DIAG socket, for one dump request at a time.
struct Diag {
    socket: Socket,
}

/// packet_diag_req, for a dump of every packet socket.
struct PacketDiagRequest;

impl NetlinkSerializable for PacketDiagRequest {
    fn message_type(&self) -> u16 {
        SOCK_DIAG_BY_FAMILY
    }

    fn buffer_len(&self) -> usize {
        20
    }

    fn serialize(&self, buffer: &mut [u8]) {
        // sdiag_family, sdiag_protocol (must be 0), pad, pdiag_ino (0: all),
        // pdiag_show, pdiag_cookie (ignored by dumps).
        buffer[..20].fill(0);
        buffer[0] = AF_PACKET;
        buffer[8..12].copy_from_slice(&PACKET_SHOW_INFO.to_ne_bytes());
        buffer[12..20].fill(0xff);
    }
}

impl Diag {
    fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self { socket })
    }

    /// Sends one dump request and returns the payload of every answer.
    fn dump<P: NetlinkSerializable>(&self, request: P) -> io::Result<Vec<Vec<u8>>> {
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_DUMP;
        header.sequence_number = 1;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
        message.finalize();
        let mut out = vec![0; message.buffer_len()];
        message.serialize(&mut out);
        self.socket.send(&out, 0)?;

        let mut answers = Vec::new();
        let mut buf = Vec::with_capacity(RECV_BUFFER);
        loop {
            buf.clear();
            self.socket.recv(&mut buf, 0)?;
            let mut offset = 0;
            while offset < buf.len() {
                let message = NetlinkBuffer::new_checked(&buf[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("bad netlink message: {e}")))?;
                let length = message.length() as usize;
                let payload = message.payload();
                match message.message_type() {
                    // A dump ends with NLMSG_DONE, whose payload is the
                    // dump's error code (0 when it went through).
                    NLMSG_DONE => {
                        return match errno_at(payload) {
                            Some(code) if code < 0 => Err(io::Error::from_raw_os_error(-code)),
                            _ => Ok(answers),
                        };
                    }
                    NLMSG_ERROR => match errno_at(payload) {
                        Some(code) if code < 0 => return Err(io::Error::from_raw_os_error(-code)),
                        _ => {}
                    },
                    SOCK_DIAG_BY_FAMILY => answers.push(payload.to_vec()),
                    _ => {}
                }
                if length == 0 {
                    break;
                }
                offset += length.div_ceil(4) * 4;
            }
        }
    }

    /// TCP listeners, bound UDP sockets, or raw sockets of one family.
    fn inet(&self, family: u8, protocol: u8) -> anyhow::Result<Vec<ExistingSocket>> {
        let states = match protocol {
            IPPROTO_TCP => StateFlags::LISTEN,
            IPPROTO_UDP => StateFlags::CLOSE,
            _ => StateFlags::all(),
        };
        let request = SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol,
            extensions: ExtensionFlags::empty(),
            states,
            socket_id: if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() },
        });
        let what = format!("{}{}", proto_of(protocol).name(), if family == AF_INET { "4" } else { "6" });
        let answers = self.dump(request).with_context(|| format!("sock_diag dump of {what} sockets"))?;
        let mut found = Vec::new();
        for payload in answers {
            let message = SockDiagMessage::parse_with_param(&payload[..], SOCK_DIAG_BY_FAMILY)
                .map_err(|e| anyhow::anyhow!("decoding a sock_diag answer for {what}: {e}"))?;
            let SockDiagMessage::InetResponse(response) = message else {
                continue;
            };
            let h = &response.header;
            let keep = match protocol {
                IPPROTO_TCP => h.state == TCP_LISTEN,
                IPPROTO_UDP => h.state == TCP_CLOSE && h.socket_id.source_port != 0,
                _ => true,
            };
            if !keep {
                continue;
            }
            let addr = h.socket_id.source_address;
            let (local, sock_type) = match protocol {
                IPPROTO_TCP => (Local::Inet { addr, port: h.socket_id.source_port }, SOCK_STREAM),
                IPPROTO_UDP => (Local::Inet { addr, port: h.socket_id.source_port }, SOCK_DGRAM),
                _ => (Local::Raw { addr, protocol: h.socket_id.source_port }, libc::SOCK_RAW as u8),
            };
            found.push(ExistingSocket {
                proto: proto_of(protocol),
                family: if h.family == AF_INET { Family::Ipv4 } else { Family::Ipv6 },
                sock_type,
                local,
                ifindex: h.socket_id.interface_id,
                inode: u64::from(h.inode),
                owner_uid: Some(h.uid),
                cookie: cookie_of(&h.socket_id.cookie),
            });
        }
        Ok(found)
    }

    /// UNIX stream and seqpacket listeners, and bound datagram sockets.
    fn unix(&self) -> anyhow::Result<Vec<ExistingSocket>> {
        let request = SockDiagMessage::UnixRequest(UnixRequest {
            state_flags: unix::StateFlags::from_bits_retain((1 << TCP_LISTEN) | (1 << TCP_CLOSE)),
            inode: 0,
            // NAME, and the socket's owner uid (UDIAG_SHOW_UID, Linux 5.3),
            // which the crate has no flag for.
            show_flags: ShowFlags::NAME | ShowFlags::from_bits_retain(UDIAG_SHOW_UID),
            cookie: [0xff; 8],
        });
        let answers = self.dump(request).context("sock_diag dump of UNIX sockets")?;
        let mut found = Vec::new();
        for payload in answers {
            let message = SockDiagMessage::parse_with_param(&payload[..], SOCK_DIAG_BY_FAMILY)
                .map_err(|e| anyhow::anyhow!("decoding a sock_diag answer for a UNIX socket: {e}"))?;
            let SockDiagMessage::UnixResponse(response) = message else {
                continue;
            };
            let h = &response.header;
            let owner_uid = response.nlas.iter().find_map(|nla| match nla {
                unix::nlas::Nla::Other(other) if other.kind() == UNIX_DIAG_UID && other.value_len() == 4 => {
                    let mut value = [0u8; 4];
                    other.emit_value(&mut value);
                    Some(u32::from_ne_bytes(value))
                }
                _ => None,
            });
            let path = match response.name() {
                Some(UnixDiagName::Pathname(p)) => Some(p.as_bytes().to_vec()),
                Some(UnixDiagName::Abstract(name)) => Some([&[0][..], name].concat()),
                None => None,
            };
            let keep = match h.kind {
                SOCK_STREAM | SOCK_SEQPACKET => h.state == TCP_LISTEN,
                SOCK_DGRAM => h.state == TCP_CLOSE && path.is_some(),
                _ => false,
            };
            if !keep {
                continue;
            }
            found.push(ExistingSocket {
                proto: Proto::Unix,
                family: Family::Unix,
                sock_type: h.kind,
                local: Local::Unix { path: path.unwrap_or_default() },
                ifindex: 0,
                inode: u64::from(h.inode),
                owner_uid,
                cookie: cookie_of(&h.cookie),
            });
        }
        Ok(found)
    }

    /// Every packet socket (packet_diag).
    fn packet(&self) -> io::Result<Vec<ExistingSocket>> {
        Ok(self.dump(PacketDiagRequest)?.iter().filter_map(|p| parse_packet_diag(p)).collect())
    }
}

/// A sock_diag cookie: two `u32` in host order, the low half first
/// (`sock_diag_save_cookie`); 0 (none) and all-ones (INET_DIAG_NOCOOKIE) are none.
fn cookie_of(raw: &[u8; 8]) -> Option<u64> {
    let low = u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]);
    let high = u32::from_ne_bytes([raw[4], raw[5], raw[6], raw[7]]);
    let cookie = u64::from(high) << 32 | u64::from(low);
    (cookie != 0 && cookie != u64::MAX).then_some(cookie)
}

fn errno_at(payload: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(payload.get(..4)?.try_into().ok()?))
}

fn proto_of(protocol: u8) -> Proto {
    match protocol {
        IPPROTO_TCP => Proto::Tcp,
        IPPROTO_UDP => Proto::Udp,
        _ => Proto::Raw,
    }
}

/// `struct packet_diag_msg` (family, type, num, ino, cookie: 16 bytes) and
/// its attributes, of which PACKET_DIAG_INFO starts with the ifindex.
fn parse_packet_diag(payload: &[u8]) -> Option<ExistingSocket> {
    if payload.len() < 16 || payload[0] != AF_PACKET {
        return None;
    }
    let num = u16::from_ne_bytes([payload[2], payload[3]]);
    let inode = u32::from_ne_bytes(payload[4..8].try_into().ok()?);
    let ifindex = NlasIterator::new(&payload[16..])
        .map_while(Result::ok)
        .find(|nla| nla.kind() == PACKET_DIAG_INFO)
        .and_then(|nla| Some(u32::from_ne_bytes(nla.value().get(..4)?.try_into().ok()?)))
        .unwrap_or(0);
    Some(ExistingSocket {
        proto: Proto::Packet,
        family: Family::Packet,
        sock_type: payload[1],
        local: Local::Packet { protocol: num },
        ifindex,
        inode: u64::from(inode),
        owner_uid: None,
        cookie: cookie_of(payload[8..16].try_into().ok()?),
    })
}

/// /proc/net/raw and /proc/net/raw6 (the latter absent without IPv6).
fn proc_net_raw(proc_root: &Path) -> anyhow::Result<Vec<ExistingSocket>> {
    let mut found = Vec::new();
    for (file, family) in [("net/raw", Family::Ipv4), ("net/raw6", Family::Ipv6)] {
        let path = proc_root.join(file);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound && family == Family::Ipv6 => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        found.extend(text.lines().skip(1).filter_map(|line| parse_proc_net_raw(line, family)));
    }
    Ok(found)
}

/// A line of /proc/net/raw{,6}:
/// `sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...`,
/// the local address as the kernel's in-memory words in hex, then `:PROTO`.
fn parse_proc_net_raw(line: &str, family: Family) -> Option<ExistingSocket> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (addr_hex, proto_hex) = fields.get(1)?.split_once(':')?;
    let addr = match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(addr_hex, 16).ok()?.to_ne_bytes())),
        _ => {
            if addr_hex.len() != 32 {
                return None;
            }
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = u32::from_str_radix(&addr_hex[i * 8..i * 8 + 8], 16).ok()?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
    };
    Some(ExistingSocket {
        proto: Proto::Raw,
        family,
        sock_type: libc::SOCK_RAW as u8,
        local: Local::Raw { addr, protocol: u16::from_str_radix(proto_hex, 16).ok()? },
        ifindex: 0,
        inode: fields.get(9)?.parse().ok()?,
        owner_uid: None,
        cookie: None,
    })
}

/// /proc/net/packet: `sk RefCnt Type Proto Iface R Rmem User Inode`, Proto in
/// hex and host order.
fn proc_net_packet(proc_root: &Path) -> anyhow::Result<Vec<ExistingSocket>> {
    let path = proc_root.join("net/packet");
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().skip(1).filter_map(parse_proc_net_packet).collect())
}

fn parse_proc_net_packet(line: &str) -> Option<ExistingSocket> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    Some(ExistingSocket {
        proto: Proto::Packet,
        family: Family::Packet,
        sock_type: fields.get(2)?.parse().ok()?,
        local: Local::Packet { protocol: u16::from_str_radix(fields.get(3)?, 16).ok()? },
        ifindex: fields.get(4)?.parse().ok()?,
        inode: fields.get(8)?.parse().ok()?,
        owner_uid: None,
        cookie: None,
    })
}

/// The name of interface `ifindex`, when it has one.
pub fn interface_name(ifindex: u32) -> Option<Vec<u8>> {
    if ifindex == 0 {
        return None;
    }
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname requires.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    Some(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_namespaces_are_parsed() {
        assert_eq!(bracketed_number(b"socket:[12345]", b"socket:["), Some(12345));
        assert_eq!(bracketed_number(b"net:[4026531840]", b"net:["), Some(4026531840));
        assert_eq!(bracketed_number(b"pipe:[12345]", b"socket:["), None);
        assert_eq!(bracketed_number(b"socket:[12x]", b"socket:["), None);
        assert_eq!(bracketed_number(b"/dev/null", b"socket:["), None);
    }

    #[test]
    fn cookies_are_two_host_order_halves() {
        let mut raw = [0u8; 8];
        raw[..4].copy_from_slice(&0x0000_0002u32.to_ne_bytes());
        raw[4..].copy_from_slice(&0x0000_0001u32.to_ne_bytes());
        assert_eq!(cookie_of(&raw), Some(0x1_0000_0002));
        assert_eq!(cookie_of(&[0; 8]), None);
        assert_eq!(cookie_of(&[0xff; 8]), None);
    }

    #[test]
    fn proc_net_raw_lines() {
        let v4 = "   1: 0100007F:0001 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 4242 2 0000000000000000 0";
        let s = parse_proc_net_raw(v4, Family::Ipv4).unwrap();
        // The kernel prints the address's in-memory word: on little-endian
        // hosts 127.0.0.1 reads 0100007F.
        let expected = if cfg!(target_endian = "little") { Ipv4Addr::LOCALHOST } else { Ipv4Addr::new(1, 0, 0, 127) };
        assert_eq!(s.local, Local::Raw { addr: IpAddr::V4(expected), protocol: 1 });
        assert_eq!((s.inode, s.proto, s.family), (4242, Proto::Raw, Family::Ipv4));

        let v6 = "  58: 00000000000000000000000000000000:003A 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 77 2 0000000000000000 0";
        let s = parse_proc_net_raw(v6, Family::Ipv6).unwrap();
        assert_eq!(s.local, Local::Raw { addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED), protocol: 58 });
        assert_eq!(s.inode, 77);
        assert!(parse_proc_net_raw("  sl  local_address rem_address", Family::Ipv4).is_none());
    }

    #[test]
    fn proc_net_packet_lines() {
        let line = "0000000000000000 3    3     0003   2     1     0      0   9911";
        let s = parse_proc_net_packet(line).unwrap();
        assert_eq!((s.sock_type, s.ifindex, s.inode), (3, 2, 9911));
        assert_eq!(s.local, Local::Packet { protocol: 3 });
        assert!(parse_proc_net_packet("sk RefCnt Type Proto Iface R Rmem User Inode").is_none());
    }

    #[test]
    fn packet_diag_answers() {
        let mut msg = vec![AF_PACKET, 2];
        msg.extend_from_slice(&0x0800u16.to_ne_bytes());
        msg.extend_from_slice(&555u32.to_ne_bytes());
        msg.extend_from_slice(&[0; 8]);
        // PACKET_DIAG_INFO: nla_len 28, nla_type 0, then pdi_index 7 and five more u32.
        msg.extend_from_slice(&28u16.to_ne_bytes());
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&7u32.to_ne_bytes());
        msg.extend_from_slice(&[0; 20]);
        let s = parse_packet_diag(&msg).unwrap();
        assert_eq!((s.sock_type, s.ifindex, s.inode), (2, 7, 555));
        assert_eq!(s.local, Local::Packet { protocol: 0x0800 });
        // Without the attribute: bound to no interface.
        assert_eq!(parse_packet_diag(&msg[..16]).unwrap().ifindex, 0);
        assert!(parse_packet_diag(&msg[..10]).is_none());
    }

    #[test]
    fn own_socket_is_held_by_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let diag = Diag::open().unwrap();
        let Ok(found) = diag.inet(AF_INET, IPPROTO_TCP) else {
            return; // no sock_diag in this sandbox
        };
        let ours = found.iter().find(|s| s.port() == Some(port)).expect("our listener is dumped");
        assert_eq!(ours.local, Local::Inet { addr: IpAddr::V4(Ipv4Addr::LOCALHOST), port });
        assert!(ours.cookie.is_some(), "the dump generates a cookie: {ours:?}");
        let (held, _) = holders(Path::new("/proc"), &HashSet::from([ours.inode]), &[std::process::id()]);
        use std::os::fd::AsRawFd as _;
        assert_eq!(held[&ours.inode], vec![Holder { pid: std::process::id(), fd: listener.as_raw_fd() }]);
        assert!(holds(Path::new("/proc"), std::process::id(), listener.as_raw_fd(), ours.inode));
        assert!(!holds(Path::new("/proc"), std::process::id(), listener.as_raw_fd(), ours.inode + 1));
        assert!(netns(Path::new("/proc")).is_some());
    }
}
