//! Every successful bind(), v4 and v6, from the cgroup hooks
//! `cgroup/post_bind4` and `cgroup/post_bind6` on the cgroup v2 root. These
//! run inside bind(), after the kernel picked the port, so a bind to port 0
//! reports the ephemeral one. They always allow: watching never changes
//! what the caller sees.
use aya_ebpf::{
    helpers::generated::bpf_get_socket_cookie,
    macros::{cgroup_sock, map},
    maps::LruHashMap,
    programs::SockContext,
};
use watcher_common::{AF_INET, AF_INET6, BOUND_SOCKETS_MAX, BoundSocket, EventKind, IPPROTO_UDP, SocketRecord};

use super::{
    ALLOW,
    syscall_bind_listen::{bind_fd, inet_bind_seen},
};
use crate::{
    kernel::current_netns,
    record::{CountFailure as _, emit_in, wanted_tgid},
};

/// Where each explicitly bound UDP socket is bound, by socket cookie:
/// `sock_release` cannot read the local address, and looking the cookie up
/// here is how it tells a bound socket from the host's many others.
/// Userspace seeds it at start with the bound UDP sockets already there.
#[map(name = "BOUND_UDP")]
pub static BOUND_UDP: LruHashMap<u64, BoundSocket> = LruHashMap::with_max_entries(BOUND_SOCKETS_MAX, 0);

#[cgroup_sock(post_bind4)]
pub fn post_bind4(ctx: SockContext) -> i32 {
    // SAFETY: post_bind4 may read src_ip4 and src_port (kernel's
    // __sock_filter_check_attach_type); the verifier rewrites these loads.
    let (ip4, port) = unsafe { ((*ctx.sock).src_ip4, (*ctx.sock).src_port) };
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&ip4.to_ne_bytes());
    report_bind(&ctx, AF_INET, addr, port);
    ALLOW
}

#[cgroup_sock(post_bind6)]
pub fn post_bind6(ctx: SockContext) -> i32 {
    // SAFETY: post_bind6 may read src_ip6 and src_port.
    let (ip6, port) = unsafe { ((*ctx.sock).src_ip6, (*ctx.sock).src_port) };
    let mut addr = [0u8; 16];
    for (chunk, word) in addr.chunks_exact_mut(4).zip(ip6) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    report_bind(&ctx, AF_INET6, addr, port);
    ALLOW
}

/// Nothing here can fail but the map insert and the ring buffer, which
/// count themselves.
#[inline(always)]
fn report_bind(ctx: &SockContext, family: u16, addr: [u8; 16], port: u32) {
    if wanted_tgid().is_none() {
        return;
    }
    // SAFETY: family, protocol and type are readable in every cgroup_sock
    // attach type; the cookie helper takes this program's context.
    let (protocol, sock_type, sock_id) =
        unsafe { ((*ctx.sock).protocol, (*ctx.sock).type_, bpf_get_socket_cookie(ctx.sock.cast())) };
    let port = port as u16;
    let netns = current_netns();
    if protocol == IPPROTO_UDP {
        // A full LRU table evicts its oldest entry rather than fail (that
        // socket's close then goes unreported, which the README states);
        // a failure here is something else, and counted.
        BOUND_UDP.insert(&sock_id, &BoundSocket { addr, family, port, netns }, 0).or_count();
    }
    let fd = bind_fd();
    inet_bind_seen();
    emit_in(EventKind::Bind, netns, |r: &mut SocketRecord| {
        r.sock_id = sock_id;
        r.cookie = sock_id;
        r.protocol = protocol;
        r.sock_type = sock_type;
        r.fd = fd;
        r.addr = addr;
        r.family = family;
        r.port = port;
    });
}
