//! bind() and listen() at the syscall level: what inet hooks cannot see —
//! a failed call (a port fight during a restart: EADDRINUSE, EACCES…) — and
//! the fd and backlog, handed to the post_bind and LISTEN hooks that run
//! inside the call.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use watcher_common::{EventKind, SOCKADDR_BYTES, SyscallRecord};

use super::syscall_args::{
    ARG0, ARG1, ARG2, PENDING_BIND, PENDING_LISTEN, PendingBind, PendingListen, RET, arg,
    read_user_bytes, thread_key,
};
use crate::record::{EVENTS, count_lost, header, wanted_tgid};

#[tracepoint]
pub fn sys_enter_bind(ctx: TracePointContext) -> u32 {
    if wanted_tgid().is_some() {
        enter_bind(&ctx);
    }
    0
}

fn enter_bind(ctx: &TracePointContext) -> Option<()> {
    let (fd, addr, addr_len) = (arg(ctx, ARG0)?, arg(ctx, ARG1)?, arg(ctx, ARG2)?);
    let mut pending = PendingBind {
        addr: [0; SOCKADDR_BYTES],
        fd: fd as i32,
        addr_len: addr_len as u32,
    };
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
    if let Some(ret) = arg(&ctx, RET)
        && (ret as i64) < 0
    {
        report_failure(EventKind::BindFailed, pending.fd, ret, 0, Some(&pending));
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
    if let Some(ret) = arg(&ctx, RET)
        && (ret as i64) < 0
    {
        report_failure(EventKind::ListenFailed, pending.fd, ret, pending.backlog, None);
    }
    0
}

#[inline(always)]
fn report_failure(kind: EventKind, fd: i32, ret: u64, backlog: u32, bind: Option<&PendingBind>) {
    let Some(mut entry) = EVENTS.reserve::<SyscallRecord>(0) else {
        count_lost();
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: every field of the reserved record is written before submit.
    unsafe {
        (*record).header = header(kind, 0);
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
