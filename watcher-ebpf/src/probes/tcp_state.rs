//! TCP listeners going up and down, from `inet_sock_set_state`: its raw
//! tracepoint where the loader knows the socket's layout (the cheaper one:
//! the kernel builds no trace record for it, which for the perf tracepoint
//! `sock/inet_sock_set_state` costs more than the program), else the perf
//! tracepoint. Either runs in the context of the task that called listen()
//! or close(), so the record names that task; under `kill_unexpected` a
//! listen no rule allows stops that task here (see
//! `cgroup_bind_enforce::stop_unallowed_listen`).
use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use watcher_common::{
    AF_INET, AF_INET6, EventKind, IPPROTO_TCP, ProgramError, SOCK_STREAM, SOCKET_STOPPED, SocketRecord,
};

use super::{
    cgroup_bind_enforce::{Bind, stop_unallowed_listen},
    syscall_bind_listen::listen_args,
};
use crate::{
    kernel::{self, offsets, sock_cookie, sock_netns},
    record::{count_error, emit_in, failed, wanted_tgid},
    tracepoint::{bytes16_at, field_at, layout},
};

const TCP_CLOSE: i32 = 7;
const TCP_LISTEN: i32 = 10;

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    match try_inet_sock_set_state(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

/// A field of the tracepoint's record at its offset in this kernel's
/// format, a plain load where that is `AT`, the offset in 4.16 to 6.18's
/// format (`field_at`); a failed read is counted, not expected.
#[inline(always)]
fn read<T: Copy, const AT: usize>(ctx: &TracePointContext, offset: u32) -> Result<T, ProgramError> {
    field_at::<T, AT>(ctx, offset).map_err(|_| ProgramError::ReadKernel)
}

fn try_inet_sock_set_state(ctx: &TracePointContext) -> Result<(), ProgramError> {
    // Offsets from this kernel's sock/inet_sock_set_state/format.
    let l = layout();
    let (protocol, oldstate, newstate) = (
        read::<u16, 30>(ctx, l.tcp_protocol)?,
        read::<i32, 16>(ctx, l.tcp_oldstate)?,
        read::<i32, 20>(ctx, l.tcp_newstate)?,
    );
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
        (read::<u64, 8>(ctx, l.tcp_skaddr)?, read::<u16, 28>(ctx, l.tcp_family)?, read::<u16, 24>(ctx, l.tcp_sport)?);
    let mut addr = [0u8; 16];
    match family {
        // The bytes as they are in the record (network order), whichever way they are read.
        AF_INET => addr[..4].copy_from_slice(&read::<u32, 32>(ctx, l.tcp_saddr)?.to_ne_bytes()),
        AF_INET6 => addr = bytes16_at::<40>(ctx, l.tcp_saddr_v6).map_err(|_| ProgramError::ReadKernel)?,
        // TCP only comes in these two families.
        _ => return Ok(()),
    }
    report(kind, sock_id, family, port, addr)
}

/// `TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)`.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn raw_tcp_state(ctx: RawTracePointContext) -> i32 {
    match try_raw_tcp_state(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e) as i32,
    }
}

fn try_raw_tcp_state(ctx: &RawTracePointContext) -> Result<(), ProgramError> {
    let (sk, oldstate, newstate) = (ctx.arg::<u64>(0), ctx.arg::<u64>(1) as i32, ctx.arg::<u64>(2) as i32);
    // The states first: they cost no read, and most changes (every TCP
    // connection's) end here.
    let kind = match (oldstate, newstate) {
        (_, TCP_LISTEN) => EventKind::Listen,
        (TCP_LISTEN, TCP_CLOSE) => EventKind::Close,
        _ => return Ok(()),
    };
    // The loader attaches this program only with the socket's layout.
    let o = offsets().ok_or(ProgramError::ReadKernel)?;
    let sock = |offset| kernel::read::<u16>(sk, offset).ok_or(ProgramError::ReadKernel);
    if u32::from(sock(o.sk_protocol)?) != IPPROTO_TCP || wanted_tgid().is_none() {
        return Ok(());
    }
    // What the perf tracepoint's record holds, read where it reads it
    // from: the bound port (`inet_sport`: a closing listener has already
    // given its `skc_num` back when the close is traced) and address.
    let (family, port) = (sock(o.skc_family)?, u16::from_be(sock(o.inet_sport)?));
    let mut addr = [0u8; 16];
    match family {
        AF_INET => {
            addr[..4].copy_from_slice(&kernel::read::<[u8; 4]>(sk, o.skc_rcv_saddr).ok_or(ProgramError::ReadKernel)?)
        }
        AF_INET6 => addr = kernel::read::<[u8; 16]>(sk, o.skc_v6_rcv_saddr).ok_or(ProgramError::ReadKernel)?,
        _ => return Ok(()),
    }
    report(kind, sk, family, port, addr)
}

/// A TCP socket `sock_id` (the kernel's `struct sock *`) starts or stops
/// listening on `addr`:`port`: its record, after the stop of an unallowed
/// listen where `kill_unexpected` asks for it.
#[inline(always)]
fn report(kind: EventKind, sock_id: u64, family: u16, port: u16, addr: [u8; 16]) -> Result<(), ProgramError> {
    // Inside listen(), its fd and backlog; a close has neither.
    let listen = if kind == EventKind::Listen { listen_args() } else { None };
    let stopped = kind == EventKind::Listen && {
        let listen = Bind { family, port, protocol: IPPROTO_TCP, sock_type: SOCK_STREAM, addr };
        // A failure is counted; the listener is then left to userspace.
        stop_unallowed_listen(&listen).unwrap_or_else(|e| {
            count_error(e);
            false
        })
    };
    let cookie = sock_cookie(sock_id);
    emit_in(kind, sock_netns(sock_id), |r: &mut SocketRecord| {
        r.sock_id = sock_id;
        r.cookie = cookie;
        r.protocol = IPPROTO_TCP;
        r.sock_type = SOCK_STREAM;
        r.fd = listen.map_or(-1, |l| l.fd);
        r.backlog = listen.map_or(0, |l| l.backlog);
        r.flags = if stopped { SOCKET_STOPPED } else { 0 };
        r.addr = addr;
        r.family = family;
        r.port = port;
    });
    Ok(())
}
