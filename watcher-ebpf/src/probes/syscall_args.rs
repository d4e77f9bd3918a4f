//! Arguments of an in-flight syscall, kept per thread from its enter
//! tracepoint to its exit tracepoint (and read by the hooks that run in
//! between). LRU maps, so that a thread killed inside a syscall leaves no
//! entry behind for long.
use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_current_pid_tgid, generated::bpf_probe_read_user},
    macros::map,
    maps::LruHashMap,
    programs::TracePointContext,
};
use watcher_common::ProgramError;

use crate::{
    record::count_error,
    tracepoint::{field, field_at, layout},
};

/// In-flight syscalls remembered at once, per kind.
const IN_FLIGHT_MAX: u32 = 16_384;

// Which value of a syscall tracepoint record [`arg`] reads: the n-th
// argument of a sys_enter_* (each 8 bytes after the previous one), or
// `ret` of a sys_exit_*. Where they start comes from the format files
// (see crate::tracepoint).
pub const ARG0: usize = 0;
pub const ARG1: usize = 1;
pub const ARG2: usize = 2;
pub const ARG3: usize = 3;
pub const ARG4: usize = 4;
pub const RET: usize = usize::MAX;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingBind {
    pub addr: [u8; watcher_common::SOCKADDR_BYTES],
    pub fd: i32,
    pub addr_len: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingListen {
    pub fd: i32,
    pub backlog: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingSocket {
    pub family: u32,
    pub sock_type: u32,
    pub protocol: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingSockopt {
    pub optval: u64,
    pub fd: i32,
    pub level: u32,
    pub optname: u32,
    pub optlen: u32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct PendingAccept {
    pub listen_fd: i32,
    pub peer_requested: u32,
}

#[map(name = "PENDING_ACCEPT")]
pub static PENDING_ACCEPT: LruHashMap<u64, PendingAccept> = LruHashMap::with_max_entries(IN_FLIGHT_MAX, 0);
#[map(name = "PENDING_BIND")]
pub static PENDING_BIND: LruHashMap<u64, PendingBind> = LruHashMap::with_max_entries(IN_FLIGHT_MAX, 0);
#[map(name = "PENDING_LISTEN")]
pub static PENDING_LISTEN: LruHashMap<u64, PendingListen> = LruHashMap::with_max_entries(IN_FLIGHT_MAX, 0);
#[map(name = "PENDING_SOCKET")]
pub static PENDING_SOCKET: LruHashMap<u64, PendingSocket> = LruHashMap::with_max_entries(IN_FLIGHT_MAX, 0);
#[map(name = "PENDING_SOCKOPT")]
pub static PENDING_SOCKOPT: LruHashMap<u64, PendingSockopt> = LruHashMap::with_max_entries(IN_FLIGHT_MAX, 0);

/// The calling thread, as the key of the maps above.
#[inline(always)]
pub fn thread_key() -> u64 {
    bpf_get_current_pid_tgid()
}

/// The syscall argument `which` (`ARG0`…) or the return value (`RET`):
/// a plain load where this kernel's format puts it where every kernel
/// since syscall tracepoints has (`id` and `__syscall_nr` before it: the
/// arguments from 16, `ret` at 16; see `field_at`).
#[inline(always)]
pub fn arg(ctx: &TracePointContext, which: usize) -> Result<u64, ProgramError> {
    let layout = layout();
    let args = layout.syscall_args;
    let value = match which {
        RET => field_at::<u64, 16>(ctx, layout.syscall_ret),
        _ if args == 0 => return Err(ProgramError::ReadKernel),
        ARG0 => field_at::<u64, 16>(ctx, args),
        ARG1 => field_at::<u64, 24>(ctx, args + 8),
        ARG2 => field_at::<u64, 32>(ctx, args + 16),
        ARG3 => field_at::<u64, 40>(ctx, args + 24),
        ARG4 => field_at::<u64, 48>(ctx, args + 32),
        _ => field::<u64>(ctx, args + 8 * which as u32),
    };
    value.map_err(|_| ProgramError::ReadKernel)
}

/// Copies `len` bytes (at most `N`) of user memory at `src` into `dst`;
/// returns how many were copied (0 on a fault, counted as
/// [`ProgramError::ReadUser`]: the caller's pointer was bad, or its memory
/// was paged out, and the record goes without those bytes).
#[inline(always)]
pub fn read_user_bytes<const N: usize>(dst: &mut [u8; N], src: u64, len: u32) -> u32 {
    let len = if len as usize > N { N as u32 } else { len };
    if len == 0 {
        return 0;
    }
    // SAFETY: the helper faults cleanly on bad user memory, and `len` is at
    // most the size of `dst`.
    let ret = unsafe { bpf_probe_read_user(dst.as_mut_ptr().cast::<c_void>(), len, src as *const c_void) };
    if ret == 0 {
        len
    } else {
        count_error(ProgramError::ReadUser);
        0
    }
}
