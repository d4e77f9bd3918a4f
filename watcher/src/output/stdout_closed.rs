//! `watcher watch | head`: when the reader of stdout goes away, `watch`
//! ends at once (exit 0), not at its next write, which may be long in
//! coming on a quiet host.
use std::os::fd::BorrowedFd;

use nix::sys::stat::{SFlag, fstat};
use tokio::io::{Interest, unix::AsyncFd};

/// Resolves when stdout is a pipe whose reading end is closed (the kernel
/// flags the writing end with EPOLLERR). Stdout on a terminal or a file is
/// never "closed" this way: then it waits forever.
pub struct StdoutClosed {
    fd: Option<AsyncFd<BorrowedFd<'static>>>,
}

impl StdoutClosed {
    /// Watches stdout when it is a pipe; inside a tokio runtime.
    pub fn watch() -> Self {
        // SAFETY: fd 1 stays open as long as the process runs: nothing in
        // watcher closes it, and std never does.
        let stdout = unsafe { BorrowedFd::borrow_raw(libc::STDOUT_FILENO) };
        let is_pipe =
            fstat(stdout).is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO);
        if !is_pipe {
            return Self::never();
        }
        // Only errors: a pipe's writing end is writable nearly always.
        // SAFETY: the descriptor stays open and is not replaced (dup2) while
        // the AsyncFd watches it (see above).
        let fd = unsafe { AsyncFd::register_with_interest(stdout, Interest::ERROR) }.ok();
        Self { fd }
    }

    /// Never resolves.
    pub fn never() -> Self {
        Self { fd: None }
    }

    pub async fn wait(&mut self) {
        let Some(fd) = &self.fd else {
            return std::future::pending().await;
        };
        loop {
            match fd.ready(Interest::ERROR).await {
                Ok(guard) if guard.ready().is_error() => return,
                Ok(mut guard) => guard.clear_ready(),
                // The reactor cannot watch it: as for a terminal.
                Err(_) => return std::future::pending().await,
            }
        }
    }
}
