//! Accepted connections (opt-in: `watch --accept`), from the syscall
//! tracepoints `syscalls/sys_{enter,exit}_accept` and `…_accept4`: the
//! accepting process, the listener's fd, the new fd, and both ends as the
//! accepted socket has them — read from the socket, so also when the
//! caller passed NULL for the peer's address.
use aya_ebpf::{helpers::bpf_probe_read_kernel, macros::tracepoint, programs::TracePointContext};
use watcher_common::{AF_INET, AF_INET6, AcceptRecord, EventKind, ProgramError};

use super::syscall_args::{ARG0, ARG1, PENDING_ACCEPT, PendingAccept, RET, arg, thread_key};
use crate::{
    kernel::{offsets, read, sock_netns, sock_of_fd},
    record::{emit_in, failed, wanted_tgid},
};

#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    match enter(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

#[tracepoint]
pub fn sys_enter_accept4(ctx: TracePointContext) -> u32 {
    match enter(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    match exit(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    match exit(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

#[inline(always)]
fn enter(ctx: &TracePointContext) -> Result<(), ProgramError> {
    if wanted_tgid().is_none() {
        return Ok(());
    }
    let pending = PendingAccept { listen_fd: arg(ctx, ARG0)? as i32, peer_requested: u32::from(arg(ctx, ARG1)? != 0) };
    PENDING_ACCEPT.insert(&thread_key(), &pending, 0).map_err(|_| ProgramError::MapUpdate)
}

#[inline(always)]
fn exit(ctx: &TracePointContext) -> Result<(), ProgramError> {
    let key = thread_key();
    // SAFETY: copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_ACCEPT.get(&key) }).copied() else {
        return Ok(());
    };
    // Only fails when the entry is already gone (evicted meanwhile).
    let _ = PENDING_ACCEPT.remove(&key);
    let ret = arg(ctx, RET)?;
    if (ret as i64) >= 0 {
        report_accept(&pending, ret as i32);
    }
    Ok(())
}

/// accept() on `pending.listen_fd` returned the connection `fd`.
#[inline(always)]
pub fn report_accept(pending: &PendingAccept, fd: i32) {
    // Without BTF offsets (said at start) the record goes without its ends;
    // a failed read on the way is counted by `read`.
    let sk = sock_of_fd(fd).unwrap_or(0);
    emit_in(EventKind::Accept, sock_netns(sk), |r: &mut AcceptRecord| {
        r.listen_fd = pending.listen_fd;
        r.fd = fd;
        r.peer_requested = pending.peer_requested;
        let Some(o) = offsets() else {
            return;
        };
        let family = read::<u16>(sk, o.skc_family).unwrap_or(0);
        r.family = family;
        r.local_port = read::<u16>(sk, o.skc_num).unwrap_or(0);
        // skc_dport is in network order.
        // Read without `read`'s error counter: with the counter's map
        // lookup between the read and the byte swap, the compiled code read
        // a register the call had clobbered (on the path where the value is
        // unused), which 6.1's verifier refuses (R1 !read_ok). A failed
        // read here leaves the peer port 0, uncounted.
        // SAFETY: the helper faults cleanly on a bad address.
        r.peer_port =
            unsafe { bpf_probe_read_kernel((sk + u64::from(o.skc_dport)) as *const u16) }.map_or(0, u16::from_be);
        if family == AF_INET {
            let [a, b, c, d] = read::<[u8; 4]>(sk, o.skc_rcv_saddr).unwrap_or([0; 4]);
            r.local_addr[..4].copy_from_slice(&[a, b, c, d]);
            let [a, b, c, d] = read::<[u8; 4]>(sk, o.skc_daddr).unwrap_or([0; 4]);
            r.peer_addr[..4].copy_from_slice(&[a, b, c, d]);
        } else if family == AF_INET6 {
            r.local_addr = read::<[u8; 16]>(sk, o.skc_v6_rcv_saddr).unwrap_or([0; 16]);
            r.peer_addr = read::<[u8; 16]>(sk, o.skc_v6_daddr).unwrap_or([0; 16]);
        }
    });
}
