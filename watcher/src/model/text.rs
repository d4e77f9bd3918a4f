//! How watcher writes the things it names: times, addresses, UNIX paths,
//! errno values, socket types. One spelling for every output.
use std::net::IpAddr;

use chrono::{DateTime, SecondsFormat, Utc};
use sha2::{Digest as _, Sha256};
use watcher_common::{SO_ATTACH_BPF, SO_ATTACH_FILTER, SO_ATTACH_REUSEPORT_CBPF, SO_ATTACH_REUSEPORT_EBPF};

use crate::model::escape::escape_bytes;

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

/// A UNIX socket path, escaped; an abstract name (leading NUL) as `@name`.
pub fn unix_path(path: &[u8]) -> String {
    match path.strip_prefix(b"\0") {
        Some(name) => format!("@{}", escape_bytes(name)),
        None => escape_bytes(path),
    }
}

pub fn errno_name(errno: u32) -> String {
    let name = format!("{:?}", nix::errno::Errno::from_raw(errno as i32));
    if name.starts_with('E') { name } else { format!("errno {errno}") }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn attach_name(optname: u32) -> &'static str {
    match optname {
        SO_ATTACH_FILTER => "SO_ATTACH_FILTER",
        SO_ATTACH_BPF => "SO_ATTACH_BPF",
        SO_ATTACH_REUSEPORT_CBPF => "SO_ATTACH_REUSEPORT_CBPF",
        SO_ATTACH_REUSEPORT_EBPF => "SO_ATTACH_REUSEPORT_EBPF",
        _ => "SO_ATTACH_?",
    }
}

pub fn sock_type_name(sock_type: u32) -> &'static str {
    match sock_type {
        1 => "SOCK_STREAM",
        2 => "SOCK_DGRAM",
        3 => "SOCK_RAW",
        5 => "SOCK_SEQPACKET",
        10 => "SOCK_PACKET",
        _ => "SOCK_?",
    }
}
