//! TCP listeners going up and down, from `sock/inet_sock_set_state`. The
//! tracepoint runs in the context of the task that called listen() or
//! close(), so the record names that task.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use watcher_common::{AF_INET, AF_INET6, EventKind, IPPROTO_TCP};

use super::bind_listen::listen_args;
use crate::{
    kernel::sock_netns,
    record::{SocketFacts, submit, wanted_tgid},
};

const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;
const SOCK_STREAM: u32 = 1;

// Offsets from /sys/kernel/tracing/events/sock/inet_sock_set_state/format,
// a stable tracepoint ABI.
const SKADDR: usize = 8;
const OLDSTATE: usize = 16;
const NEWSTATE: usize = 20;
const SPORT: usize = 24;
const FAMILY: usize = 28;
const PROTOCOL: usize = 30;
const SADDR: usize = 32;
const SADDR_V6: usize = 40;

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    match try_inet_sock_set_state(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), i64> {
    // SAFETY: offsets and sizes match the tracepoint's format (see above).
    let (protocol, oldstate, newstate) =
        unsafe { (ctx.read_at::<u16>(PROTOCOL)?, ctx.read_at::<i32>(OLDSTATE)?, ctx.read_at::<i32>(NEWSTATE)?) };
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
    // SAFETY: as above.
    let (sock_id, family, port) =
        unsafe { (ctx.read_at::<u64>(SKADDR)?, ctx.read_at::<u16>(FAMILY)?, ctx.read_at::<u16>(SPORT)?) };
    let mut addr = [0u8; 16];
    match family {
        // SAFETY: as above.
        AF_INET => addr[..4].copy_from_slice(&unsafe { ctx.read_at::<[u8; 4]>(SADDR)? }),
        AF_INET6 => addr = unsafe { ctx.read_at::<[u8; 16]>(SADDR_V6)? },
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
