//! Arguments of an in-flight syscall, for its exit tracepoint and the
//! hooks that run inside it. Where the loader found the task's saved user
//! registers (`SyscallRegisters`), they are read from there
//! ([`current_args`]), and no program runs at the call's entry. Elsewhere
//! they are kept per thread from the entry tracepoint to the exit, in LRU
//! maps, so that a thread killed inside a syscall leaves no entry behind
//! for long.
use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_get_current_pid_tgid,
        generated::{bpf_get_current_task_btf, bpf_probe_read_user, bpf_task_pt_regs},
    },
    macros::map,
    maps::LruHashMap,
    programs::TracePointContext,
};
use watcher_common::{ProgramError, SyscallRegisters};

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

/// Set by the loader (`EbpfLoader::override_global`) from the kernel's
/// BTF; `valid` 0 until then, and where it found nothing.
#[unsafe(no_mangle)]
static SYSCALL_REGISTERS: SyscallRegisters =
    SyscallRegisters { valid: 0, nr: 0, args: [0; 3], bind_nr: 0, listen_nr: 0, reserved: 0 };

#[inline(always)]
fn registers() -> Option<SyscallRegisters> {
    // SAFETY: a plain read of a global the loader may have rewritten;
    // volatile so the compiler does not fold the initial zeros in. It is
    // read-only data, so the verifier knows it and walks only the branch
    // taken: a kernel without `bpf_task_pt_regs` never sees the call.
    let registers = unsafe { core::ptr::read_volatile(&SYSCALL_REGISTERS) };
    (registers.valid != 0).then_some(registers)
}

/// Whether a call's arguments come from the saved registers, so that no
/// entry program keeps them (and none is attached).
#[inline(always)]
pub fn args_in_registers() -> bool {
    registers().is_some()
}

/// The syscalls a hook inside one asks [`current_args`] for.
#[derive(Clone, Copy)]
pub enum Syscall {
    /// At the call's own exit tracepoint, which names it.
    Exiting,
    Bind,
    Listen,
}

/// The first three arguments of the syscall the calling task is in, from
/// its saved user registers. A hook inside a call says which call it
/// expects: a task in another one (a bind() done by io_uring for an
/// `io_uring_enter()`, or by a kernel thread, whose registers are zeros)
/// gets `None`, as it found no entry in the pending maps before. `None`
/// also where the loader found no registers.
#[inline(always)]
pub fn current_args(call: Syscall) -> Option<[u64; 3]> {
    let r = registers()?;
    // SAFETY: helpers without side effects; the task is the current one,
    // whose pt_regs the kernel keeps for as long as it runs.
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as *const u8;
    if regs.is_null() {
        return None;
    }
    // SAFETY: `regs` is the kernel's `struct pt_regs` (a BTF pointer the
    // verifier checks each load against), and every offset is that of an
    // 8-byte member of it, from BTF.
    let load = |offset: u32| unsafe { core::ptr::read_volatile(regs.add(offset as usize).cast::<u64>()) };
    let expected = match call {
        Syscall::Exiting => None,
        Syscall::Bind => Some(r.bind_nr),
        Syscall::Listen => Some(r.listen_nr),
    };
    if let Some(nr) = expected
        && load(r.nr) != u64::from(nr)
    {
        return None;
    }
    Some([load(r.args[0]), load(r.args[1]), load(r.args[2])])
}

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
