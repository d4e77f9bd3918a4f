//! The close of an explicitly bound UDP socket, from `cgroup/sock_release`.
//! (A TCP listener's close comes from the state tracepoint instead.)
use aya_ebpf::{helpers::generated::bpf_get_socket_cookie, macros::cgroup_sock, programs::SockContext};
use watcher_common::{EventKind, IPPROTO_UDP};

use super::bind::BOUND_UDP;
use crate::{
    kernel::current_netns,
    record::{SocketFacts, submit, wanted_tgid},
};

const ALLOW: i32 = 1;

#[cgroup_sock(sock_release)]
pub fn sock_release(ctx: SockContext) -> i32 {
    try_sock_release(&ctx);
    ALLOW
}

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
    let _ = BOUND_UDP.remove(&sock_id);
    if wanted_tgid().is_none() {
        return;
    }
    // SAFETY: type is readable in every cgroup_sock attach type.
    let sock_type = unsafe { (*ctx.sock).type_ };
    submit(&SocketFacts {
        kind: EventKind::Close,
        sock_id,
        family: bound.family,
        port: bound.port,
        protocol,
        sock_type,
        addr: bound.addr,
        fd: -1,
        backlog: 0,
        netns: current_netns(),
    });
}
