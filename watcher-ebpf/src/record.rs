//! The maps every program shares, and the one way records leave the
//! kernel: [`emit`] reserves a zeroed record in the ring buffer, writes its
//! header, lets the hook fill the rest and submits it, counting it lost when
//! the ring is full. What a program could not do is counted by kind in
//! ERRORS ([`count_error`]), so that neither loss nor errors are silent;
//! both also go to the kernel log when it is attached (`log`).
use core::ptr;

use aya_ebpf::{
    bindings::{BPF_RB_CONS_POS, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_PROD_POS},
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_current_cgroup_id, bpf_ktime_get_ns},
    },
    macros::map,
    maps::{Array, PerCpuArray, RingBuf},
};
use watcher_common::{
    EVENTS_BYTES, EventKind, PROGRAM_ERROR_KINDS, ProgramError, RING_WAKEUP_OFF, RING_WAKEUP_STEPS, Record,
    RecordHeader, TASK_COMM_LEN,
};

use crate::{kernel::current_netns, log};

#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Records that found the ring buffer full, counted per CPU and summed by
/// userspace, so that loss is reported, never silent.
#[map(name = "LOST")]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// What programs could not do, one slot per [`ProgramError`], per CPU.
#[map(name = "ERRORS")]
static ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(PROGRAM_ERROR_KINDS, 0);

/// How to wake the reader: 0 leaves it to the kernel; else the unread bytes
/// above which every record forces a wake-up (watcher_common's
/// RING_WAKEUP_OFF has the contract). Written by the reader, which alone
/// knows whether it bounds its own latency.
#[map(name = "RING_WAKEUP")]
static RING_WAKEUP: Array<u64> = Array::with_max_entries(1, 0);

/// Set by the loader (`EbpfLoader::override_global`); 0 reports every process.
#[unsafe(no_mangle)]
static FILTER_TGID: u32 = 0;

/// The calling task's tgid, or `None` when the loader's filter excludes it.
#[inline(always)]
pub fn wanted_tgid() -> Option<u32> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a plain read of a global the loader may have rewritten;
    // volatile so the compiler does not fold the initial 0 into the code.
    let filter = unsafe { core::ptr::read_volatile(&FILTER_TGID) };
    (filter == 0 || filter == tgid).then_some(tgid)
}

/// Sends a `T` whose network namespace is the calling task's; see [`emit_in`].
#[inline(always)]
pub fn emit<T: Record>(kind: EventKind, fill: impl FnOnce(&mut T)) {
    emit_in(kind, current_netns(), fill)
}

/// Sends a `T`: reserved in the ring buffer (no copy through the 512-byte
/// stack), zeroed so that no field or reserved byte carries stale ring
/// memory to userspace, its header written, the rest filled by `fill`.
/// A full ring buffer counts the record in LOST.
#[inline(always)]
pub fn emit_in<T: Record>(kind: EventKind, netns: u32, fill: impl FnOnce(&mut T)) {
    // Before the reservation: tells whether anything reserved earlier is
    // still unread once this record is in (see `wakeup_flags`).
    let reserved_before = EVENTS.query(BPF_RB_PROD_POS.into());
    let Some(mut entry) = EVENTS.reserve::<T>(0) else {
        count_lost();
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to reserved ring-buffer memory of T's size and
    // alignment (8, asserted by reserve); all zeros is a valid T (the
    // Record contract), so the reference is to an initialised value.
    let record = unsafe {
        ptr::write_bytes(record, 0, 1);
        &mut *record
    };
    *record.header_mut() = header_in(kind, netns);
    fill(record);
    // The kernel's 8-byte header, and the record rounded up to 8.
    let bytes = 8 + (core::mem::size_of::<T>() as u64).next_multiple_of(8);
    entry.submit(wakeup_flags(reserved_before, bytes));
}

/// Whether committing this record (`bytes` of the ring, reserved at or
/// after `reserved_before`) wakes the reader. Until the reader asks for
/// batching, 0: the kernel wakes it whenever it has caught up, which under
/// a flood is every few records. With batching (a threshold in
/// RING_WAKEUP): force a wake-up when everything reserved before this
/// record has been read (the reader may be asleep and waiting for it), or,
/// with more than the threshold unread, when this record crosses one of
/// the boundaries RING_WAKEUP_STEPS apart within the threshold; else skip
/// it, since a record ahead of this one is still unread and the reader,
/// awake or woken for that one, reaches this one too.
#[inline(always)]
fn wakeup_flags(reserved_before: u64, bytes: u64) -> u64 {
    let threshold = RING_WAKEUP.get(0).copied().unwrap_or(RING_WAKEUP_OFF);
    if threshold == RING_WAKEUP_OFF {
        return 0;
    }
    // After the reservation, so that a reader that read everything and went
    // to sleep before it is seen here (positions only grow).
    let read = EVENTS.query(BPF_RB_CONS_POS.into());
    if read >= reserved_before {
        return BPF_RB_FORCE_WAKEUP.into();
    }
    let step = threshold / RING_WAKEUP_STEPS;
    let crosses = step == 0 || reserved_before / step != (reserved_before + bytes) / step;
    if reserved_before - read >= threshold && crosses { BPF_RB_FORCE_WAKEUP.into() } else { BPF_RB_NO_WAKEUP.into() }
}

/// [`header`] with the network namespace the hook knows better (the socket's).
#[inline(always)]
pub fn header_in(kind: EventKind, netns: u32) -> RecordHeader {
    let pid_tgid = bpf_get_current_pid_tgid();
    let uid_gid = bpf_get_current_uid_gid();
    RecordHeader {
        // SAFETY: helpers without arguments, allowed in every program type used here.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        kind: kind as u32,
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        uid: uid_gid as u32,
        gid: (uid_gid >> 32) as u32,
        netns,
        comm: bpf_get_current_comm().unwrap_or([0u8; TASK_COMM_LEN]),
    }
}

/// Counts a record lost to a full ring buffer (and says so, when the
/// kernel log is attached: see `log`).
#[inline(always)]
pub fn count_lost() {
    if let Some(lost) = LOST.get_ptr_mut(0) {
        // SAFETY: per-CPU slot, so no other CPU writes it concurrently.
        let count = unsafe {
            *lost += 1;
            *lost
        };
        log::lost(count);
    }
}

/// Counts what a program could not do (and says so, when the kernel log
/// is attached: see `log`). Every failure of every program comes here.
#[inline(always)]
pub fn count_error(kind: ProgramError) {
    if let Some(slot) = ERRORS.get_ptr_mut(kind as u32) {
        // SAFETY: per-CPU slot, so no other CPU writes it concurrently.
        let count = unsafe {
            *slot += 1;
            *slot
        };
        log::error(kind, count);
    }
}

/// The end of a tracepoint program that failed: counts why, returns 0 (a
/// tracepoint program's return value is ignored).
#[inline(always)]
pub fn failed(kind: ProgramError) -> u32 {
    count_error(kind);
    0
}

/// `Result`s of map updates: `.or_count()` counts a failure as
/// [`ProgramError::MapUpdate`] and goes on, for a program that still has
/// something to report without the entry.
pub trait CountFailure {
    fn or_count(self);
}

impl CountFailure for Result<(), i32> {
    #[inline(always)]
    fn or_count(self) {
        if self.is_err() {
            count_error(ProgramError::MapUpdate);
        }
    }
}
