//! bind() and listen() at the syscall level: what inet hooks cannot see —
//! a failed call (a port fight during a restart: EADDRINUSE, EACCES…), and
//! UNIX listeners (no cgroup hook sees a UNIX bind) — and the fd and
//! backlog, handed to the post_bind and LISTEN hooks that run inside the call.
//!
//! A UNIX socket's path is known only at bind(), its listening only at
//! listen(): UNIX_SOCKETS keeps the path by (tgid, fd) from a bind() until
//! close() of that fd, and marks it listening at listen().
use aya_ebpf::{
    macros::{map, tracepoint},
    maps::LruHashMap,
    programs::TracePointContext,
};
use watcher_common::{AF_UNIX, EventKind, SOCKADDR_BYTES, SyscallRecord, UNIX_SOCKETS_MAX};

use super::syscall_args::{
    ARG0, ARG1, ARG2, PENDING_BIND, PENDING_LISTEN, PendingBind, PendingListen, RET, arg, read_user_bytes, thread_key,
};
use crate::record::{EVENTS, count_lost, header, wanted_tgid};

#[repr(C)]
#[derive(Clone, Copy)]
struct UnixSocket {
    bind: PendingBind,
    listening: u32,
}

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
    if wanted_tgid().is_some() {
        enter_bind(&ctx);
    }
    0
}

fn enter_bind(ctx: &TracePointContext) -> Option<()> {
    let (fd, addr, addr_len) = (arg(ctx, ARG0)?, arg(ctx, ARG1)?, arg(ctx, ARG2)?);
    let mut pending = PendingBind { addr: [0; SOCKADDR_BYTES], fd: fd as i32, addr_len: addr_len as u32 };
    read_user_bytes(&mut pending.addr, addr, addr_len as u32);
    PENDING_BIND.insert(&thread_key(), &pending, 0).ok()
}

#[tracepoint]
pub fn sys_exit_bind(ctx: TracePointContext) -> u32 {
    let key = thread_key();
    // SAFETY: copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_BIND.get(&key) }).copied() else {
        return 0;
    };
    let _ = PENDING_BIND.remove(&key);
    let Some(ret) = arg(&ctx, RET) else {
        return 0;
    };
    if (ret as i64) < 0 {
        report(EventKind::BindFailed, pending.fd, ret, 0, Some(&pending));
    } else if is_unix(&pending) {
        let socket = UnixSocket { bind: pending, listening: 0 };
        let _ = UNIX_SOCKETS.insert(&fd_key(pending.fd), &socket, 0);
    }
    0
}

#[tracepoint]
pub fn sys_enter_listen(ctx: TracePointContext) -> u32 {
    if wanted_tgid().is_none() {
        return 0;
    }
    if let (Some(fd), Some(backlog)) = (arg(&ctx, ARG0), arg(&ctx, ARG1)) {
        let pending = PendingListen { fd: fd as i32, backlog: backlog as u32 };
        let _ = PENDING_LISTEN.insert(&thread_key(), &pending, 0);
    }
    0
}

#[tracepoint]
pub fn sys_exit_listen(ctx: TracePointContext) -> u32 {
    let key = thread_key();
    // SAFETY: copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_LISTEN.get(&key) }).copied() else {
        return 0;
    };
    let _ = PENDING_LISTEN.remove(&key);
    let Some(ret) = arg(&ctx, RET) else {
        return 0;
    };
    if (ret as i64) < 0 {
        report(EventKind::ListenFailed, pending.fd, ret, pending.backlog, None);
        return 0;
    }
    if let Some(socket) = UNIX_SOCKETS.get_ptr_mut(&fd_key(pending.fd)) {
        // SAFETY: a valid pointer to this map entry, written in place.
        let bind = unsafe {
            (*socket).listening = 1;
            (*socket).bind
        };
        report(EventKind::UnixListen, pending.fd, 0, pending.backlog, Some(&bind));
    }
    0
}

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    let Some(fd) = arg(&ctx, ARG0) else {
        return 0;
    };
    let key = fd_key(fd as i32);
    // Most closes are of other fds: one lookup each, nothing sent.
    // SAFETY: copied out before the entry is removed.
    let Some(socket) = unsafe { UNIX_SOCKETS.get(&key) }.copied() else {
        return 0;
    };
    let _ = UNIX_SOCKETS.remove(&key);
    if socket.listening != 0 {
        report(EventKind::UnixClose, fd as i32, 0, 0, Some(&socket.bind));
    }
    0
}

/// Sends a SyscallRecord; `ret` is the syscall's return (negative errno) or 0.
#[inline(always)]
fn report(kind: EventKind, fd: i32, ret: u64, backlog: u32, bind: Option<&PendingBind>) {
    let Some(mut entry) = EVENTS.reserve::<SyscallRecord>(0) else {
        count_lost();
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: every field of the reserved record is written before submit.
    unsafe {
        (*record).header = header(kind);
        (*record).fd = fd;
        (*record).errno = (ret as i64).unsigned_abs() as u32;
        (*record).backlog = backlog;
        match bind {
            Some(b) => {
                (*record).addr_len = b.addr_len;
                (*record).addr = b.addr;
            }
            None => {
                (*record).addr_len = 0;
                (*record).addr = [0; SOCKADDR_BYTES];
            }
        }
    }
    entry.submit(0);
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
