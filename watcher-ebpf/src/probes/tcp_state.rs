//! TCP listeners going up and down, from `sock/inet_sock_set_state`. The
//! tracepoint runs in the context of the task that called listen() or
//! close(), so the record names that task.
use aya_ebpf::{macros::tracepoint, programs::TracePointContext};
use watcher_common::{AF_INET, AF_INET6, EventKind, IPPROTO_TCP, ProgramError, SOCK_STREAM, SocketRecord};

use super::syscall_bind_listen::listen_args;
use crate::{
    kernel::sock_netns,
    record::{emit_in, failed, wanted_tgid},
};

const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;

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
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

/// Reads a field of the tracepoint's record; offsets and sizes match its
/// format (see above), so a failure is counted, not expected.
#[inline(always)]
fn field<T>(ctx: &TracePointContext, offset: usize) -> Result<T, ProgramError> {
    // SAFETY: the helper faults cleanly; `T` is a plain integer or byte array.
    unsafe { ctx.read_at::<T>(offset) }.map_err(|_| ProgramError::ReadKernel)
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), ProgramError> {
    let (protocol, oldstate, newstate) =
        (field::<u16>(ctx, PROTOCOL)?, field::<i32>(ctx, OLDSTATE)?, field::<i32>(ctx, NEWSTATE)?);
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
    let (sock_id, family, port) = (field::<u64>(ctx, SKADDR)?, field::<u16>(ctx, FAMILY)?, field::<u16>(ctx, SPORT)?);
    let mut addr = [0u8; 16];
    match family {
        AF_INET => addr[..4].copy_from_slice(&field::<[u8; 4]>(ctx, SADDR)?),
        AF_INET6 => addr = field::<[u8; 16]>(ctx, SADDR_V6)?,
        // TCP only comes in these two families.
        _ => return Ok(()),
    }
    // Inside listen(), its fd and backlog; a close has neither.
    let listen = if kind == EventKind::Listen { listen_args() } else { None };
    emit_in(kind, sock_netns(sock_id), |r: &mut SocketRecord| {
        r.sock_id = sock_id;
        r.protocol = IPPROTO_TCP;
        r.sock_type = SOCK_STREAM;
        r.fd = listen.map_or(-1, |l| l.fd);
        r.backlog = listen.map_or(0, |l| l.backlog);
        r.addr = addr;
        r.family = family;
        r.port = port;
    });
    Ok(())
}
