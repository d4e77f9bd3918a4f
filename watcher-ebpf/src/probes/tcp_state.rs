//! TCP listeners going up and down, from `sock/inet_sock_set_state`. The
//! tracepoint runs in the context of the task that called listen() or
//! close(), so the record names that task.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use watcher_common::{AF_INET, AF_INET6, EventKind, IPPROTO_TCP};

use super::bind_listen::listen_args;
use crate::{
    kernel::sock_netns,
    record::{SocketFacts, submit, wanted_tgid},
    tracepoint::{field, layout},
};

const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;
const SOCK_STREAM: u32 = 1;

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    match try_inet_sock_set_state(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), i64> {
    // Offsets from this kernel's sock/inet_sock_set_state/format.
    let l = layout();
    let (protocol, oldstate, newstate) =
        (field::<u16>(ctx, l.tcp_protocol)?, field::<i32>(ctx, l.tcp_oldstate)?, field::<i32>(ctx, l.tcp_newstate)?);
    if u32::from(protocol) != IPPROTO_TCP {
        return Ok(());
    }
    let kind = match (oldstate, newstate) {
        (_, TCP_LISTEN) => EventKind::Listen,
        (TCP_LISTEN, TCP_CLOSE) => EventKind::Close,
        _ => return Ok(()),
    };
    if wanted_tgid().is_none() {
        return Ok(());
    }
    let (sock_id, family, port) =
        (field::<u64>(ctx, l.tcp_skaddr)?, field::<u16>(ctx, l.tcp_family)?, field::<u16>(ctx, l.tcp_sport)?);
    let mut addr = [0u8; 16];
    match family {
        AF_INET => addr[..4].copy_from_slice(&field::<[u8; 4]>(ctx, l.tcp_saddr)?),
        AF_INET6 => addr = field::<[u8; 16]>(ctx, l.tcp_saddr_v6)?,
        _ => return Ok(()),
    }
    // Inside listen(), its fd and backlog; a close has neither.
    let listen = if kind == EventKind::Listen { listen_args() } else { None };
    submit(&SocketFacts {
        kind,
        sock_id,
        family,
        port,
        protocol: IPPROTO_TCP,
        sock_type: SOCK_STREAM,
        addr,
        fd: listen.map_or(-1, |l| l.fd),
        backlog: listen.map_or(0, |l| l.backlog),
        netns: sock_netns(sock_id),
    });
    Ok(())
}
