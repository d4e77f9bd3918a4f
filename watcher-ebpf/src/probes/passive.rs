//! Passive listeners: sockets that wait for packets without any open port,
//! the way BPFDoor-style backdoors wait for a magic packet. Reported: the
//! creation of AF_PACKET and SOCK_RAW sockets, and every BPF filter attached
//! to a socket (with the classic program's bytes, so userspace can hash
//! them). Also the socket options that matter for listeners, which
//! userspace puts on their bind and listen events.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use watcher_common::{
    AF_INET, AF_INET6, AF_PACKET, EventKind, FILTER_BYTES, IP_FREEBIND, IP_TRANSPARENT, IPV6_FREEBIND,
    IPV6_TRANSPARENT, OPTVAL_BYTES, PassiveRecord, SO_ATTACH_BPF, SO_ATTACH_FILTER, SO_ATTACH_REUSEPORT_CBPF,
    SO_ATTACH_REUSEPORT_EBPF, SO_BINDTODEVICE, SO_REUSEADDR, SO_REUSEPORT, SOCK_RAW, SOL_IP, SOL_IPV6, SOL_SOCKET,
    SockoptRecord,
};

use super::syscall_args::{
    ARG0, ARG1, ARG2, ARG3, ARG4, PENDING_SOCKET, PENDING_SOCKOPT, PendingSocket, PendingSockopt, RET, arg,
    read_user_bytes, thread_key,
};
use crate::record::{EVENTS, count_lost, header, output, wanted_tgid};

/// socket()'s type argument carries SOCK_NONBLOCK / SOCK_CLOEXEC above these bits.
const SOCK_TYPE_MASK: u32 = 0xf;

#[tracepoint]
pub fn sys_enter_socket(ctx: TracePointContext) -> u32 {
    if wanted_tgid().is_none() {
        return 0;
    }
    let (Some(family), Some(sock_type), Some(protocol)) = (arg(&ctx, ARG0), arg(&ctx, ARG1), arg(&ctx, ARG2)) else {
        return 0;
    };
    let (family, sock_type) = (family as u32, sock_type as u32 & SOCK_TYPE_MASK);
    // Raw IP sockets only: SOCK_RAW is also how every netlink socket (ss,
    // ip, systemd) is opened, and those listen to the kernel, not the wire.
    let raw_ip = sock_type == SOCK_RAW && (family == u32::from(AF_INET) || family == u32::from(AF_INET6));
    if family == AF_PACKET || raw_ip {
        let pending = PendingSocket { family, sock_type, protocol: protocol as u32 };
        let _ = PENDING_SOCKET.insert(&thread_key(), &pending, 0);
    }
    0
}

#[tracepoint]
pub fn sys_exit_socket(ctx: TracePointContext) -> u32 {
    let key = thread_key();
    // SAFETY: copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_SOCKET.get(&key) }).copied() else {
        return 0;
    };
    let _ = PENDING_SOCKET.remove(&key);
    let Some(fd) = arg(&ctx, RET).filter(|&r| (r as i64) >= 0) else {
        return 0;
    };
    let Some(mut entry) = EVENTS.reserve::<PassiveRecord>(0) else {
        count_lost();
        return 0;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: every field of the reserved record is written before submit.
    unsafe {
        (*record).header = header(EventKind::PassiveSocket);
        (*record).fd = fd as i32;
        (*record).family = pending.family;
        (*record).sock_type = pending.sock_type;
        (*record).protocol = pending.protocol;
        (*record).optname = 0;
        (*record).filter_len = 0;
        (*record).filter = [0; FILTER_BYTES];
    }
    entry.submit(0);
    0
}

#[tracepoint]
pub fn sys_enter_setsockopt(ctx: TracePointContext) -> u32 {
    if wanted_tgid().is_none() {
        return 0;
    }
    let (Some(fd), Some(level), Some(optname), Some(optval), Some(optlen)) =
        (arg(&ctx, ARG0), arg(&ctx, ARG1), arg(&ctx, ARG2), arg(&ctx, ARG3), arg(&ctx, ARG4))
    else {
        return 0;
    };
    let (level, optname) = (level as u32, optname as u32);
    if is_watched_option(level, optname) {
        let pending = PendingSockopt { optval, fd: fd as i32, level, optname, optlen: optlen as u32 };
        let _ = PENDING_SOCKOPT.insert(&thread_key(), &pending, 0);
    }
    0
}

#[inline(always)]
fn is_watched_option(level: u32, optname: u32) -> bool {
    match level {
        SOL_SOCKET => matches!(
            optname,
            SO_REUSEADDR
                | SO_REUSEPORT
                | SO_BINDTODEVICE
                | SO_ATTACH_FILTER
                | SO_ATTACH_BPF
                | SO_ATTACH_REUSEPORT_CBPF
                | SO_ATTACH_REUSEPORT_EBPF
        ),
        SOL_IP => matches!(optname, IP_FREEBIND | IP_TRANSPARENT),
        SOL_IPV6 => matches!(optname, IPV6_FREEBIND | IPV6_TRANSPARENT),
        _ => false,
    }
}

#[tracepoint]
pub fn sys_exit_setsockopt(ctx: TracePointContext) -> u32 {
    let key = thread_key();
    // SAFETY: copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_SOCKOPT.get(&key) }).copied() else {
        return 0;
    };
    let _ = PENDING_SOCKOPT.remove(&key);
    // The option took effect only if the call succeeded.
    if arg(&ctx, RET) != Some(0) {
        return 0;
    }
    match (pending.level, pending.optname) {
        (SOL_SOCKET, SO_ATTACH_FILTER | SO_ATTACH_REUSEPORT_CBPF) => classic_filter(&pending),
        (SOL_SOCKET, SO_ATTACH_BPF | SO_ATTACH_REUSEPORT_EBPF) => extended_filter(&pending),
        _ => plain_option(&pending),
    }
    0
}

/// `struct sock_fprog { unsigned short len; struct sock_filter *filter; }`
/// on a 64-bit kernel: the length at 0, the pointer at 8.
#[repr(C)]
#[derive(Clone, Copy)]
struct SockFprog {
    len: u16,
    _pad: [u16; 3],
    filter: u64,
}

fn classic_filter(pending: &PendingSockopt) {
    let mut prog = [0u8; 16];
    if read_user_bytes(&mut prog, pending.optval, 16) != 16 {
        return;
    }
    // SAFETY: 16 bytes, the size and layout of SockFprog.
    let prog: SockFprog = unsafe { core::mem::transmute(prog) };
    let Some(mut entry) = EVENTS.reserve::<PassiveRecord>(0) else {
        count_lost();
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: every field of the reserved record is written before submit;
    // the filter bytes are zeroed, then the program's first bytes copied in.
    unsafe {
        fill_filter_header(record, pending, u32::from(prog.len));
        (*record).filter = [0; FILTER_BYTES];
        read_user_bytes(&mut (*record).filter, prog.filter, u32::from(prog.len) * 8);
    }
    entry.submit(0);
}

fn extended_filter(pending: &PendingSockopt) {
    let mut prog_fd = [0u8; 4];
    read_user_bytes(&mut prog_fd, pending.optval, 4);
    let Some(mut entry) = EVENTS.reserve::<PassiveRecord>(0) else {
        count_lost();
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: every field of the reserved record is written before submit.
    unsafe {
        fill_filter_header(record, pending, u32::from_ne_bytes(prog_fd));
        (*record).filter = [0; FILTER_BYTES];
    }
    entry.submit(0);
}

/// # Safety
/// `record` points to a reserved, writable PassiveRecord.
#[inline(always)]
unsafe fn fill_filter_header(record: *mut PassiveRecord, pending: &PendingSockopt, len: u32) {
    // SAFETY: by the caller.
    unsafe {
        (*record).header = header(EventKind::FilterAttached);
        (*record).fd = pending.fd;
        (*record).family = 0;
        (*record).sock_type = 0;
        (*record).protocol = 0;
        (*record).optname = pending.optname;
        (*record).filter_len = len;
    }
}

fn plain_option(pending: &PendingSockopt) {
    let mut record = SockoptRecord {
        header: header(EventKind::SockoptSet),
        fd: pending.fd,
        level: pending.level,
        optname: pending.optname,
        optlen: pending.optlen,
        value: [0; OPTVAL_BYTES],
    };
    read_user_bytes(&mut record.value, pending.optval, pending.optlen);
    output(&record);
}
