//! Kernel programs of watcher, one file per hook in `probes/` (its `mod.rs`
//! has the table). Each fills a record of watcher-common and sends it with
//! `record::emit`, the one way records leave the kernel (a full ring buffer
//! is counted in LOST, anything else a program could not do in ERRORS). No
//! policy lives here (the heavy lifting is in userspace), except the opt-in
//! bind enforcement of `probes/cgroup_bind_enforce.rs`.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod kernel;
#[cfg(target_arch = "bpf")]
mod log;
#[cfg(target_arch = "bpf")]
mod probes;
#[cfg(target_arch = "bpf")]
mod record;
#[cfg(target_arch = "bpf")]
mod tracepoint;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier proves the programs never get here; a loop keeps the
    // signature honest without pulling in any formatting.
    loop {}
}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";

/// Lets `cargo check --workspace` build this crate for the host too.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
