//! Tracepoint record layouts, as the loader read them from each
//! tracepoint's tracefs `format` file: they differ between kernels, so no
//! program hard-codes an offset.
use aya_ebpf::{EbpfContext as _, programs::TracePointContext};
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

/// [`field`] for the layout this code was written against: when the
/// loader's `offset` is `AT`, a plain load from the record (no helper
/// call; the verifier checks it against the record's size at attach), else
/// [`field`]. `offset` comes from read-only data, so the verifier knows it
/// and walks only the branch taken.
#[inline(always)]
pub fn field_at<T: Copy, const AT: usize>(ctx: &TracePointContext, offset: u32) -> Result<T, i64> {
    const { assert!(AT % core::mem::size_of::<T>() == 0, "a context load must be aligned to its size") };
    if offset as usize == AT {
        // SAFETY: AT is inside the record (it is where this kernel's
        // format puts the field) and aligned to T's size; a tracepoint
        // program may load any of its record's bytes.
        Ok(unsafe { core::ptr::read_volatile(ctx.as_ptr().cast::<u8>().add(AT).cast::<T>()) })
    } else {
        field::<T>(ctx, offset)
    }
}

/// 16 bytes at `offset` of the record (an IPv6 address), as two plain
/// loads when `offset` is `AT` (see [`field_at`]).
#[inline(always)]
pub fn bytes16_at<const AT: usize>(ctx: &TracePointContext, offset: u32) -> Result<[u8; 16], i64> {
    const { assert!(AT % 8 == 0, "a context load must be aligned to its size") };
    if offset as usize != AT {
        return field::<[u8; 16]>(ctx, offset);
    }
    let record = ctx.as_ptr().cast::<u8>();
    // SAFETY: as in field_at, for the two 8-byte halves at AT and AT + 8.
    let (high, low) = unsafe {
        (
            core::ptr::read_volatile(record.add(AT).cast::<u64>()),
            core::ptr::read_volatile(record.add(AT + 8).cast::<u64>()),
        )
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&high.to_ne_bytes());
    bytes[8..].copy_from_slice(&low.to_ne_bytes());
    Ok(bytes)
}
