//! `kill_unexpected`: every process that holds an unexpected socket is
//! stopped, then killed — its children forked between the listen and the
//! kill included — and the outcome is reported only as it is: `killed`
//! once no process holds the socket, `kill_failed` naming each survivor.
//!
//! A daemon that forks the moment it listens (fork, parent exits, setsid,
//! fork again) hands the socket on faster than one kill of the creator can
//! follow. So each round finds the socket's holders in /proc, SIGSTOPs
//! them all first (a stopped process cannot fork again), then SIGKILLs
//! them, and waits for each to exit (a pidfd says so); rounds go on until
//! no process holds the socket or the rounds run out.
use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use log::warn;
use nix::{
    errno::Errno,
    sys::signal::{Signal, kill},
    unistd::Pid,
};

use crate::{
    host::process::ProcessLookup,
    model::socket::{Local, Proto},
    snapshot::holders,
};

/// Rounds of stop-and-kill before giving up on a socket still held.
const ROUNDS: usize = 8;
/// How long a killed process may take to exit.
const EXIT_TIMEOUT: Duration = Duration::from_secs(1);

/// What happened to the holders of one socket.
#[derive(Debug, Default)]
pub struct Killing {
    /// Every pid SIGKILLed.
    pub killed: Vec<u32>,
    /// Pids that still hold the socket, and why.
    pub survivors: Vec<(u32, String)>,
}

/// Kills every process holding the socket waiting on `listener` (proto and
/// local address, in this network namespace); `first` is the process the
/// event named (it is killed even if /proc no longer shows it holding the
/// socket: it may be mid-exit or mid-fork). Without a listener (a raw or
/// packet socket, which /proc cannot tell apart), `first` alone is killed.
pub fn kill_holders(lookup: &mut ProcessLookup, listener: Option<(Proto, &Local)>, first: u32) -> Killing {
    let mut outcome = Killing::default();
    let mut targets = vec![first];
    let Some((proto, local)) = listener else {
        stop_and_kill(&targets, &mut outcome);
        return outcome;
    };
    for _ in 0..ROUNDS {
        let failed = |pid: &u32| outcome.survivors.iter().any(|(p, _)| p == pid);
        targets.retain(|pid| *pid > 1 && *pid != std::process::id() && !outcome.killed.contains(pid) && !failed(pid));
        stop_and_kill(&targets, &mut outcome);
        // Who holds it now: the children a holder forked before it stopped.
        // /proc is read one process at a time, so a child forked while it
        // is read can be missed: the socket is gone only when sock_diag no
        // longer lists it, not when no holder was found.
        let (open, now) = match holders::holding(lookup, proto, local, &[]) {
            Ok(found) => found,
            Err(e) => {
                outcome.survivors.push((0, format!("cannot tell who holds the socket: {e:#}")));
                return outcome;
            }
        };
        if open.is_empty() {
            return outcome;
        }
        targets = now.iter().map(|h| h.pid).collect();
        let failed = |pid: &u32| outcome.survivors.iter().any(|(p, _)| p == pid);
        if !targets.is_empty() && targets.iter().all(failed) {
            return outcome;
        }
        if targets.is_empty() {
            // Open but held by none found: the killed may still be exiting
            // (their files are closed late in exit), or a holder was missed.
            wait_exited(&outcome.killed);
        } else if targets.iter().all(|pid| outcome.killed.contains(pid)) {
            wait_exited(&targets);
        }
    }
    let (open, mut still) = holders::holding(lookup, proto, local, &[]).unwrap_or_default();
    still.retain(|h| !outcome.survivors.iter().any(|(p, _)| *p == h.pid));
    for h in &still {
        let why = if outcome.killed.contains(&h.pid) {
            "still holds the socket after SIGKILL".to_owned()
        } else {
            "appeared after every round of kills".to_owned()
        };
        outcome.survivors.push((h.pid, why));
    }
    if !open.is_empty() && outcome.survivors.is_empty() {
        outcome.survivors.push((0, "the socket is still open and no process holding it could be found".to_owned()));
    }
    outcome
}

fn stop_and_kill(targets: &[u32], outcome: &mut Killing) {
    for &pid in targets {
        // SIGSTOP first, so that none forks again while the others are killed.
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
    }
    let mut waiting = Vec::new();
    for &pid in targets {
        let pidfd = pidfd_open(pid);
        // Exited by itself already (a zombie not yet reaped): a SIGKILL would
        // "succeed" on it, but nothing was killed.
        if pidfd.as_ref().is_some_and(exited) {
            continue;
        }
        match kill(Pid::from_raw(pid as i32), Signal::SIGKILL) {
            Ok(()) => {
                outcome.killed.push(pid);
                waiting.extend(pidfd);
            }
            // Gone already: it holds nothing.
            Err(Errno::ESRCH) => {}
            Err(e) => {
                warn!("kill_unexpected: SIGKILL to pid {pid}: {e}");
                // Not left stopped by us: it runs on, and is reported as a survivor.
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
                outcome.survivors.push((pid, format!("SIGKILL failed: {e}")));
            }
        }
    }
    wait_fds(&waiting);
}

fn wait_exited(pids: &[u32]) {
    let fds: Vec<OwnedFd> = pids.iter().filter_map(|&p| pidfd_open(p)).collect();
    wait_fds(&fds);
}

/// Waits until each process has exited (its pidfd turns readable), or the timeout.
fn wait_fds(fds: &[OwnedFd]) {
    let deadline = Instant::now() + EXIT_TIMEOUT;
    for fd in fds {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe { libc::poll(&mut poll, 1, left.as_millis().min(i32::MAX as u128) as i32) };
    }
}

/// Whether the process behind `pidfd` has exited (its pidfd is readable).
fn exited(pidfd: &OwnedFd) -> bool {
    let mut poll = libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd for the duration of the call; no wait.
    unsafe { libc::poll(&mut poll, 1, 0) == 1 }
}

fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    // SAFETY: a non-negative return is a new fd that we own.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}
