//! Passive listeners, from the syscall tracepoints
//! `syscalls/sys_{enter,exit}_{socket,setsockopt}` (socket()'s exit alone
//! where its arguments come from the saved registers): sockets that wait for packets without any open port,
//! the way BPFDoor-style backdoors wait for a magic packet. Reported: the
//! creation of AF_PACKET and SOCK_RAW sockets, and every BPF filter attached
//! to a socket (with the classic program's bytes, so userspace can hash
//! them). Also the socket options that matter for listeners, which
//! userspace puts on their bind and listen events.
//!
//! Those options are keyed by (tgid, fd) and close() is not followed here,
//! so a socket() that returns an fd whose options were reported says so
//! (`SocketOnFd`): a throwaway socket's options (apache2 probes
//! SO_REUSEPORT on a socket it closes at once, and its listener then gets
//! the same fd) must not show on the next socket of that fd.
use aya_ebpf::{
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use watcher_common::{
    AF_INET, AF_INET6, AF_PACKET, EventKind, IP_FREEBIND, IP_TRANSPARENT, IPV6_FREEBIND, IPV6_TRANSPARENT,
    PassiveRecord, ProgramError, SO_ATTACH_BPF, SO_ATTACH_FILTER, SO_ATTACH_REUSEPORT_CBPF, SO_ATTACH_REUSEPORT_EBPF,
    SO_BINDTODEVICE, SO_REUSEADDR, SO_REUSEPORT, SOCK_RAW, SOL_IP, SOL_IPV6, SOL_SOCKET, SockoptRecord,
};

use super::syscall_args::{
    ARG0, ARG1, ARG2, ARG3, ARG4, PENDING_SOCKET, PENDING_SOCKOPT, PendingSocket, PendingSockopt, RET, Syscall, arg,
    args_in_registers, current_args, read_user_bytes, thread_key,
};
use crate::record::{emit, failed, wanted_tgid};

/// socket()'s type argument carries SOCK_NONBLOCK / SOCK_CLOEXEC above these bits.
const SOCK_TYPE_MASK: u32 = 0xf;

/// (tgid, fd) of the fds whose options were reported: at most one lookup
/// per socket() on the host, and a record only for these.
#[map(name = "OPTIONED_FDS")]
static OPTIONED_FDS: LruHashMap<u64, u8> = LruHashMap::with_max_entries(OPTIONED_FDS_MAX, 0);
const OPTIONED_FDS_MAX: u32 = 8_192;

/// (tgid, fd): an fd names a socket within one process.
#[inline(always)]
fn fd_key(fd: i32) -> u64 {
    (thread_key() & 0xffff_ffff_0000_0000) | u64::from(fd as u32)
}

#[tracepoint]
pub fn sys_enter_socket(ctx: TracePointContext) -> u32 {
    match try_sys_enter_socket(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

fn try_sys_enter_socket(ctx: &TracePointContext) -> Result<(), ProgramError> {
    if wanted_tgid().is_none() {
        return Ok(());
    }
    let (family, sock_type, protocol) = (arg(ctx, ARG0)?, arg(ctx, ARG1)?, arg(ctx, ARG2)?);
    if let Some(pending) = passive_socket(family as u32, sock_type as u32, protocol as u32) {
        PENDING_SOCKET.insert(&thread_key(), &pending, 0).map_err(|_| ProgramError::MapUpdate)?;
    }
    Ok(())
}

/// socket(family, type, protocol) as a passive listener's, or `None` for
/// any other socket.
#[inline(always)]
pub fn passive_socket(family: u32, sock_type: u32, protocol: u32) -> Option<PendingSocket> {
    let sock_type = sock_type & SOCK_TYPE_MASK;
    // Raw IP sockets only: SOCK_RAW is also how every netlink socket (ss,
    // ip, systemd) is opened, and those listen to the kernel, not the wire.
    let raw_ip = sock_type == SOCK_RAW && (family == u32::from(AF_INET) || family == u32::from(AF_INET6));
    (family == AF_PACKET || raw_ip).then_some(PendingSocket { family, sock_type, protocol })
}

#[tracepoint]
pub fn sys_exit_socket(ctx: TracePointContext) -> u32 {
    match try_sys_exit_socket(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

fn try_sys_exit_socket(ctx: &TracePointContext) -> Result<(), ProgramError> {
    if args_in_registers() {
        let ret = arg(ctx, RET)?;
        if (ret as i64) < 0 {
            return Ok(());
        }
        let pending = match current_args(Syscall::Exiting) {
            Some([family, sock_type, protocol]) if wanted_tgid().is_some() => {
                passive_socket(family as u32, sock_type as u32, protocol as u32)
            }
            _ => None,
        };
        socket_returned(pending.as_ref(), ret as i32);
        return Ok(());
    }
    let key = thread_key();
    // Two paths, each with every value it carries defined: an
    // Option<PendingSocket> held across the fallible read below has an
    // undefined payload when None, which LLVM may spill to the stack, and
    // the verifier refuses a read of an uninitialised register ("R9
    // !read_ok" on 6.18).
    // SAFETY: copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_SOCKET.get(&key) }).copied() else {
        let ret = arg(ctx, RET)?;
        if (ret as i64) >= 0 {
            new_socket_on_fd(ret as i32);
        }
        return Ok(());
    };
    // Only fails when the entry is already gone (evicted meanwhile).
    let _ = PENDING_SOCKET.remove(&key);
    let ret = arg(ctx, RET)?;
    if (ret as i64) >= 0 {
        report_socket(&pending, ret as i32);
    }
    Ok(())
}

/// socket() returned `fd`: a passive listener's socket (`pending`) is
/// reported, and that record also tells userspace the fd is a new socket;
/// for any other, userspace is told only if the fd had options reported,
/// since they were another socket's (closed since).
#[inline(always)]
pub fn socket_returned(pending: Option<&PendingSocket>, fd: i32) {
    match pending {
        Some(pending) => report_socket(pending, fd),
        None => new_socket_on_fd(fd),
    }
}

/// A passive listener's socket was made, as `fd`.
#[inline(always)]
fn report_socket(pending: &PendingSocket, fd: i32) {
    emit(EventKind::PassiveSocket, |r: &mut PassiveRecord| {
        r.fd = fd;
        r.family = pending.family;
        r.sock_type = pending.sock_type;
        r.protocol = pending.protocol;
    });
}

#[inline(always)]
fn new_socket_on_fd(fd: i32) {
    let key = fd_key(fd);
    // SAFETY: a plain read of this process's entry.
    if unsafe { OPTIONED_FDS.get(&key) }.is_none() {
        return;
    }
    // Only fails when the entry is already gone (evicted meanwhile).
    let _ = OPTIONED_FDS.remove(&key);
    emit(EventKind::SocketOnFd, |r: &mut SockoptRecord| r.fd = fd);
}

#[tracepoint]
pub fn sys_enter_setsockopt(ctx: TracePointContext) -> u32 {
    match try_sys_enter_setsockopt(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

fn try_sys_enter_setsockopt(ctx: &TracePointContext) -> Result<(), ProgramError> {
    if wanted_tgid().is_none() {
        return Ok(());
    }
    let (level, optname) = (arg(ctx, ARG1)? as u32, arg(ctx, ARG2)? as u32);
    if is_watched_option(level, optname) {
        let pending = PendingSockopt {
            optval: arg(ctx, ARG3)?,
            fd: arg(ctx, ARG0)? as i32,
            level,
            optname,
            optlen: arg(ctx, ARG4)? as u32,
        };
        PENDING_SOCKOPT.insert(&thread_key(), &pending, 0).map_err(|_| ProgramError::MapUpdate)?;
    }
    Ok(())
}

#[inline(always)]
pub fn is_watched_option(level: u32, optname: u32) -> bool {
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
    match try_sys_exit_setsockopt(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

fn try_sys_exit_setsockopt(ctx: &TracePointContext) -> Result<(), ProgramError> {
    let key = thread_key();
    // SAFETY: copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_SOCKOPT.get(&key) }).copied() else {
        return Ok(());
    };
    // Only fails when the entry is already gone (evicted meanwhile).
    let _ = PENDING_SOCKOPT.remove(&key);
    // The option took effect only if the call succeeded.
    if arg(ctx, RET)? != 0 {
        return Ok(());
    }
    report_sockopt(&pending);
    Ok(())
}

/// A watched socket option was set (the call succeeded).
#[inline(always)]
pub fn report_sockopt(pending: &PendingSockopt) {
    match (pending.level, pending.optname) {
        (SOL_SOCKET, SO_ATTACH_FILTER | SO_ATTACH_REUSEPORT_CBPF) => classic_filter(pending),
        (SOL_SOCKET, SO_ATTACH_BPF | SO_ATTACH_REUSEPORT_EBPF) => extended_filter(pending),
        _ => plain_option(pending),
    }
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
    // A fault is counted there; the filter is then not reported, having no program to show.
    if read_user_bytes(&mut prog, pending.optval, 16) != 16 {
        return;
    }
    // SAFETY: 16 bytes, the size and layout of SockFprog.
    let prog: SockFprog = unsafe { core::mem::transmute(prog) };
    emit(EventKind::FilterAttached, |r: &mut PassiveRecord| {
        filter_header(r, pending, u32::from(prog.len));
        // The program's first bytes, straight into the record (zeroed past them).
        read_user_bytes(&mut r.filter, prog.filter, u32::from(prog.len) * 8);
    });
}

fn extended_filter(pending: &PendingSockopt) {
    let mut prog_fd = [0u8; 4];
    read_user_bytes(&mut prog_fd, pending.optval, 4);
    emit(EventKind::FilterAttached, |r: &mut PassiveRecord| {
        filter_header(r, pending, u32::from_ne_bytes(prog_fd));
    });
}

#[inline(always)]
fn filter_header(r: &mut PassiveRecord, pending: &PendingSockopt, len: u32) {
    r.fd = pending.fd;
    r.optname = pending.optname;
    r.filter_len = len;
}

fn plain_option(pending: &PendingSockopt) {
    // A full map evicts its oldest entry: that fd's options may then show on its next socket.
    let _ = OPTIONED_FDS.insert(&fd_key(pending.fd), &1, 0);
    emit(EventKind::SockoptSet, |r: &mut SockoptRecord| {
        r.fd = pending.fd;
        r.level = pending.level;
        r.optname = pending.optname;
        r.optlen = pending.optlen;
        read_user_bytes(&mut r.value, pending.optval, pending.optlen);
    });
}
