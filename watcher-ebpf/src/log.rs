//! Kernel-side diagnostics through aya-log: a failure counted in ERRORS or
//! LOST (the always-on signal, see `record`) is also said as a line on
//! aya-log's own ring buffer (AYA_LOGS), which userspace turns into a
//! `log` record of target `watcher::ebpf` (watcher-common's
//! KERNEL_LOG_TARGET).
//!
//! Nothing here runs unless the loader attached aya-log's reader: it sets
//! aya-log's `AYA_LOG_LEVEL` global to 0 otherwise, and since that global
//! sits in the frozen .rodata map, the verifier then sees the branch to
//! [`say`] as dead and removes it, so a watcher without `RUST_LOG=debug`
//! pays nothing, not even verification time. With the reader attached,
//! one line per kind per CPU per second at most (LOGGED_AT): a failure
//! repeated on every syscall of a busy host must not flood aya-log's
//! 128 KiB ring, and the counter says how many there were.
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, generated::bpf_ktime_get_ns},
    macros::map,
    maps::PerCpuArray,
};
use aya_log_ebpf::{
    debug,
    macro_support::{Level, level_enabled},
};
use watcher_common::{KERNEL_LOG_EVERY_NS, KERNEL_LOG_TARGET, LOGGED_AT_LOST, LOGGED_AT_SLOTS, ProgramError};

/// When each kind of failure was last said on this CPU (bpf_ktime_get_ns),
/// one slot per [`ProgramError`], then LOST's.
#[map(name = "LOGGED_AT")]
static LOGGED_AT: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOGGED_AT_SLOTS, 0);

/// Says that a program failed with `kind`, `count` times on this CPU so far.
#[inline(always)]
pub fn error(kind: ProgramError, count: u64) {
    if level_enabled(Level::Debug) {
        say(kind as u32, count);
    }
}

/// Says that a record found the ring buffer full, `count` on this CPU so far.
#[inline(always)]
pub fn lost(count: u64) {
    if level_enabled(Level::Debug) {
        say(LOGGED_AT_LOST, count);
    }
}

/// Out of line, so that the many places that count a failure share one
/// copy of aya-log's record writing.
#[inline(never)]
fn say(slot: u32, count: u64) {
    let Some(at) = LOGGED_AT.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: per-CPU slot, so no other CPU reads or writes it meanwhile.
    unsafe {
        if *at != 0 && now.wrapping_sub(*at) < KERNEL_LOG_EVERY_NS {
            return;
        }
        *at = now;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // One call per kind: aya-log's format strings are literals, and a
    // name passed as a `&str` of varying length is a copy the verifier
    // would have to follow for every length.
    const READ_KERNEL: u32 = ProgramError::ReadKernel as u32;
    const READ_USER: u32 = ProgramError::ReadUser as u32;
    const MAP_UPDATE: u32 = ProgramError::MapUpdate as u32;
    const MAP_LOOKUP: u32 = ProgramError::MapLookup as u32;
    match slot {
        READ_KERNEL => {
            debug!(&(), target: KERNEL_LOG_TARGET, "kernel program failure read_kernel (a kernel or tracepoint field could not be read) in tgid {}: {} on this CPU so far", tgid, count)
        }
        READ_USER => {
            debug!(&(), target: KERNEL_LOG_TARGET, "kernel program failure read_user (the caller's memory could not be read) in tgid {}: {} on this CPU so far", tgid, count)
        }
        MAP_UPDATE => {
            debug!(&(), target: KERNEL_LOG_TARGET, "kernel program failure map_update (a map insert failed) in tgid {}: {} on this CPU so far", tgid, count)
        }
        MAP_LOOKUP => {
            debug!(&(), target: KERNEL_LOG_TARGET, "kernel program failure map_lookup (a map lacked a required entry) in tgid {}: {} on this CPU so far", tgid, count)
        }
        _ => {
            debug!(&(), target: KERNEL_LOG_TARGET, "ring buffer full: a record of tgid {} was lost, {} on this CPU so far", tgid, count)
        }
    }
}
