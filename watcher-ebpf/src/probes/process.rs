//! Processes, so that every socket event names its process fully even when
//! that process lived for a millisecond: fork, exec (with argv, read from
//! the new program's memory at the exec tracepoint) and exit. Userspace
//! keeps the process table; these programs only report.
use aya_ebpf::{
    EbpfContext as _,
    cty::c_void,
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel_str_bytes,
        generated::{bpf_get_current_task, bpf_probe_read_user},
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use watcher_common::{ARGV_BYTES, EventKind, ExecArgsRecord, ExecRecord, ProcessRecord, ProgramError};

use crate::{
    kernel::{offsets, read},
    record::{emit, failed, wanted_tgid},
    tracepoint::{field, layout},
};

/// A field of this kernel's tracepoint record. `Ok(None)`: the field does
/// not exist here (the loader said so once); a failed read is an error.
#[inline(always)]
fn tp_field<T>(ctx: &TracePointContext, offset: u32) -> Result<Option<T>, ProgramError> {
    match field::<T>(ctx, offset) {
        Ok(v) => Ok(Some(v)),
        Err(0) => Ok(None),
        Err(_) => Err(ProgramError::ReadKernel),
    }
}

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    match try_fork(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

fn try_fork(ctx: &TracePointContext) -> Result<(), ProgramError> {
    if wanted_tgid().is_none() {
        return Ok(());
    }
    let Some(child) = tp_field::<i32>(ctx, layout().fork_child_pid)? else {
        return Ok(());
    };
    emit::<ProcessRecord>(EventKind::Fork, |r| r.pid = child as u32);
    Ok(())
}

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    match try_exit(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

fn try_exit(ctx: &TracePointContext) -> Result<(), ProgramError> {
    if wanted_tgid().is_none() {
        return Ok(());
    }
    let l = layout();
    let Some(pid) = tp_field::<i32>(ctx, l.exit_pid)? else {
        return Ok(());
    };
    let group_dead = match tp_field::<u8>(ctx, l.exit_group_dead)? {
        Some(dead) => dead != 0,
        None => group_dead_from_task(),
    };
    emit::<ProcessRecord>(EventKind::Exit, |r| {
        r.pid = pid as u32;
        r.group_dead = u32::from(group_dead);
    });
    Ok(())
}

/// Whether the exiting task (current) is its process's last thread, on a
/// kernel whose exit tracepoint does not say: do_exit() counts
/// `signal->live` down before the tracepoint fires, so it is 0 for the
/// last one. Without BTF, the leader's exit stands for the process's.
#[inline(always)]
fn group_dead_from_task() -> bool {
    let pid_tgid = bpf_get_current_pid_tgid();
    let leader = (pid_tgid >> 32) as u32 == pid_tgid as u32;
    let Some(o) = offsets() else {
        return leader;
    };
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    read::<u64>(task, o.task_signal)
        .and_then(|signal| read::<i32>(signal, o.signal_live))
        .map_or(leader, |live| live == 0)
}

#[tracepoint]
pub fn sched_process_exec(ctx: TracePointContext) -> u32 {
    match try_exec(&ctx) {
        Ok(()) => 0,
        Err(e) => failed(e),
    }
}

fn try_exec(ctx: &TracePointContext) -> Result<(), ProgramError> {
    if wanted_tgid().is_none() {
        return Ok(());
    }
    let l = layout();
    // Without old_pid, the task's own id (right unless a thread exec'd).
    let old_pid = tp_field::<i32>(ctx, l.exec_old_pid)?.map_or(bpf_get_current_pid_tgid() as u32, |p| p as u32);
    // argv first: userspace keeps it for the exec record that follows.
    exec_args(old_pid);
    // The data_loc field gives the filename's offset (low 16 bits) inside
    // this tracepoint's record.
    let loc = tp_field::<u32>(ctx, l.exec_filename)?.unwrap_or(0);
    emit::<ExecRecord>(EventKind::Exec, |r| {
        r.old_pid = old_pid;
        if loc != 0 {
            // SAFETY: the offset is inside this tracepoint's record (its
            // format says so); the helper stops at the buffer's end.
            let src = unsafe { ctx.as_ptr().cast::<u8>().add((loc & 0xffff) as usize) };
            // SAFETY: reads kernel memory into a buffer of its own size.
            let len = unsafe { bpf_probe_read_kernel_str_bytes(src, &mut r.filename) }.map_or(0, |s| s.len());
            r.filename_len = len as u32;
        }
    });
    Ok(())
}

/// argv of the program just exec'd: the NUL-separated strings between
/// `mm->arg_start` and `mm->arg_end` of the new memory (BTF offsets),
/// copied in one bounded read. Read here rather than at execve() entry:
/// the verifier checks one copy in no time on every kernel, where a loop
/// over the caller's argv pointers was refused by 6.1's as too large.
#[inline(always)]
fn exec_args(old_pid: u32) {
    let Some(o) = offsets() else {
        return;
    };
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let Some(mm) = read::<u64>(task, o.task_mm) else {
        return;
    };
    let (Some(start), Some(end)) = (read::<u64>(mm, o.mm_arg_start), read::<u64>(mm, o.mm_arg_end)) else {
        return;
    };
    if end <= start {
        return;
    }
    let full_len = end - start;
    emit::<ExecArgsRecord>(EventKind::ExecArgs, |r| {
        // Bounded here, next to the call: computed before the closure, the
        // bound was lost on the way through the stack and 6.1's verifier
        // refused the read ("R2 min value is negative").
        let len = if full_len > ARGV_BYTES as u64 { ARGV_BYTES as u32 } else { full_len as u32 };
        // SAFETY: `len` is at most the size of `args`; the helper reads the
        // current task's user memory (the new program's stack) and fails
        // cleanly.
        let ret = unsafe { bpf_probe_read_user(r.args.as_mut_ptr().cast::<c_void>(), len, start as *const c_void) };
        r.old_pid = old_pid;
        r.len = if ret == 0 { len } else { 0 };
        r.full_len = full_len;
    });
}
