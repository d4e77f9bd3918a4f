//! The close of an explicitly bound UDP socket, from the cgroup hook
//! `cgroup/sock_release`. (A TCP listener's close comes from the state
//! tracepoint instead, a UNIX socket's from close() and exit.)
use aya_ebpf::{helpers::generated::bpf_get_socket_cookie, macros::cgroup_sock, programs::SockContext};
use watcher_common::{EventKind, IPPROTO_UDP, SocketRecord};

use super::{ALLOW, cgroup_post_bind::BOUND_UDP};
use crate::record::{emit_in, wanted_tgid};

#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    try_sock_release(&ctx);
    ALLOW
}

/// Nothing here can fail but the ring buffer, which counts itself.
#[inline(always)]
fn try_sock_release(ctx: &SockContext) {
    // SAFETY: protocol is readable in every cgroup_sock attach type.
    let protocol = unsafe { (*ctx.sock).protocol };
    if protocol != IPPROTO_UDP {
        return;
    }
    // SAFETY: the cookie helper takes this program's context.
    let sock_id = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
    // SAFETY: the value is copied out before the entry is removed.
    let Some(bound) = (unsafe { BOUND_UDP.get(&sock_id) }).copied() else {
        return;
    };
    // Only fails when the entry is already gone (evicted meanwhile).
    let _ = BOUND_UDP.remove(&sock_id);
    if wanted_tgid().is_none() {
        return;
    }
    // SAFETY: type is readable in every cgroup_sock attach type.
    let sock_type = unsafe { (*ctx.sock).type_ };
    // The socket's namespace as its bind saw it: a close at its holder's
    // exit comes after the task left its namespaces (fput's work runs after
    // exit_task_namespaces), so the task's own would read 0.
    emit_in(EventKind::Close, bound.netns, |r: &mut SocketRecord| {
        r.sock_id = sock_id;
        r.cookie = sock_id;
        r.protocol = protocol;
        r.sock_type = sock_type;
        r.fd = -1;
        r.addr = bound.addr;
        r.family = bound.family;
        r.port = bound.port;
    });
}
