//! A worker process forked from the bench before any thread starts, told
//! what to do over one pipe and answering over another: the listener child
//! (child.rs), the overhead worker, the throughput bench's listener
//! generator and the listener holders (holder.rs) are all one of these,
//! each with its own protocol on the pipes. Being a fork, a worker is a
//! separate process (its own pid, which the tools filter on in the kernel)
//! that runs only the syscalls it is asked for.
use std::{
    fs::{self, File},
    io::{Read as _, Write as _},
    os::fd::{FromRawFd as _, OwnedFd, RawFd},
};

use anyhow::{Context as _, bail};

/// The bench's end of a forked worker. Dropping it ends the worker.
pub struct Forked {
    pid: libc::pid_t,
    /// What the worker is ("listener child"), for error messages.
    what: &'static str,
    commands: Option<File>,
    results: File,
}

impl Forked {
    /// Forks a worker that runs `serve(commands, results)` and exits with
    /// the code it returns (101 if it panics). Must run while the bench is
    /// still single-threaded (before any tool or reader thread starts),
    /// which is checked: only then is the child a complete copy of the bench
    /// that may run ordinary Rust code, and start threads of its own.
    pub fn start(what: &'static str, serve: impl FnOnce(&mut File, &mut File) -> i32) -> anyhow::Result<Self> {
        let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
        let threads = status.lines().find_map(|l| l.strip_prefix("Threads:")).map(str::trim);
        if threads != Some("1") {
            bail!("the {what} must be forked before any thread starts (threads: {threads:?})");
        }
        let (cmd_read, cmd_write) = pipe().with_context(|| format!("creating a pipe to the {what}"))?;
        let (res_read, res_write) = pipe().with_context(|| format!("creating a pipe from the {what}"))?;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the process is single-threaded (checked above), so the
        // child is a complete copy and may run ordinary Rust code.
        match unsafe { libc::fork() } {
            -1 => Err(std::io::Error::last_os_error()).with_context(|| format!("forking the {what}")),
            0 => {
                drop(cmd_write);
                drop(res_read);
                // SAFETY: prctl and getppid have no memory preconditions.
                unsafe {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                    // The bench died before prctl: nobody would kill us.
                    if libc::getppid() != parent {
                        libc::_exit(1);
                    }
                }
                let mut commands = File::from(cmd_read);
                let mut results = File::from(res_write);
                // Never unwind back into the bench's frames in this process.
                let code =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| serve(&mut commands, &mut results)))
                        .unwrap_or(101);
                // SAFETY: leaves without running the parent's destructors.
                unsafe { libc::_exit(code) }
            }
            pid => Ok(Self { pid, what, commands: Some(File::from(cmd_write)), results: File::from(res_read) }),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// Writes `message` (`noun` says what it is, for the error) down the
    /// command pipe.
    pub fn send(&mut self, message: &[u8], noun: &str) -> anyhow::Result<()> {
        let what = self.what;
        self.commands
            .as_mut()
            .with_context(|| format!("the {what} was stopped"))?
            .write_all(message)
            .with_context(|| format!("sending {noun} to the {what}"))
    }

    /// Fills `buf` from the result pipe, waiting as long as the worker
    /// takes to answer.
    pub fn receive(&mut self, buf: &mut [u8]) -> anyhow::Result<()> {
        let what = self.what;
        self.results.read_exact(buf).with_context(|| format!("the {what} stopped answering (did it die?)"))
    }

    /// The result pipe, for reads that want an error of their own.
    pub fn results(&mut self) -> &mut File {
        &mut self.results
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        // EOF on its command pipe ends it; SIGKILL in case it is mid-work.
        self.commands = None;
        // SAFETY: plain syscalls on our own child's pid.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// A pipe, both ends close-on-exec: (read end, write end).
fn pipe() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error()).context("pipe2");
    }
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

// ---- in the workers ----

/// The errno of the last failed libc call on this thread.
pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Sleeps until CLOCK_MONOTONIC reads `deadline_ns` (see `monotonic_ns`),
/// or a signal comes.
pub fn sleep_until(deadline_ns: u64) {
    let ts = libc::timespec {
        tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: ts is a valid timespec; EINTR simply wakes the caller early.
    unsafe {
        libc::clock_nanosleep(libc::CLOCK_MONOTONIC, libc::TIMER_ABSTIME, &ts, std::ptr::null_mut());
    }
}
