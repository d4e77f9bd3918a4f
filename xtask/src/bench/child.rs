//! The process whose listeners are measured: a fork of the bench, so it is a
//! separate process (its own pid, which watcher and bpftrace filter on in
//! the kernel) that runs nothing but socket()/bind()/listen()/close() and
//! clock_gettime(CLOCK_MONOTONIC) through libc, on a schedule it is sent
//! down a pipe. It buffers what it measured and writes it back only when
//! the whole plan is done, so that no pipe traffic to the bench wakes a
//! third process while the tools are at work.
use std::{
    collections::VecDeque,
    fs::File,
    io::{Read as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::bail;

use super::{
    forked::{Forked, errno, sleep_until},
    monotonic_ns,
};

/// What the child is asked to do: open `count` TCP listeners on 127.0.0.1
/// (a port the kernel picks), one every `mean_interval_ns` on average
/// (uniformly jittered between half and one and a half times that, so
/// that openings fall at every phase of a poller's period), and close each
/// `hold_ns` after listen() returned (0: close at once).
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub count: u32,
    pub mean_interval_ns: u64,
    pub hold_ns: u64,
    pub seed: u64,
}

/// One listener as the child timed it, all CLOCK_MONOTONIC ns.
#[derive(Clone, Copy, Debug, Default)]
pub struct Listener {
    pub port: u16,
    /// Just before socket() was called.
    pub socket_ns: u64,
    /// Just before listen() was called.
    pub before_ns: u64,
    /// Just after listen() returned: where every latency starts.
    pub after_ns: u64,
    /// Just after close() returned.
    pub close_ns: u64,
}

const PLAN_BYTES: usize = 32;
const RECORD_BYTES: usize = 48;
const TAG_LISTENER: u32 = 1;
const TAG_DONE: u32 = 2;
const TAG_FAILED: u32 = 3;
/// The calls a listener's life is made of, indexed by a Failure's step.
/// throughput_generator.rs makes the same calls.
pub const STEPS: [&str; 5] = ["socket", "bind", "getsockname", "listen", "close"];

pub struct ListenerChild(Forked);

impl ListenerChild {
    /// Forks the child. Must run while the bench is still single-threaded
    /// (before any tool or reader thread starts), which is checked.
    pub fn start() -> anyhow::Result<Self> {
        Forked::start("listener child", serve).map(Self)
    }

    pub fn pid(&self) -> u32 {
        self.0.pid()
    }

    /// Opens one listener and closes it at once: the test listener that
    /// proves a tool is attached and sees the child.
    pub fn probe(&mut self) -> anyhow::Result<Listener> {
        let plan = Plan { count: 1, mean_interval_ns: 0, hold_ns: 0, seed: 1 };
        Ok(self.run(&plan)?[0])
    }

    /// Runs a plan in the child and returns its listeners, in opening order.
    pub fn run(&mut self, plan: &Plan) -> anyhow::Result<Vec<Listener>> {
        self.0.send(&plan.encode(), "a plan")?;
        let mut listeners = Vec::with_capacity(plan.count as usize);
        loop {
            let mut record = [0u8; RECORD_BYTES];
            self.0.receive(&mut record)?;
            let word = |i: usize| u32::from_ne_bytes(record[i * 4..i * 4 + 4].try_into().unwrap());
            let long = |i: usize| u64::from_ne_bytes(record[16 + i * 8..24 + i * 8].try_into().unwrap());
            match word(0) {
                TAG_LISTENER => listeners.push(Listener {
                    port: word(1) as u16,
                    socket_ns: long(0),
                    before_ns: long(1),
                    after_ns: long(2),
                    close_ns: long(3),
                }),
                TAG_DONE => return Ok(listeners),
                TAG_FAILED => {
                    let step = STEPS.get(word(1) as usize).copied().unwrap_or("?");
                    bail!(
                        "the listener child's {step}() failed after {} listeners: {}",
                        listeners.len(),
                        std::io::Error::from_raw_os_error(word(2) as i32)
                    );
                }
                tag => bail!("the listener child sent a record with tag {tag}"),
            }
        }
    }
}

impl Plan {
    fn encode(&self) -> [u8; PLAN_BYTES] {
        let mut out = [0u8; PLAN_BYTES];
        out[0..8].copy_from_slice(&u64::from(self.count).to_ne_bytes());
        out[8..16].copy_from_slice(&self.mean_interval_ns.to_ne_bytes());
        out[16..24].copy_from_slice(&self.hold_ns.to_ne_bytes());
        out[24..32].copy_from_slice(&self.seed.to_ne_bytes());
        out
    }

    fn decode(bytes: &[u8; PLAN_BYTES]) -> Self {
        let long = |i: usize| u64::from_ne_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap());
        Self { count: long(0) as u32, mean_interval_ns: long(1), hold_ns: long(2), seed: long(3) }
    }
}

// ---- in the child ----

/// Why a plan stopped: (index into STEPS, errno).
pub type Failure = (u32, i32);

fn serve(commands: &mut File, results: &mut File) -> i32 {
    loop {
        let mut bytes = [0u8; PLAN_BYTES];
        if commands.read_exact(&mut bytes).is_err() {
            return 0;
        }
        let plan = Plan::decode(&bytes);
        if plan.count == 0 {
            return 0;
        }
        let (listeners, failure) = run_plan(&plan);
        let mut out = Vec::with_capacity((listeners.len() + 1) * RECORD_BYTES);
        for l in &listeners {
            out.extend_from_slice(&record(
                TAG_LISTENER,
                u32::from(l.port),
                0,
                [l.socket_ns, l.before_ns, l.after_ns, l.close_ns],
            ));
        }
        out.extend_from_slice(&match failure {
            None => record(TAG_DONE, 0, 0, [0; 4]),
            Some((step, errno)) => record(TAG_FAILED, step, errno as u32, [0; 4]),
        });
        if results.write_all(&out).is_err() {
            return 1;
        }
    }
}

fn record(tag: u32, a: u32, b: u32, longs: [u64; 4]) -> [u8; RECORD_BYTES] {
    let mut out = [0u8; RECORD_BYTES];
    out[0..4].copy_from_slice(&tag.to_ne_bytes());
    out[4..8].copy_from_slice(&a.to_ne_bytes());
    out[8..12].copy_from_slice(&b.to_ne_bytes());
    for (i, v) in longs.iter().enumerate() {
        out[16 + i * 8..24 + i * 8].copy_from_slice(&v.to_ne_bytes());
    }
    out
}

/// Runs the schedule; returns the listeners completed (opened and closed)
/// and why it stopped early, if it did.
fn run_plan(plan: &Plan) -> (Vec<Listener>, Option<Failure>) {
    let count = plan.count as usize;
    let mut done = vec![Listener::default(); count];
    // (index, fd, close deadline); deadlines come in opening order.
    let mut open: VecDeque<(usize, OwnedFd, u64)> = VecDeque::with_capacity(count.min(65_536));
    let mut rng = plan.seed | 1;
    let mut opened = 0usize;
    let mut next_open = monotonic_ns();
    let mut failure = None;
    while opened < count || !open.is_empty() {
        let now = monotonic_ns();
        while open.front().is_some_and(|&(_, _, deadline)| deadline <= now) {
            let (i, fd, _) = open.pop_front().expect("checked above");
            drop(fd);
            done[i].close_ns = monotonic_ns();
        }
        if failure.is_none() && opened < count && next_open <= now {
            match open_listener() {
                Ok((fd, mut listener)) => {
                    if plan.hold_ns == 0 {
                        drop(fd);
                        listener.close_ns = monotonic_ns();
                    } else {
                        open.push_back((opened, fd, listener.after_ns + plan.hold_ns));
                    }
                    done[opened] = listener;
                    opened += 1;
                }
                // No more openings; those already open still close.
                Err(f) => {
                    failure = Some(f);
                    continue;
                }
            }
            next_open += jittered(plan.mean_interval_ns, &mut rng);
            continue;
        }
        let open_pending = (failure.is_none() && opened < count).then_some(next_open);
        let wake = match (open_pending, open.front().map(|&(_, _, d)| d)) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => break,
        };
        sleep_until(wake);
    }
    done.truncate(opened);
    (done, failure)
}

/// Uniform in [mean/2, 3·mean/2], from a xorshift64 generator.
fn jittered(mean: u64, rng: &mut u64) -> u64 {
    *rng ^= *rng << 13;
    *rng ^= *rng >> 7;
    *rng ^= *rng << 17;
    if mean == 0 { 0 } else { mean / 2 + *rng % (mean + 1) }
}

/// socket(), bind(127.0.0.1:0), then getsockname() for the port the
/// kernel picked: a listener up to its listen(). Shared with the
/// throughput generator, so that rates compare across benches.
pub fn bound_to_loopback() -> Result<(OwnedFd, u16), Failure> {
    // SAFETY: plain socket syscalls on a descriptor this function owns, with
    // pointers to a properly sized local sockaddr_in.
    unsafe {
        let raw = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if raw < 0 {
            return Err((0, errno()));
        }
        let fd = OwnedFd::from_raw_fd(raw);
        let mut addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: 0,
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([127, 0, 0, 1]) },
            sin_zero: [0; 8],
        };
        let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if libc::bind(fd.as_raw_fd(), (&raw const addr).cast(), len) != 0 {
            return Err((1, errno()));
        }
        if libc::getsockname(fd.as_raw_fd(), (&raw mut addr).cast(), &mut len) != 0 {
            return Err((2, errno()));
        }
        Ok((fd, u16::from_be(addr.sin_port)))
    }
}

/// socket(), bind(127.0.0.1:0), getsockname(), then listen() between two
/// clock reads (and one before socket()).
fn open_listener() -> Result<(OwnedFd, Listener), Failure> {
    let socket_ns = monotonic_ns();
    let (fd, port) = bound_to_loopback()?;
    let before_ns = monotonic_ns();
    // SAFETY: plain syscall on a descriptor we own.
    if unsafe { libc::listen(fd.as_raw_fd(), 128) } != 0 {
        return Err((3, errno()));
    }
    let after_ns = monotonic_ns();
    Ok((fd, Listener { port, socket_ns, before_ns, after_ns, close_ns: 0 }))
}
