//! Accepted connections (opt-in: `watch --accept`): the accepting process,
//! the listener's fd, the new fd, and both ends as the accepted socket has
//! them — read from the socket, so also when the caller passed NULL for the
//! peer's address.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use watcher_common::{AF_INET, AF_INET6, AcceptRecord, EventKind};

use super::syscall_args::{ARG0, ARG1, PENDING_ACCEPT, PendingAccept, RET, arg, thread_key};
use crate::{
    kernel::{offsets, read, sock_netns, sock_of_fd},
    record::{EVENTS, count_lost, header_in, wanted_tgid},
};

#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    enter(&ctx);
    0
}

#[tracepoint]
pub fn sys_enter_accept4(ctx: TracePointContext) -> u32 {
    enter(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    exit(&ctx);
    0
}

#[inline(always)]
fn enter(ctx: &TracePointContext) {
    if wanted_tgid().is_none() {
        return;
    }
    if let (Some(fd), Some(peer)) = (arg(ctx, ARG0), arg(ctx, ARG1)) {
        let pending = PendingAccept { listen_fd: fd as i32, peer_requested: u32::from(peer != 0) };
        let _ = PENDING_ACCEPT.insert(&thread_key(), &pending, 0);
    }
}

#[inline(always)]
fn exit(ctx: &TracePointContext) {
    let key = thread_key();
    // SAFETY: copied out before the entry is removed.
    let Some(pending) = (unsafe { PENDING_ACCEPT.get(&key) }).copied() else {
        return;
    };
    let _ = PENDING_ACCEPT.remove(&key);
    let Some(fd) = arg(ctx, RET).filter(|&r| (r as i64) >= 0) else {
        return;
    };
    let fd = fd as i32;
    let sk = sock_of_fd(fd).unwrap_or(0);
    let Some(mut entry) = EVENTS.reserve::<AcceptRecord>(0) else {
        count_lost();
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: every field of the reserved record is written before submit.
    unsafe {
        (*record).header = header_in(EventKind::Accept, sock_netns(sk));
        (*record).listen_fd = pending.listen_fd;
        (*record).fd = fd;
        (*record).peer_requested = pending.peer_requested;
        (*record).reserved = [0; 3];
        (*record).family = 0;
        (*record).local_port = 0;
        (*record).peer_port = 0;
        (*record).local_addr = [0; 16];
        (*record).peer_addr = [0; 16];
        if let Some(o) = offsets() {
            let family = read::<u16>(sk, o.skc_family).unwrap_or(0);
            (*record).family = family;
            (*record).local_port = read::<u16>(sk, o.skc_num).unwrap_or(0);
            // skc_dport is in network order.
            (*record).peer_port = u16::from_be(read::<u16>(sk, o.skc_dport).unwrap_or(0));
            if family == AF_INET {
                let [a, b, c, d] = read::<[u8; 4]>(sk, o.skc_rcv_saddr).unwrap_or([0; 4]);
                (*record).local_addr = [a, b, c, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                let [a, b, c, d] = read::<[u8; 4]>(sk, o.skc_daddr).unwrap_or([0; 4]);
                (*record).peer_addr = [a, b, c, d, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
            } else if family == AF_INET6 {
                (*record).local_addr = read::<[u8; 16]>(sk, o.skc_v6_rcv_saddr).unwrap_or([0; 16]);
                (*record).peer_addr = read::<[u8; 16]>(sk, o.skc_v6_daddr).unwrap_or([0; 16]);
            }
        }
    }
    entry.submit(0);
}
