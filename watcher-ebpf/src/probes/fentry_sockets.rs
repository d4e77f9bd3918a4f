//! The socket calls from fentry/fexit on the kernel functions behind them
//! (`__sys_bind`, `__sys_listen`, `close_fd`, `__sys_socket`,
//! `__sys_setsockopt`, `__sys_accept4`), on kernels that let tracing
//! programs load (BPF trampolines, BTF). A trampoline runs only when its
//! function is called, where a syscall tracepoint puts every task on the
//! syscall slow path for every syscall; the loader prefers these and falls
//! back to the tracepoints of `syscall_*.rs` (see watcher's
//! `kernel::hooks`). The facts and records are the same: each program
//! reads its arguments (fexit: and the return value, one slot after the
//! last argument) and hands them to the same code as the tracepoints.
//!
//! The kernel functions take `int`s: an argument's upper 32 bits are not
//! defined, so each is read as `i32`.
use aya_ebpf::{
    macros::{fentry, fexit},
    programs::{FEntryContext, FExitContext},
};
use watcher_common::ProgramError;

use super::{
    syscall_accept::report_accept,
    syscall_args::{PendingAccept, PendingSockopt},
    syscall_bind_listen::{bind_entered, bind_returned, fd_closing, listen_entered, listen_returned},
    syscall_passive::{is_watched_option, passive_socket, report_sockopt, socket_returned},
};
use crate::record::{failed, wanted_tgid};

#[inline(always)]
fn done(result: Result<(), ProgramError>) -> u32 {
    match result {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

/// `int __sys_bind(int fd, struct sockaddr __user *umyaddr, int addrlen)`
#[fentry(function = "__sys_bind")]
pub fn fentry_bind(ctx: FEntryContext) -> u32 {
    done(try_fentry_bind(&ctx))
}

fn try_fentry_bind(ctx: &FEntryContext) -> Result<(), ProgramError> {
    if wanted_tgid().is_none() {
        return Ok(());
    }
    bind_entered(ctx.arg::<i32>(0), ctx.arg::<u64>(1), ctx.arg::<i32>(2) as u32)
}

#[fexit(function = "__sys_bind")]
pub fn fexit_bind(ctx: FExitContext) -> u32 {
    done(bind_returned(|| Ok(i64::from(ctx.arg::<i32>(3)))))
}

/// `int __sys_listen(int fd, int backlog)`
#[fentry(function = "__sys_listen")]
pub fn fentry_listen(ctx: FEntryContext) -> u32 {
    done(try_fentry_listen(&ctx))
}

fn try_fentry_listen(ctx: &FEntryContext) -> Result<(), ProgramError> {
    if wanted_tgid().is_none() {
        return Ok(());
    }
    listen_entered(ctx.arg::<i32>(0), ctx.arg::<i32>(1) as u32)
}

#[fexit(function = "__sys_listen")]
pub fn fexit_listen(ctx: FExitContext) -> u32 {
    done(listen_returned(|| Ok(i64::from(ctx.arg::<i32>(2)))))
}

/// `int close_fd(unsigned int fd)`, what close() calls.
#[fentry(function = "close_fd")]
pub fn fentry_close_fd(ctx: FEntryContext) -> u32 {
    fd_closing(ctx.arg::<i32>(0));
    0
}

/// `int __sys_socket(int family, int type, int protocol)`: the new fd.
#[fexit(function = "__sys_socket")]
pub fn fexit_socket(ctx: FExitContext) -> u32 {
    if wanted_tgid().is_none() {
        return 0;
    }
    let fd = ctx.arg::<i32>(3);
    if fd < 0 {
        return 0;
    }
    let pending = passive_socket(ctx.arg::<u32>(0), ctx.arg::<u32>(1), ctx.arg::<u32>(2));
    socket_returned(pending.as_ref(), fd);
    0
}

/// `int __sys_setsockopt(int fd, int level, int optname, char __user
/// *optval, int optlen)`: reported when it returned 0.
#[fexit(function = "__sys_setsockopt")]
pub fn fexit_sockopt(ctx: FExitContext) -> u32 {
    if wanted_tgid().is_none() || ctx.arg::<i32>(5) != 0 {
        return 0;
    }
    let (level, optname) = (ctx.arg::<u32>(1), ctx.arg::<u32>(2));
    if is_watched_option(level, optname) {
        let pending = PendingSockopt {
            optval: ctx.arg::<u64>(3),
            fd: ctx.arg::<i32>(0),
            level,
            optname,
            optlen: ctx.arg::<u32>(4),
        };
        report_sockopt(&pending);
    }
    0
}

/// `int __sys_accept4(int fd, struct sockaddr __user *upeer_sockaddr,
/// int __user *upeer_addrlen, int flags)`: the new fd (opt-in: `--accept`).
#[fexit(function = "__sys_accept4")]
pub fn fexit_accept(ctx: FExitContext) -> u32 {
    if wanted_tgid().is_none() {
        return 0;
    }
    let fd = ctx.arg::<i32>(4);
    if fd >= 0 {
        let pending = PendingAccept { listen_fd: ctx.arg::<i32>(0), peer_requested: u32::from(ctx.arg::<u64>(1) != 0) };
        report_accept(&pending, fd);
    }
    0
}
