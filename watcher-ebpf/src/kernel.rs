//! Following kernel pointers with the offsets the loader read from BTF:
//! the task's network namespace, and the socket behind an fd.
use aya_ebpf::{
    cty::c_void,
    helpers::{
        bpf_probe_read_kernel,
        generated::{bpf_get_current_task, bpf_probe_read_kernel as bpf_probe_read_kernel_raw},
    },
};
use watcher_common::{KernelOffsets, ProgramError};

use crate::record::count_error;

/// Set by the loader (`EbpfLoader::override_global`) from the kernel's BTF.
#[unsafe(no_mangle)]
static OFFSETS: KernelOffsets = KernelOffsets {
    valid: 0,
    task_nsproxy: 0,
    task_files: 0,
    nsproxy_net_ns: 0,
    net_ns_inum: 0,
    files_fdt: 0,
    fdtable_fd: 0,
    fdtable_max_fds: 0,
    file_private_data: 0,
    socket_sk: 0,
    socket_type: 0,
    skc_daddr: 0,
    skc_rcv_saddr: 0,
    skc_dport: 0,
    skc_num: 0,
    skc_family: 0,
    skc_net: 0,
    skc_v6_daddr: 0,
    skc_v6_rcv_saddr: 0,
    task_mm: 0,
    mm_arg_start: 0,
    mm_arg_end: 0,
    task_signal: 0,
    signal_live: 0,
    sk_cookie: 0,
    sk_protocol: 0,
    inet_sport: 0,
    unix_addr: 0,
    unix_address_len: 0,
    unix_address_name: 0,
    task_nvcsw: 0,
    task_nivcsw: 0,
};

#[inline(always)]
pub fn offsets() -> Option<KernelOffsets> {
    // SAFETY: a plain read of a global the loader may have rewritten;
    // volatile so the compiler does not fold the initial zeros in.
    let offsets = unsafe { core::ptr::read_volatile(&OFFSETS) };
    (offsets.valid != 0).then_some(offsets)
}

/// Reads a `T` at `base + offset` in kernel memory; `None` for a NULL
/// `base` (an absent object, not an error) or when the read faults
/// (counted: the offsets come from this kernel's BTF, so it should not).
#[inline(always)]
pub fn read<T>(base: u64, offset: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: the helper faults cleanly on a bad address.
    let value = unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.ok();
    if value.is_none() {
        count_error(ProgramError::ReadKernel);
    }
    value
}

/// [`read`], or `default` when it reads nothing. For a value used either
/// way: `read(..).unwrap_or(default)` leaves the payload of its None
/// undefined, and LLVM may then compute with that register after the
/// failure's count_error call, which 6.1's verifier refuses ("R4
/// !read_ok"); here the failure's value is `default`, always defined.
#[inline(always)]
pub fn read_or<T>(base: u64, offset: u32, default: T) -> T {
    if base == 0 {
        return default;
    }
    // SAFETY: the helper faults cleanly on a bad address.
    match unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) } {
        Ok(value) => value,
        Err(_) => {
            count_error(ProgramError::ReadKernel);
            default
        }
    }
}

/// Copies `len` bytes (at most `N`) of kernel memory at `src` into `dst`;
/// how many, 0 for none or when the read faults (counted).
#[inline(always)]
pub fn read_kernel_bytes<const N: usize>(dst: &mut [u8; N], src: u64, len: u32) -> u32 {
    let len = if len as usize > N { N as u32 } else { len };
    if len == 0 || src == 0 {
        return 0;
    }
    // SAFETY: the helper faults cleanly on a bad address, and `len` is at
    // most the size of `dst`.
    let ret = unsafe { bpf_probe_read_kernel_raw(dst.as_mut_ptr().cast::<c_void>(), len, src as *const c_void) };
    if ret == 0 {
        len
    } else {
        count_error(ProgramError::ReadKernel);
        0
    }
}

/// Inode of the calling task's network namespace, 0 if unknown.
#[inline(always)]
pub fn current_netns() -> u32 {
    let Some(o) = offsets() else {
        return 0;
    };
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    read::<u64>(task, o.task_nsproxy)
        .and_then(|nsproxy| read::<u64>(nsproxy, o.nsproxy_net_ns))
        .and_then(|net| read::<u32>(net, o.net_ns_inum))
        .unwrap_or(0)
}

/// A socket's cookie, 0 if it has none yet or it is unknown.
#[inline(always)]
pub fn sock_cookie(sk: u64) -> u64 {
    match offsets() {
        Some(o) if o.sk_cookie != 0 => read::<u64>(sk, o.sk_cookie).unwrap_or(0),
        _ => 0,
    }
}

/// Inode of a socket's network namespace, 0 if unknown.
#[inline(always)]
pub fn sock_netns(sk: u64) -> u32 {
    let Some(o) = offsets() else {
        return 0;
    };
    read::<u64>(sk, o.skc_net).and_then(|net| read::<u32>(net, o.net_ns_inum)).unwrap_or(0)
}

/// The `struct sock` behind the calling task's `fd`, if it is a socket the
/// walk can reach (task → files → fdt → fd[] → file → socket → sk).
#[inline(always)]
pub fn sock_of_fd(fd: i32) -> Option<u64> {
    let o = offsets()?;
    read::<u64>(socket_of_fd(fd)?, o.socket_sk)
}

/// The type of the socket behind the calling task's `fd` (SOCK_STREAM,
/// SOCK_DGRAM, …), 0 when it cannot be read.
#[inline(always)]
pub fn socket_type_of_fd(fd: i32) -> u32 {
    let Some(o) = offsets() else {
        return 0;
    };
    socket_of_fd(fd).and_then(|socket| read::<u16>(socket, o.socket_type)).map_or(0, u32::from)
}

/// The `struct socket` behind the calling task's `fd` (task → files → fdt
/// → fd[] → file → private_data); the caller knows the fd is a socket's.
#[inline(always)]
pub fn socket_of_fd(fd: i32) -> Option<u64> {
    let o = offsets()?;
    if fd < 0 {
        return None;
    }
    // SAFETY: a helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let files = read::<u64>(task, o.task_files)?;
    let fdt = read::<u64>(files, o.files_fdt)?;
    let max_fds = read::<u32>(fdt, o.fdtable_max_fds)?;
    if fd as u32 >= max_fds {
        return None;
    }
    let fd_array = read::<u64>(fdt, o.fdtable_fd)?;
    let file = read::<u64>(fd_array, fd as u32 * 8)?;
    read::<u64>(file, o.file_private_data)
}
