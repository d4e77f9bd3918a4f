//! The process that runs the overhead workloads: a fork of the bench made
//! before any thread starts, so it is a plain single-threaded program that
//! does nothing but the syscalls under measurement (and reads
//! CLOCK_MONOTONIC around them). It is told what to run over one pipe and
//! answers over another only when the work is done, so nothing wakes the
//! bench while a workload runs.
use std::{
    fs::File,
    io::{Read as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
};

use anyhow::bail;

use super::super::{
    forked::{Forked, errno},
    monotonic_ns,
};

/// A workload: a fixed amount of work, timed in the worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Work {
    /// socket(), bind(127.0.0.1:0), listen(), close(), `count` times.
    Bind,
    /// A loopback server accepting (accept4) and closing `count`
    /// connections that a client thread in the worker makes and closes.
    Accept,
    /// `count` raw getppid syscalls (libc::syscall, so nothing is cached).
    Getppid,
}

impl Work {
    pub const ALL: [Self; 3] = [Self::Bind, Self::Accept, Self::Getppid];

    fn code(self) -> u32 {
        match self {
            Self::Bind => 1,
            Self::Accept => 2,
            Self::Getppid => 3,
        }
    }

    fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.code() == code)
    }
}

/// What the worker measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    /// Operations completed (listeners, connections accepted, calls).
    pub ops: u64,
    /// CLOCK_MONOTONIC from the first operation's start to the last's end.
    pub elapsed_ns: u64,
    /// Accept only: connections the client made that the server never got
    /// (the server gives up on them once the client is done and nothing has
    /// come for ACCEPT_IDLE_MS).
    pub missing: u64,
}

const COMMAND_BYTES: usize = 16;
const REPLY_BYTES: usize = 40;
const TAG_DONE: u32 = 1;
const TAG_FAILED: u32 = 2;
const STEPS: [&str; 9] = [
    "socket",
    "bind",
    "listen",
    "close",
    "getsockname",
    "setsockopt",
    "accept4",
    "connect",
    "spawning the client thread",
];
const SOCKET: u32 = 0;
const BIND: u32 = 1;
const LISTEN: u32 = 2;
const GETSOCKNAME: u32 = 4;
const SETSOCKOPT: u32 = 5;
const ACCEPT4: u32 = 6;
const CONNECT: u32 = 7;
const SPAWN: u32 = 8;

/// Backlog of the accept workload's listener (the kernel caps it at
/// net.core.somaxconn, 4096 by default).
const ACCEPT_BACKLOG: i32 = 1024;
/// How far the client may run ahead of the server. A full accept queue
/// makes the kernel drop SYNs, and the client's retransmission waits a
/// whole second: the window keeps the queue far below the backlog.
const CLIENT_WINDOW: u64 = 64;
/// The server's accept() times out after this long without a connection
/// (SO_RCVTIMEO), to notice a client that failed or a connection that was
/// lost, instead of blocking for ever.
const ACCEPT_IDLE_MS: i64 = 200;

pub struct Worker(Forked);

impl Worker {
    /// Forks the worker. Must run while the bench is still single-threaded
    /// (before any tool or reader thread starts), which is checked.
    pub fn start() -> anyhow::Result<Self> {
        Forked::start("overhead worker", serve).map(Self)
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// Runs `count` operations of `work` in the worker and waits for them.
    pub fn run(&mut self, work: Work, count: u64) -> anyhow::Result<Outcome> {
        let mut command = [0u8; COMMAND_BYTES];
        command[0..4].copy_from_slice(&work.code().to_ne_bytes());
        command[8..16].copy_from_slice(&count.to_ne_bytes());
        self.0.send(&command, "a workload")?;
        let mut reply = [0u8; REPLY_BYTES];
        self.0.receive(&mut reply)?;
        let word = |i: usize| u32::from_ne_bytes(reply[i * 4..i * 4 + 4].try_into().expect("4 bytes"));
        let long = |i: usize| u64::from_ne_bytes(reply[16 + i * 8..24 + i * 8].try_into().expect("8 bytes"));
        let outcome = Outcome { ops: long(0), elapsed_ns: long(1), missing: long(2) };
        match word(0) {
            TAG_DONE => Ok(outcome),
            TAG_FAILED => bail!(
                "the overhead worker's {} failed in {work:?} after {} of {count} operations: {}",
                STEPS.get(word(1) as usize).copied().unwrap_or("?"),
                outcome.ops,
                std::io::Error::from_raw_os_error(word(2) as i32)
            ),
            tag => bail!("the overhead worker sent a reply with tag {tag}"),
        }
    }
}

// ---- in the worker ----

/// Why a workload stopped: (step index into STEPS, errno), and what was
/// done until then.
struct Failure {
    step: u32,
    errno: i32,
    done: Outcome,
}

fn serve(commands: &mut File, results: &mut File) -> i32 {
    loop {
        let mut command = [0u8; COMMAND_BYTES];
        if commands.read_exact(&mut command).is_err() {
            return 0;
        }
        let code = u32::from_ne_bytes(command[0..4].try_into().expect("4 bytes"));
        let count = u64::from_ne_bytes(command[8..16].try_into().expect("8 bytes"));
        let result = match Work::from_code(code) {
            Some(Work::Bind) => bind_loop(count),
            Some(Work::Accept) => accept_loop(count),
            Some(Work::Getppid) => Ok(getppid_loop(count)),
            None => return 2,
        };
        let (tag, step, errno, outcome) = match result {
            Ok(outcome) => (TAG_DONE, 0, 0, outcome),
            Err(f) => (TAG_FAILED, f.step, f.errno, f.done),
        };
        let mut reply = [0u8; REPLY_BYTES];
        reply[0..4].copy_from_slice(&tag.to_ne_bytes());
        reply[4..8].copy_from_slice(&step.to_ne_bytes());
        reply[8..12].copy_from_slice(&(errno as u32).to_ne_bytes());
        for (i, v) in [outcome.ops, outcome.elapsed_ns, outcome.missing].iter().enumerate() {
            reply[16 + i * 8..24 + i * 8].copy_from_slice(&v.to_ne_bytes());
        }
        if results.write_all(&reply).is_err() {
            return 1;
        }
    }
}

fn loopback() -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([127, 0, 0, 1]) },
        sin_zero: [0; 8],
    }
}

const SOCKADDR_IN_LEN: libc::socklen_t = size_of::<libc::sockaddr_in>() as libc::socklen_t;

/// A TCP socket; the OwnedFd closes it however the caller leaves.
fn tcp_socket() -> Result<OwnedFd, (u32, i32)> {
    // SAFETY: socket() takes no pointers; the descriptor is new and ours.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err((SOCKET, errno()));
    }
    // SAFETY: raw is a descriptor just created and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// (a) What a server does when it opens a port: socket, bind to a port
/// the kernel picks, listen, close. Each op is one bind, one listen and one
/// close event for watcher.
fn bind_loop(count: u64) -> Result<Outcome, Failure> {
    let addr = loopback();
    let start = monotonic_ns();
    for i in 0..count {
        let failed = |(step, errno): (u32, i32)| Failure {
            step,
            errno,
            done: Outcome { ops: i, elapsed_ns: monotonic_ns() - start, missing: 0 },
        };
        let fd = tcp_socket().map_err(failed)?;
        // SAFETY: addr is a valid sockaddr_in of the length passed.
        if unsafe { libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), SOCKADDR_IN_LEN) } != 0 {
            return Err(failed((BIND, errno())));
        }
        // SAFETY: plain syscall on a descriptor we own.
        if unsafe { libc::listen(fd.as_raw_fd(), 128) } != 0 {
            return Err(failed((LISTEN, errno())));
        }
        // close() is the OwnedFd's drop; its errors are not ours to report
        // (the kernel releases the descriptor either way).
        drop(fd);
    }
    Ok(Outcome { ops: count, elapsed_ns: monotonic_ns() - start, missing: 0 })
}

/// (c) A syscall no watcher hook is about. libc::syscall, not getppid(),
/// so that every call enters the kernel.
fn getppid_loop(count: u64) -> Outcome {
    let start = monotonic_ns();
    let mut sum: libc::c_long = 0;
    for _ in 0..count {
        // SAFETY: getppid takes no arguments and cannot fail.
        sum = sum.wrapping_add(unsafe { libc::syscall(libc::SYS_getppid) });
    }
    let elapsed_ns = monotonic_ns() - start;
    std::hint::black_box(sum);
    Outcome { ops: count, elapsed_ns, missing: 0 }
}

/// Shared by the server (the worker's main thread) and the client thread.
#[derive(Default)]
struct Progress {
    accepted: AtomicU64,
    connected: AtomicU64,
    client_done: AtomicBool,
    /// (step << 32) | errno of the client's failure; 0: none.
    client_failure: AtomicU64,
}

/// (b) An accept-heavy server: a listener on 127.0.0.1 accepts (accept4,
/// asking for the peer's address as servers do) and closes `count`
/// connections that a client thread opens and closes as fast as it can.
/// The client closes with SO_LINGER 0 (a reset), so neither end goes
/// through TIME_WAIT and no run of any length runs out of ephemeral ports.
fn accept_loop(count: u64) -> Result<Outcome, Failure> {
    let at_start = |(step, errno): (u32, i32)| Failure { step, errno, done: Outcome::default() };
    let listener = tcp_socket().map_err(at_start)?;
    let mut addr = loopback();
    let mut len = SOCKADDR_IN_LEN;
    let timeout = libc::timeval { tv_sec: 0, tv_usec: ACCEPT_IDLE_MS * 1000 };
    // SAFETY: addr, len and timeout are valid for the sizes passed; the
    // descriptor is ours.
    unsafe {
        let fd = listener.as_raw_fd();
        if libc::bind(fd, (&raw const addr).cast(), SOCKADDR_IN_LEN) != 0 {
            return Err(at_start((BIND, errno())));
        }
        if libc::getsockname(fd, (&raw mut addr).cast(), &mut len) != 0 {
            return Err(at_start((GETSOCKNAME, errno())));
        }
        if libc::listen(fd, ACCEPT_BACKLOG) != 0 {
            return Err(at_start((LISTEN, errno())));
        }
        let size = size_of::<libc::timeval>() as libc::socklen_t;
        if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, (&raw const timeout).cast(), size) != 0 {
            return Err(at_start((SETSOCKOPT, errno())));
        }
    }

    let progress = Arc::new(Progress::default());
    let start = monotonic_ns();
    let client = {
        let progress = progress.clone();
        thread::Builder::new()
            .name("client".into())
            .spawn(move || client(addr, count, &progress))
            .map_err(|e| at_start((SPAWN, e.raw_os_error().unwrap_or(0))))?
    };
    let mut accepted = 0u64;
    let mut end = start;
    let mut server_failure = None;
    while accepted < count {
        let mut peer = loopback();
        let mut peer_len = SOCKADDR_IN_LEN;
        // SAFETY: peer and peer_len are valid for the size passed.
        let fd =
            unsafe { libc::accept4(listener.as_raw_fd(), (&raw mut peer).cast(), &mut peer_len, libc::SOCK_CLOEXEC) };
        if fd >= 0 {
            // SAFETY: the descriptor accept4 just returned is ours.
            unsafe { libc::close(fd) };
            accepted += 1;
            end = monotonic_ns();
            progress.accepted.store(accepted, Ordering::Release);
            continue;
        }
        match errno() {
            libc::EINTR | libc::ECONNABORTED => {}
            // Idle for ACCEPT_IDLE_MS: over if the client is, else wait on.
            libc::EAGAIN => {
                if progress.client_done.load(Ordering::Acquire) {
                    break;
                }
            }
            e => {
                server_failure = Some((ACCEPT4, e));
                break;
            }
        }
    }
    if server_failure.is_some() {
        // The client may be waiting for room in its window: let it go.
        progress.accepted.store(u64::MAX / 2, Ordering::Release);
    }
    // The client ends on its own: it has made its connections, failed, or
    // (after a server failure) stops waiting on the window above.
    let _ = client.join();
    let done = Outcome {
        ops: accepted,
        elapsed_ns: end - start,
        missing: progress.connected.load(Ordering::Acquire).saturating_sub(accepted),
    };
    let client_failure = progress.client_failure.load(Ordering::Acquire);
    match (server_failure, client_failure) {
        (Some((step, errno)), _) => Err(Failure { step, errno, done }),
        (None, 0) => Ok(done),
        (None, f) => Err(Failure { step: (f >> 32) as u32, errno: f as u32 as i32, done }),
    }
}

/// The client thread: connect, close with a reset, `count` times, never
/// more than CLIENT_WINDOW connections ahead of the server.
fn client(addr: libc::sockaddr_in, count: u64, progress: &Progress) {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    let fail = |step: u32, errno: i32| {
        progress.client_failure.store((u64::from(step) << 32) | u64::from(errno as u32), Ordering::Release);
        progress.client_done.store(true, Ordering::Release);
    };
    for i in 0..count {
        // Rarely taken: the server is on the other core, or next in line
        // on this one (sched_yield hands it the core).
        let mut spins = 0u32;
        while i >= progress.accepted.load(Ordering::Acquire) + CLIENT_WINDOW {
            spins += 1;
            if spins < 10_000 {
                // SAFETY: sched_yield has no preconditions.
                unsafe { libc::sched_yield() };
            } else {
                // The server is starved for long: stop burning the core.
                let pause = libc::timespec { tv_sec: 0, tv_nsec: 100_000 };
                // SAFETY: pause is a valid timespec.
                unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
            }
        }
        let fd = match tcp_socket() {
            Ok(fd) => fd,
            Err((step, errno)) => return fail(step, errno),
        };
        // SAFETY: linger and addr are valid for the sizes passed; the
        // descriptor is ours.
        unsafe {
            let size = size_of::<libc::linger>() as libc::socklen_t;
            if libc::setsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, (&raw const linger).cast(), size)
                != 0
            {
                return fail(SETSOCKOPT, errno());
            }
            loop {
                if libc::connect(fd.as_raw_fd(), (&raw const addr).cast(), SOCKADDR_IN_LEN) == 0 {
                    break;
                }
                match errno() {
                    // Interrupted, the connection goes on: ask again until
                    // the kernel says it is made.
                    libc::EINTR | libc::EALREADY => {}
                    libc::EISCONN => break,
                    e => return fail(CONNECT, e),
                }
            }
        }
        // A reset, not a FIN: no TIME_WAIT at either end.
        drop(fd);
        progress.connected.store(i + 1, Ordering::Release);
    }
    progress.client_done.store(true, Ordering::Release);
}
