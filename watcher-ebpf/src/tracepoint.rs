//! Tracepoint record layouts, as the loader read them from each
//! tracepoint's tracefs `format` file: they differ between kernels, so no
//! program hard-codes an offset.
use aya_ebpf::programs::TracePointContext;
use watcher_common::TracepointOffsets;

/// Set by the loader (`EbpfLoader::override_global`); all 0 (every field
/// missing) until then.
#[unsafe(no_mangle)]
static TRACEPOINT_OFFSETS: TracepointOffsets = TracepointOffsets {
    fork_child_pid: 0,
    exit_pid: 0,
    exit_group_dead: 0,
    exec_filename: 0,
    exec_old_pid: 0,
    tcp_skaddr: 0,
    tcp_oldstate: 0,
    tcp_newstate: 0,
    tcp_sport: 0,
    tcp_family: 0,
    tcp_protocol: 0,
    tcp_saddr: 0,
    tcp_saddr_v6: 0,
    syscall_args: 0,
    syscall_ret: 0,
};

#[inline(always)]
pub fn layout() -> TracepointOffsets {
    // SAFETY: a plain read of a global the loader may have rewritten;
    // volatile so the compiler does not fold the initial zeros in.
    unsafe { core::ptr::read_volatile(&TRACEPOINT_OFFSETS) }
}

/// Reads a `T` at `offset` of the tracepoint's record; `Err` when the
/// field is missing on this kernel (offset 0) or the read fails.
#[inline(always)]
pub fn field<T>(ctx: &TracePointContext, offset: u32) -> Result<T, i64> {
    if offset == 0 {
        return Err(0);
    }
    // SAFETY: the offset and size come from this kernel's format file
    // (checked by the loader); the helper fails cleanly past the record.
    unsafe { ctx.read_at::<T>(offset as usize) }.map_err(i64::from)
}
