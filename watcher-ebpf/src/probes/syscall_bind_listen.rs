//! bind() and listen() from the syscall tracepoints
//! `syscalls/sys_{enter,exit}_{bind,listen}` and `syscalls/sys_enter_close`:
//! what the inet hooks cannot see — a failed call (a port fight during a
//! restart: EADDRINUSE, EACCES…), and UNIX sockets (no cgroup hook sees a
//! UNIX bind) — and the fd and backlog, handed to the post_bind and LISTEN
//! hooks that run inside the call.
//!
//! A UNIX socket's path is known only at bind(), its listening only at
//! listen(): UNIX_SOCKETS keeps the path and type by (tgid, fd) from a
//! bind() until close() of that fd. A stream or seqpacket socket is
//! reported at listen(); a datagram socket, which never listens, at a
//! bind() to a path or an abstract name (syslog's /dev/log). Either is
//! then reported at close() of that fd; its holders' exits are followed
//! in userspace. Userspace seeds the map at start with every (pid, fd)
//! holding a UNIX socket of the snapshot, so that the close of a socket
//! already there is reported too.
use aya_ebpf::{
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use watcher_common::{
    AF_UNIX, EventKind, ProgramError, SOCK_DGRAM, SOCKADDR_BYTES, SyscallRecord, UNIX_SOCKETS_MAX, UnixSocket,
};

use super::syscall_args::{
    ARG0, ARG1, ARG2, PENDING_BIND, PENDING_LISTEN, PendingBind, PendingListen, RET, arg, read_user_bytes, thread_key,
};
use crate::{
    kernel::socket_type_of_fd,
    record::{CountFailure as _, emit, failed, wanted_tgid},
};

/// Bytes of `sockaddr_un` before `sun_path`: a bind() given no more is an
/// autobind (the kernel picks an abstract name, unknown here), as a client
/// does; it is not reported.
const SUN_PATH_OFFSET: u32 = 2;

#[map(name = "UNIX_SOCKETS")]
static UNIX_SOCKETS: LruHashMap<u64, UnixSocket> = LruHashMap::with_max_entries(UNIX_SOCKETS_MAX, 0);

/// (tgid, fd): an fd names a socket within one process.
#[inline(always)]
fn fd_key(fd: i32) -> u64 {
    (thread_key() & 0xffff_ffff_0000_0000) | u64::from(fd as u32)
}

#[inline(always)]
fn is_unix(bind: &PendingBind) -> bool {
    bind.addr_len >= 2 && u16::from_ne_bytes([bind.addr[0], bind.addr[1]]) == AF_UNIX
}

#[tracepoint]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    match try_sys_enter_bind(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

fn try_sys_enter_bind(ctx: &TracePointContext) -> Result<(), ProgramError> {
    if wanted_tgid().is_none() {
        return Ok(());
    }
    bind_entered(arg(ctx, ARG0)? as i32, arg(ctx, ARG1)?, arg(ctx, ARG2)? as u32)
}

/// bind(fd, addr, addr_len) entered: its arguments kept for its return,
/// and for the post_bind hooks that run inside it (shared with the fentry
/// hook of `fentry_sockets.rs`). The caller checked `wanted_tgid`.
#[inline(always)]
pub fn bind_entered(fd: i32, addr: u64, addr_len: u32) -> Result<(), ProgramError> {
    let mut pending = PendingBind { addr: [0; SOCKADDR_BYTES], fd, addr_len };
    // A fault is counted there; the exit then reports the failure (EFAULT) without the address.
    read_user_bytes(&mut pending.addr, addr, addr_len);
    PENDING_BIND.insert(&thread_key(), &pending, 0).map_err(|_| ProgramError::MapUpdate)
}

#[tracepoint]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    match try_sys_exit_bind(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

fn try_sys_exit_bind(ctx: &TracePointContext) -> Result<(), ProgramError> {
    bind_returned(|| arg(ctx, RET).map(|ret| ret as i64))
}

/// bind() returned `ret()` (read only when this thread's bind was kept).
#[inline(always)]
pub fn bind_returned(ret: impl FnOnce() -> Result<i64, ProgramError>) -> Result<(), ProgramError> {
    let key = thread_key();
    // SAFETY: copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_BIND.get(&key) }).copied() else {
        return Ok(());
    };
    // Only fails when the entry is already gone (evicted meanwhile).
    let _ = PENDING_BIND.remove(&key);
    let ret = ret()? as u64;
    if (ret as i64) < 0 {
        report(EventKind::BindFailed, pending.fd, ret, 0, 0, Some(&pending));
    } else if is_unix(&pending) {
        let sock_type = socket_type_of_fd(pending.fd);
        let named_datagram = sock_type == SOCK_DGRAM && pending.addr_len > SUN_PATH_OFFSET;
        let socket = UnixSocket {
            addr: pending.addr,
            fd: pending.fd,
            addr_len: pending.addr_len,
            sock_type,
            reported: u32::from(named_datagram),
        };
        UNIX_SOCKETS.insert(&fd_key(pending.fd), &socket, 0).or_count();
        if named_datagram {
            report(EventKind::UnixBind, pending.fd, 0, 0, sock_type, Some(&pending));
        }
    }
    Ok(())
}

#[tracepoint]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    match try_sys_enter_listen(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

fn try_sys_enter_listen(ctx: &TracePointContext) -> Result<(), ProgramError> {
    if wanted_tgid().is_none() {
        return Ok(());
    }
    listen_entered(arg(ctx, ARG0)? as i32, arg(ctx, ARG1)? as u32)
}

/// listen(fd, backlog) entered: kept for its return and for the LISTEN
/// hook inside it. The caller checked `wanted_tgid`.
#[inline(always)]
pub fn listen_entered(fd: i32, backlog: u32) -> Result<(), ProgramError> {
    let pending = PendingListen { fd, backlog };
    PENDING_LISTEN.insert(&thread_key(), &pending, 0).map_err(|_| ProgramError::MapUpdate)
}

#[tracepoint]
pub fn sys_exit_listen(ctx: TracePointContext) -> u32 {
    match try_sys_exit_listen(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

fn try_sys_exit_listen(ctx: &TracePointContext) -> Result<(), ProgramError> {
    listen_returned(|| arg(ctx, RET).map(|ret| ret as i64))
}

/// listen() returned `ret()` (read only when this thread's listen was kept).
#[inline(always)]
pub fn listen_returned(ret: impl FnOnce() -> Result<i64, ProgramError>) -> Result<(), ProgramError> {
    let key = thread_key();
    // SAFETY: copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_LISTEN.get(&key) }).copied() else {
        return Ok(());
    };
    // Only fails when the entry is already gone (evicted meanwhile).
    let _ = PENDING_LISTEN.remove(&key);
    let ret = ret()? as u64;
    if (ret as i64) < 0 {
        report(EventKind::ListenFailed, pending.fd, ret, pending.backlog, 0, None);
        return Ok(());
    }
    if let Some(socket) = UNIX_SOCKETS.get_ptr_mut(&fd_key(pending.fd)) {
        // SAFETY: a valid pointer to this map entry, written in place.
        let (bind, sock_type) = unsafe {
            (*socket).reported = 1;
            (bind_of(&*socket), (*socket).sock_type)
        };
        report(EventKind::UnixListen, pending.fd, 0, pending.backlog, sock_type, Some(&bind));
    }
    Ok(())
}

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    match try_sys_enter_close(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

fn try_sys_enter_close(ctx: &TracePointContext) -> Result<(), ProgramError> {
    fd_closing(arg(ctx, ARG0)? as i32);
    Ok(())
}

/// close(fd) entered: the close of a UNIX socket this process bound.
#[inline(always)]
pub fn fd_closing(fd: i32) {
    let key = fd_key(fd);
    // Most closes are of other fds: one lookup each, nothing sent.
    // SAFETY: copied out before the entry is removed.
    let Some(socket) = unsafe { UNIX_SOCKETS.get(&key) }.copied() else {
        return;
    };
    // Only fails when the entry is already gone (evicted meanwhile).
    let _ = UNIX_SOCKETS.remove(&key);
    if socket.reported != 0 {
        report(EventKind::UnixClose, fd, 0, 0, socket.sock_type, Some(&bind_of(&socket)));
    }
}

#[inline(always)]
fn bind_of(socket: &UnixSocket) -> PendingBind {
    PendingBind { addr: socket.addr, fd: socket.fd, addr_len: socket.addr_len }
}

/// Sends a SyscallRecord; `ret` is the syscall's return (negative errno) or 0.
#[inline(always)]
fn report(kind: EventKind, fd: i32, ret: u64, backlog: u32, sock_type: u32, bind: Option<&PendingBind>) {
    emit(kind, |r: &mut SyscallRecord| {
        r.fd = fd;
        r.errno = (ret as i64).unsigned_abs() as u32;
        r.backlog = backlog;
        r.sock_type = sock_type;
        if let Some(b) = bind {
            r.addr_len = b.addr_len;
            r.addr = b.addr;
        }
    });
}

/// The fd of the bind() this thread is inside, or -1.
#[inline(always)]
pub fn bind_fd() -> i32 {
    // SAFETY: a plain read of this thread's entry.
    unsafe { PENDING_BIND.get(&thread_key()) }.map_or(-1, |p| p.fd)
}

/// The fd and backlog of the listen() this thread is inside, if any.
#[inline(always)]
pub fn listen_args() -> Option<PendingListen> {
    // SAFETY: a plain read of this thread's entry.
    unsafe { PENDING_LISTEN.get(&thread_key()) }.copied()
}
