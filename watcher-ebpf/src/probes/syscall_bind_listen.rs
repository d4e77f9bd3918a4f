//! bind() and listen() from the syscall tracepoints
//! `syscalls/sys_{enter,exit}_{bind,listen}` and `syscalls/sys_enter_close`
//! (the exits alone where the arguments come from the saved registers):
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
    helpers::generated::bpf_get_current_task_btf,
    macros::{map, tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::TracePointContext,
};
use watcher_common::{
    AF_UNIX, EventKind, ProgramError, SOCK_DGRAM, SOCKADDR_BYTES, SyscallRecord, UNIX_SOCKETS_MAX, UnixSocket,
};

use super::syscall_args::{
    ARG0, ARG1, ARG2, PENDING_BIND, PENDING_LISTEN, PendingBind, PendingListen, RET, Syscall, arg, args_in_registers,
    current_args, read_user_bytes, thread_key,
};
use crate::{
    kernel::{self, offsets, read_kernel_bytes, socket_type_of_fd},
    record::{CountFailure as _, emit, failed, wanted_tgid},
};

/// Bytes of `sockaddr_un` before `sun_path`: a bind() given no more is an
/// autobind (the kernel picks an abstract name, unknown here), as a client
/// does; it is not reported.
const SUN_PATH_OFFSET: u32 = 2;

#[map(name = "UNIX_SOCKETS")]
static UNIX_SOCKETS: LruHashMap<u64, UnixSocket> = LruHashMap::with_max_entries(UNIX_SOCKETS_MAX, 0);

/// The last inet bind a post_bind hook saw on this CPU: its thread, and
/// that thread's context switches then. Where it matches at a bind()'s
/// exit, the exit is that call's (the same thread on the same CPU with no
/// switch in between: a migration or another call would have switched),
/// and the socket is not a UNIX one: the exit skips its look into the
/// kernel's structs, most of its cost. Anything else (no match, a stale
/// entry, a thread that moved) only means that look is made.
#[map(name = "INET_BIND_SEEN")]
static INET_BIND_SEEN: PerCpuArray<InetBindSeen> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
struct InetBindSeen {
    thread: u64,
    switches: u64,
}

/// The calling task's context switches, voluntary and not.
#[inline(always)]
fn context_switches() -> u64 {
    let Some(o) = offsets() else {
        return 0;
    };
    // SAFETY: a helper without side effects.
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    // SAFETY: `task` is the current task's `struct task_struct` (a BTF
    // pointer the verifier checks each load against), and both offsets are
    // its `unsigned long` members, from BTF.
    let load = |offset: u32| unsafe { core::ptr::read_volatile(task.add(offset as usize).cast::<u64>()) };
    load(o.task_nvcsw).wrapping_add(load(o.task_nivcsw))
}

/// Said by post_bind, inside bind(), of an inet socket (see INET_BIND_SEEN).
#[inline(always)]
pub fn inet_bind_seen() {
    if !args_in_registers() {
        return;
    }
    if let Some(seen) = INET_BIND_SEEN.get_ptr_mut(0) {
        // SAFETY: this CPU's slot, which no other CPU writes.
        unsafe { *seen = InetBindSeen { thread: thread_key(), switches: context_switches() } };
    }
}

/// At bind()'s exit: whether post_bind saw this call's socket as an inet
/// one (and the mark is used up).
#[inline(always)]
fn was_inet_bind() -> bool {
    let Some(seen) = INET_BIND_SEEN.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot, which no other CPU writes.
    unsafe {
        let matched = (*seen).thread == thread_key() && (*seen).switches == context_switches();
        (*seen).thread = 0;
        matched
    }
}

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
    if !args_in_registers() {
        return bind_returned(|| arg(ctx, RET).map(|ret| ret as i64));
    }
    if wanted_tgid().is_none() {
        return Ok(());
    }
    let Some([fd, addr, addr_len]) = current_args(Syscall::Exiting) else {
        return Ok(());
    };
    bind_exited(fd as i32, addr, addr_len as u32, arg(ctx, RET)? as i64);
    Ok(())
}

/// bind(fd, addr, addr_len) returned `ret`, its arguments read at its exit
/// from the saved registers. A failure is reported with the address the
/// caller gave (the kernel bound nothing). A success is looked at only
/// for a UNIX socket, and then in the kernel's own structs: by the exit
/// the caller's buffer may say anything (a thread of its own may have
/// rewritten it), and the kernel knows the socket's family and the name it
/// bound.
#[inline(always)]
fn bind_exited(fd: i32, addr: u64, addr_len: u32, ret: i64) {
    // Used up whatever the call's outcome: a bind refused after post_bind
    // (by another program's post_bind) must not leave its mark for this
    // thread's next bind, which may be a UNIX one.
    let inet = was_inet_bind();
    let mut bind = PendingBind { addr: [0; SOCKADDR_BYTES], fd, addr_len };
    if ret < 0 {
        // A fault is counted there; the failure (EFAULT) is then reported without the address.
        read_user_bytes(&mut bind.addr, addr, addr_len);
        report(EventKind::BindFailed, fd, ret as u64, 0, 0, Some(&bind));
        return;
    }
    if inet {
        return;
    }
    let Some(o) = offsets() else {
        return;
    };
    let Some(socket) = kernel::socket_of_fd(fd) else {
        return;
    };
    let sk = kernel::read_or::<u64>(socket, o.socket_sk, 0);
    if kernel::read_or::<u16>(sk, o.skc_family, 0) != AF_UNIX {
        return;
    }
    let sock_type = u32::from(kernel::read_or::<u16>(socket, o.socket_type, 0));
    let name = kernel::read_or::<u64>(sk, o.unix_addr, 0);
    let len = kernel::read_or::<i32>(name, o.unix_address_len, 0);
    if name == 0 || len <= 0 {
        // A bind that left no address: nothing to name.
        return;
    }
    bind.addr_len = read_kernel_bytes(&mut bind.addr, name + u64::from(o.unix_address_name), len as u32);
    // An autobind (the caller gave no path) is a client's, as below.
    unix_bound(&bind, sock_type, addr_len > SUN_PATH_OFFSET);
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
        unix_bound(&pending, socket_type_of_fd(pending.fd), pending.addr_len > SUN_PATH_OFFSET);
    }
    Ok(())
}

/// A UNIX socket of `sock_type` was bound as `bind` says (`named`: to a
/// path or an abstract name the caller gave): kept for its listen() and
/// close(); a named datagram socket, which never listens, is reported now.
#[inline(always)]
fn unix_bound(bind: &PendingBind, sock_type: u32, named: bool) {
    let named_datagram = sock_type == SOCK_DGRAM && named;
    let socket = UnixSocket {
        addr: bind.addr,
        fd: bind.fd,
        addr_len: bind.addr_len,
        sock_type,
        reported: u32::from(named_datagram),
    };
    UNIX_SOCKETS.insert(&fd_key(bind.fd), &socket, 0).or_count();
    if named_datagram {
        report(EventKind::UnixBind, bind.fd, 0, 0, sock_type, Some(bind));
    }
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
    if !args_in_registers() {
        return listen_returned(|| arg(ctx, RET).map(|ret| ret as i64));
    }
    if wanted_tgid().is_none() {
        return Ok(());
    }
    let Some([fd, backlog, _]) = current_args(Syscall::Exiting) else {
        return Ok(());
    };
    listen_exited(&PendingListen { fd: fd as i32, backlog: backlog as u32 }, arg(ctx, RET)? as i64);
    Ok(())
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
    listen_exited(&pending, ret()?);
    Ok(())
}

/// listen() as `pending` says returned `ret`: a failure is reported, and
/// a UNIX socket bound before starts listening.
#[inline(always)]
fn listen_exited(pending: &PendingListen, ret: i64) {
    if ret < 0 {
        report(EventKind::ListenFailed, pending.fd, ret as u64, pending.backlog, 0, None);
        return;
    }
    if let Some(socket) = UNIX_SOCKETS.get_ptr_mut(&fd_key(pending.fd)) {
        // SAFETY: a valid pointer to this map entry, written in place.
        let (bind, sock_type) = unsafe {
            (*socket).reported = 1;
            (bind_of(&*socket), (*socket).sock_type)
        };
        report(EventKind::UnixListen, pending.fd, 0, pending.backlog, sock_type, Some(&bind));
    }
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
    if args_in_registers() {
        return current_args(Syscall::Bind).map_or(-1, |[fd, ..]| fd as i32);
    }
    // SAFETY: a plain read of this thread's entry.
    unsafe { PENDING_BIND.get(&thread_key()) }.map_or(-1, |p| p.fd)
}

/// The fd and backlog of the listen() this thread is inside, if any.
#[inline(always)]
pub fn listen_args() -> Option<PendingListen> {
    if args_in_registers() {
        return current_args(Syscall::Listen)
            .map(|[fd, backlog, _]| PendingListen { fd: fd as i32, backlog: backlog as u32 });
    }
    // SAFETY: a plain read of this thread's entry.
    unsafe { PENDING_LISTEN.get(&thread_key()) }.copied()
}
