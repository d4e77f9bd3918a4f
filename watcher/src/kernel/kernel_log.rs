//! The kernel programs' own log (aya-log): each failure they count in
//! ERRORS or LOST is also written to aya-log's ring buffer (AYA_LOGS),
//! at most once a second per kind and CPU, and read here into `log`
//! lines of target `watcher::ebpf` (KERNEL_LOG_TARGET), at debug level.
//!
//! Only when `RUST_LOG` enables debug for that target (`RUST_LOG=debug`,
//! `RUST_LOG=watcher=debug`, `RUST_LOG=watcher::ebpf=debug`): otherwise
//! the loader sets aya-log's level global to 0, so the programs skip the
//! log call (the verifier removes it as dead code), AYA_LOGS shrinks to
//! one page, and no reader runs. The ERRORS counter stays the always-on
//! signal (the warning every 10 s, `watcher_program_errors_total`).
use anyhow::Context as _;
use aya::{Ebpf, EbpfLoader};
use aya_log::EbpfLogger;
use log::{Level, Log, Metadata, debug, warn};
use tokio::{
    io::{Interest, unix::AsyncFd},
    task::JoinHandle,
};
use watcher_common::KERNEL_LOG_TARGET;

/// aya-log's ring buffer, in the object at 128 KiB.
const AYA_LOGS_MAP: &str = "AYA_LOGS";

/// Whether the kernel programs log, decided once before the object loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLogLevel(u8);

impl KernelLogLevel {
    /// From the process's logger (`RUST_LOG`).
    pub fn from_env() -> Self {
        Self::for_logger(log::logger())
    }

    /// Debug for the kernel's target when `logger` would print such a line.
    pub fn for_logger(logger: &dyn Log) -> Self {
        let line = Metadata::builder().level(Level::Debug).target(KERNEL_LOG_TARGET).build();
        // aya-log's levels, as its `AYA_LOG_LEVEL` global holds them: a
        // statement logs when its level is at most this; 0 disables all.
        Self(if logger.enabled(&line) { aya_log::Level::Debug as u8 } else { 0 })
    }

    pub fn enabled(self) -> bool {
        self.0 != 0
    }
}

/// Passes the level to the programs (aya-log's `AYA_LOG_LEVEL` global);
/// without a reader, AYA_LOGS is shrunk to one page.
pub fn configure<'a>(loader: &mut EbpfLoader<'a>, level: &'a KernelLogLevel) {
    loader.override_global(aya_log::LEVEL, &level.0, true);
    if !level.enabled() {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        // A ring buffer's size is a power of two and a multiple of the page size.
        if let Ok(page) = u32::try_from(page)
            && page.is_power_of_two()
        {
            loader.map_max_entries(AYA_LOGS_MAP, page);
        }
    }
}

/// The reader of AYA_LOGS, a task on the current tokio runtime; dropping
/// it stops the reader (the programs' lines then stay unread in the ring).
pub struct KernelLog {
    reader: JoinHandle<()>,
}

impl Drop for KernelLog {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Starts reading AYA_LOGS; `None`, said at debug level, when `level` is
/// off. The reader owns the map's fd from here on, which a program loaded
/// later (the daemon's enforcement) still needs: it lives as long as the
/// returned value.
pub fn attach(ebpf: &mut Ebpf, level: KernelLogLevel) -> anyhow::Result<Option<KernelLog>> {
    if !level.enabled() {
        debug!("kernel programs' log not attached: RUST_LOG does not enable debug for {KERNEL_LOG_TARGET}");
        return Ok(None);
    }
    let logger = EbpfLogger::init(ebpf).context("opening the AYA_LOGS ring buffer of the kernel programs' log")?;
    // SAFETY: the logger owns AYA_LOGS' fd, which stays open and the same
    // for as long as the AsyncFd owns the logger.
    let mut logger = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
        .context("registering AYA_LOGS with tokio")?;
    let runtime = tokio::runtime::Handle::try_current().context("no tokio runtime to read AYA_LOGS on")?;
    let reader = runtime.spawn(async move {
        loop {
            match logger.readable_mut().await {
                Ok(mut ready) => {
                    ready.get_inner_mut().flush();
                    ready.clear_ready();
                }
                Err(e) => {
                    warn!("reading the kernel programs' log stopped: {e}");
                    return;
                }
            }
        }
    });
    debug!("kernel programs' log attached: their failures are said here, target {KERNEL_LOG_TARGET}");
    Ok(Some(KernelLog { reader }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(rust_log: &str) -> KernelLogLevel {
        KernelLogLevel::for_logger(&env_logger::Builder::new().parse_filters(rust_log).build())
    }

    #[test]
    fn attached_exactly_when_rust_log_enables_debug_for_the_kernel_target() {
        for on in ["debug", "trace", "watcher=debug", "watcher::ebpf=debug", "warn,watcher::ebpf=debug"] {
            assert!(level(on).enabled(), "RUST_LOG={on}");
        }
        for off in ["", "info", "warn", "watcher=info", "watcher=debug,watcher::ebpf=info", "watcher::pipeline=debug"] {
            assert!(!level(off).enabled(), "RUST_LOG={off}");
        }
        // aya-log's numbering: Debug is 4, and a statement logs at or below it.
        assert_eq!(level("debug").0, 4);
    }
}
