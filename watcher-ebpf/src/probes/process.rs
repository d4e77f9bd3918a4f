//! Processes, so that every socket event names its process fully even when
//! that process lived for a millisecond: fork, exec (with argv, read before
//! the exec replaces the caller's memory) and exit. Userspace keeps the
//! process table; these programs only report.
use aya_ebpf::{
    EbpfContext as _,
    cty::c_void,
    helpers::{bpf_probe_read_kernel_str_bytes, bpf_probe_read_user, generated::bpf_probe_read_user_str},
    macros::tracepoint,
    programs::TracePointContext,
};
use watcher_common::{ARG_BYTES, ARGV_SLOTS, EXEC_ARGS_MORE, EventKind, ExecArgsRecord, ExecRecord, ProcessRecord};

use crate::record::{EVENTS, count_lost, header, output, wanted_tgid};

// Offsets from /sys/kernel/tracing/events/{sched,syscalls}/*/format.
const FORK_CHILD_PID: usize = 20;
const EXEC_FILENAME_LOC: usize = 8;
const EXEC_OLD_PID: usize = 16;
const EXIT_PID: usize = 24;
const EXIT_GROUP_DEAD: usize = 32;
const EXECVE_ARGV: usize = 24;
const EXECVEAT_ARGV: usize = 32;

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    match try_fork(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_fork(ctx: &TracePointContext) -> Result<(), i64> {
    if wanted_tgid().is_none() {
        return Ok(());
    }
    // SAFETY: offset and size from the tracepoint's format.
    let child = unsafe { ctx.read_at::<i32>(FORK_CHILD_PID)? };
    output(&ProcessRecord { header: header(EventKind::Fork), pid: child as u32, group_dead: 0 });
    Ok(())
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    match try_exit(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_exit(ctx: &TracePointContext) -> Result<(), i64> {
    if wanted_tgid().is_none() {
        return Ok(());
    }
    // SAFETY: offsets and sizes from the tracepoint's format.
    let (pid, group_dead) = unsafe { (ctx.read_at::<i32>(EXIT_PID)?, ctx.read_at::<u8>(EXIT_GROUP_DEAD)?) };
    output(&ProcessRecord { header: header(EventKind::Exit), pid: pid as u32, group_dead: u32::from(group_dead != 0) });
    Ok(())
}

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    match try_exec(&ctx) {
        Ok(()) | Err(_) => 0,
    }
}

fn try_exec(ctx: &TracePointContext) -> Result<(), i64> {
    if wanted_tgid().is_none() {
        return Ok(());
    }
    // Too large for the 512-byte stack: filled in place in the ring buffer.
    let Some(mut entry) = EVENTS.reserve::<ExecRecord>(0) else {
        count_lost();
        return Ok(());
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to reserved ring-buffer memory of the right
    // size; every field is written before submit. The data_loc field gives
    // the filename's offset (low 16 bits) inside this tracepoint's record.
    unsafe {
        (*record).header = header(EventKind::Exec);
        (*record).old_pid = ctx.read_at::<i32>(EXEC_OLD_PID).unwrap_or(0) as u32;
        let loc = ctx.read_at::<u32>(EXEC_FILENAME_LOC).unwrap_or(0);
        let src = ctx.as_ptr().cast::<u8>().add((loc & 0xffff) as usize);
        let len = bpf_probe_read_kernel_str_bytes(src, &mut (*record).filename).map_or(0, |s| s.len());
        (*record).filename_len = len as u32;
    }
    entry.submit(0);
    Ok(())
}

#[tracepoint]
pub fn sys_enter_execve(ctx: TracePointContext) -> u32 {
    exec_args(&ctx, EXECVE_ARGV);
    0
}

#[tracepoint]
pub fn sys_enter_execveat(ctx: TracePointContext) -> u32 {
    exec_args(&ctx, EXECVEAT_ARGV);
    0
}

/// argv of an exec about to happen. Read here, at syscall entry, because
/// once the exec succeeds the caller's memory (and argv in it) is gone, and
/// a short-lived program may exit before userspace could read /proc.
fn exec_args(ctx: &TracePointContext, argv_offset: usize) {
    if wanted_tgid().is_none() {
        return;
    }
    // SAFETY: offset and size from the tracepoint's format.
    let Ok(argv) = (unsafe { ctx.read_at::<u64>(argv_offset) }) else {
        return;
    };
    let Some(mut entry) = EVENTS.reserve::<ExecArgsRecord>(0) else {
        count_lost();
        return;
    };
    let record = entry.as_mut_ptr();
    let argv = argv as *const u64;
    let mut argc = 0u32;
    let mut truncated = 0u32;
    for i in 0..ARGV_SLOTS {
        // SAFETY: user memory is read through the helper, which fails
        // cleanly on a bad pointer; the slot is inside the reservation.
        let arg = unsafe { bpf_probe_read_user(argv.wrapping_add(i)) }.unwrap_or(0);
        if arg == 0 {
            break;
        }
        // The raw helper (its length, NUL included, or an error below 0):
        // the verifier rejects what the compiler makes of the slice-returning
        // wrapper here.
        let len = unsafe {
            bpf_probe_read_user_str(
                (*record).args[i].as_mut_ptr().cast::<c_void>(),
                ARG_BYTES as u32,
                arg as *const c_void,
            )
        };
        if len >= ARG_BYTES as i64 {
            truncated |= 1 << i;
        }
        argc += 1;
    }
    if argc as usize == ARGV_SLOTS {
        // SAFETY: as above.
        let next = unsafe { bpf_probe_read_user(argv.wrapping_add(ARGV_SLOTS)) }.unwrap_or(0);
        if next != 0 {
            truncated |= EXEC_ARGS_MORE;
        }
    }
    // SAFETY: writing the reserved record before submit.
    unsafe {
        (*record).header = header(EventKind::ExecArgs);
        (*record).argc = argc;
        (*record).truncated = truncated;
    }
    entry.submit(0);
}
