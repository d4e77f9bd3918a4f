//! The throughput bench's load: a fork of the bench (its own pid, which
//! watcher and bpftrace filter on in the kernel) that opens and closes TCP
//! listeners on 127.0.0.1 at a set rate for a set time and does nothing else
//! meanwhile. child.rs's ListenerChild keeps every listener's timings and
//! sleeps before each opening; here only counts are kept, and the pace is
//! kept in batches: every time it wakes, the generator opens as many
//! listeners as are due by then, so a sleep that overshoots (timer slack,
//! scheduling on a loaded machine) makes a larger batch instead of a lower
//! rate, and 100,000+ listeners/s stay reachable.
use std::{
    fs::File,
    io::{Read as _, Write as _},
    os::fd::AsRawFd as _,
    sync::mpsc,
};

use anyhow::bail;

use crate::bench::{
    child::{Failure, STEPS, bound_to_loopback},
    forked::{Forked, errno, sleep_until},
    monotonic_ns,
};

/// One run of the generator.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Listeners per second; 0: as fast as it can.
    pub rate: u64,
    pub duration_ns: u64,
    /// Stop after this many listeners (0: no limit).
    pub max_count: u64,
    /// Threads of the generator sharing the rate (and `max_count`), at most
    /// the `threads` it was started with: one thread cannot outrun a tool
    /// that has a core of its own.
    pub threads: u64,
    /// The CPU to run on (ANY_CPU: wherever the scheduler puts it).
    pub cpu: u64,
}

pub const ANY_CPU: u64 = u64::MAX;

impl Load {
    /// One listener, at once: the marker that shows a tool has caught up.
    pub const MARKER: Self = Self { rate: 0, duration_ns: u64::MAX, max_count: 1, threads: 1, cpu: ANY_CPU };
}

/// What the generator did, CLOCK_MONOTONIC ns.
#[derive(Clone, Copy, Debug, Default)]
pub struct Done {
    /// Listeners opened and closed (each: socket, bind, listen, close).
    pub opened: u64,
    /// Just before the first socket() call.
    pub start_ns: u64,
    /// Just after the last close() returned.
    pub end_ns: u64,
    /// The last listener's port.
    pub last_port: u16,
}

const LOAD_BYTES: usize = 40;
const DONE_BYTES: usize = 40;
const NO_FAILURE: u32 = u32::MAX;
/// In place of a step: one of the generator's threads panicked.
const PANICKED: u32 = u32::MAX - 1;

pub struct Generator(Forked);

impl Generator {
    /// Forks the generator with `threads` threads, started at once and
    /// kept: a thread starting or ending makes records of its own in
    /// watcher's ring buffer (sched_process_fork/exit), which watcher does
    /// not print, so none may start or end while the books are kept. Must
    /// run while the bench is still single-threaded (before any tool or
    /// reader thread starts): checked.
    pub fn start(threads: u64) -> anyhow::Result<Self> {
        Forked::start("listener generator", |commands, results| {
            // 1 ns of timer slack instead of 50 µs: sleeps end close to
            // when the next listener is due, so batches stay small.
            // SAFETY: prctl(PR_SET_TIMERSLACK) takes no pointers.
            unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
            serve(commands, results, &Pool::start(threads))
        })
        .map(Self)
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// Runs `load` in the generator and waits until it is done.
    pub fn run(&mut self, load: &Load) -> anyhow::Result<Done> {
        self.0.send(&load.encode(), "a load")?;
        let mut bytes = [0u8; DONE_BYTES];
        self.0.receive(&mut bytes)?;
        let long = |i: usize| u64::from_ne_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        let done = Done { opened: long(0), start_ns: long(1), end_ns: long(2), last_port: long(3) as u16 };
        let (step, errno) = (long(4) >> 32, long(4) as u32 as i32);
        if step == u64::from(PANICKED) {
            bail!("a thread of the listener generator panicked after {} listeners", done.opened);
        }
        if step != u64::from(NO_FAILURE) {
            bail!(
                "the listener generator's {}() failed after {} listeners: {}",
                STEPS.get(step as usize).copied().unwrap_or("?"),
                done.opened,
                std::io::Error::from_raw_os_error(errno)
            );
        }
        Ok(done)
    }
}

impl Load {
    fn encode(&self) -> [u8; LOAD_BYTES] {
        let mut out = [0u8; LOAD_BYTES];
        out[0..8].copy_from_slice(&self.rate.to_ne_bytes());
        out[8..16].copy_from_slice(&self.duration_ns.to_ne_bytes());
        out[16..24].copy_from_slice(&self.max_count.to_ne_bytes());
        out[24..32].copy_from_slice(&self.threads.to_ne_bytes());
        out[32..40].copy_from_slice(&self.cpu.to_ne_bytes());
        out
    }

    fn decode(bytes: &[u8; LOAD_BYTES]) -> Self {
        let long = |i: usize| u64::from_ne_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
        Self { rate: long(0), duration_ns: long(1), max_count: long(2), threads: long(3), cpu: long(4) }
    }
}

// ---- in the generator ----

fn serve(commands: &mut File, results: &mut File, pool: &Pool) -> i32 {
    loop {
        let mut bytes = [0u8; LOAD_BYTES];
        if commands.read_exact(&mut bytes).is_err() {
            return 0;
        }
        let (done, failure) = pool.run(&Load::decode(&bytes));
        let (step, errno) = failure.unwrap_or((NO_FAILURE, 0));
        let mut out = [0u8; DONE_BYTES];
        let words = [
            done.opened,
            done.start_ns,
            done.end_ns,
            u64::from(done.last_port),
            u64::from(step) << 32 | u64::from(errno as u32),
        ];
        for (i, w) in words.iter().enumerate() {
            out[i * 8..i * 8 + 8].copy_from_slice(&w.to_ne_bytes());
        }
        if results.write_all(&out).is_err() {
            return 1;
        }
    }
}

/// The generator's threads besides its main one, waiting for loads.
struct Pool {
    workers: Vec<Worker>,
}

struct Worker {
    jobs: mpsc::Sender<Load>,
    results: mpsc::Receiver<(Done, Option<Failure>)>,
}

impl Pool {
    /// The generator is a fork of a single-threaded process, so it may
    /// start threads of its own. They end with the process.
    fn start(threads: u64) -> Self {
        let workers = (1..threads.max(1))
            .map(|_| {
                let (jobs, job_rx) = mpsc::channel::<Load>();
                let (result_tx, results) = mpsc::channel();
                std::thread::spawn(move || {
                    for load in job_rx {
                        let outcome = std::panic::catch_unwind(|| generate(&load))
                            .unwrap_or((Done::default(), Some((PANICKED, 0))));
                        if result_tx.send(outcome).is_err() {
                            return;
                        }
                    }
                });
                Worker { jobs, results }
            })
            .collect();
        Self { workers }
    }

    /// Runs `load` in `load.threads` threads (the main one and workers),
    /// each with its share of the rate and count, and sums what they did.
    fn run(&self, load: &Load) -> (Done, Option<Failure>) {
        if load.cpu != ANY_CPU {
            return on_cpu(load.cpu, || generate(load));
        }
        let threads = load.threads.clamp(1, self.workers.len() as u64 + 1);
        let share = |total: u64, i: u64| total / threads + u64::from(i < total % threads);
        let mine = |i: u64| Load {
            // A thread with a share of 0 would run unthrottled.
            rate: if load.rate == 0 { 0 } else { share(load.rate, i).max(1) },
            max_count: if load.max_count == 0 { 0 } else { share(load.max_count, i).max(1) },
            threads: 1,
            ..*load
        };
        let helpers = &self.workers[..threads as usize - 1];
        let sent: Vec<bool> =
            helpers.iter().enumerate().map(|(i, w)| w.jobs.send(mine(i as u64 + 1)).is_ok()).collect();
        let mut results = vec![generate(&mine(0))];
        for (w, sent) in helpers.iter().zip(sent) {
            let outcome = sent.then(|| w.results.recv().ok()).flatten();
            results.push(outcome.unwrap_or((Done::default(), Some((PANICKED, 0)))));
        }
        let mut done = Done {
            start_ns: results.iter().map(|(d, _)| d.start_ns).min().unwrap_or(0),
            end_ns: results.iter().map(|(d, _)| d.end_ns).max().unwrap_or(0),
            ..Done::default()
        };
        let mut failure = None;
        for (d, f) in &results {
            done.opened += d.opened;
            done.last_port = d.last_port;
            failure = failure.or(*f);
        }
        (done, failure)
    }
}

/// Runs `f` with the calling thread bound to `cpu`, then restores its
/// affinity. If the CPU cannot be chosen, `f` runs where it is.
fn on_cpu<T>(cpu: u64, f: impl FnOnce() -> T) -> T {
    // SAFETY: cpu_set_t is plain bits; the calls get its real size.
    unsafe {
        let mut before: libc::cpu_set_t = std::mem::zeroed();
        let size = size_of::<libc::cpu_set_t>();
        let saved = libc::sched_getaffinity(0, size, &mut before) == 0;
        let mut only: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut only);
        libc::sched_setaffinity(0, size, &only);
        let out = f();
        if saved {
            libc::sched_setaffinity(0, size, &before);
        }
        out
    }
}

/// The CPUs the bench may run on (its affinity mask), for markers on each.
pub fn cpus() -> Vec<u64> {
    // SAFETY: as in `on_cpu`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![ANY_CPU];
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).map(|c| c as u64).collect()
    }
}

/// Opens and closes listeners until `load.duration_ns` has passed (or
/// `max_count` are done). Listener i (from 0) is due at start + i/rate: on
/// every wake-up all those due are opened back to back, then it sleeps
/// until the next one is due.
fn generate(load: &Load) -> (Done, Option<Failure>) {
    let start_ns = monotonic_ns();
    let end = start_ns.saturating_add(load.duration_ns);
    let mut done = Done { start_ns, ..Done::default() };
    let due_at = |i: u64| start_ns + (u128::from(i) * 1_000_000_000 / u128::from(load.rate.max(1))) as u64;
    let failure = loop {
        if load.max_count != 0 && done.opened >= load.max_count {
            break None;
        }
        let now = monotonic_ns();
        if now >= end {
            break None;
        }
        if load.rate != 0 {
            let next = due_at(done.opened);
            if next > now {
                sleep_until(next.min(end));
                continue;
            }
        }
        match open_and_close() {
            Ok(port) => {
                done.opened += 1;
                done.last_port = port;
            }
            Err(f) => break Some(f),
        }
    };
    done.end_ns = monotonic_ns();
    (done, failure)
}

/// socket(), bind(127.0.0.1:0), getsockname(), listen(), close(): the same
/// calls as child.rs's listeners, so rates compare across benches.
fn open_and_close() -> Result<u16, Failure> {
    let (fd, port) = bound_to_loopback()?;
    // SAFETY: plain syscalls on a descriptor this function owns.
    unsafe {
        if libc::listen(fd.as_raw_fd(), 128) != 0 {
            return Err((3, errno()));
        }
        // An explicit close, to see its error (drop would ignore it).
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        if libc::close(raw) != 0 {
            return Err((4, errno()));
        }
    }
    Ok(port)
}
