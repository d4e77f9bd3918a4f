//! Reading the EVENTS ring buffer with few wake-ups and a bounded delay.
//!
//! Left to itself, the kernel wakes the reader whenever the reader has caught
//! up: under a flood the reader then sleeps and is woken every few records,
//! and most of its CPU goes to switching in and out. [`RingReader`] instead
//! asks the programs to skip the wake-up (RING_WAKEUP, see watcher-common)
//! while records ahead are unread, and bounds the delay itself:
//!
//! - **idle**, it sleeps on the ring, and the first record after the reader
//!   has read everything always forces a wake-up: an idle watcher uses no
//!   CPU and is not woken at all, and a lone record is read at once;
//! - **polling**, once it has been woken [`FLOW_WAKEUPS`] times within
//!   [`FLOW_WINDOW`] (records flow faster than it should wake up; a burst of
//!   a few records, a bind then its listen, does not count), it is not registered on
//!   the ring at all, so the kernel's wake-ups reach nobody, and it wakes on
//!   a timer every [`POLL_INTERVAL`] instead, reading whatever came: at most
//!   that long behind, at most 1 / [`POLL_INTERVAL`] wake-ups a second
//!   however fast records come. [`QUIET_POLLS`] polls in a row that find
//!   nothing make it idle again.
//!
//! Either way it wakes at most about once per [`POLL_INTERVAL`].
//!
//! Used from the pipeline's `select!` loop instead of an `AsyncFd` on the
//! ring (`ready` is cancel-safe):
//!
//! ```ignore
//! let mut ring = RingReader::new(&mut attached.ebpf, ring_bytes)?;
//! loop {
//!     tokio::select! {
//!         ready = ring.ready() => {
//!             ready.context("waiting on the ring buffer")?;
//!             // handle at most DRAIN_BATCH records from ring.next()
//!         }
//!         // … signals, the loss check
//!     }
//! }
//! ```
use std::{
    io,
    os::fd::{AsFd as _, AsRawFd, RawFd},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::{
    Ebpf,
    maps::{Array, MapData, RingBuf, ring_buf::RingBufItem},
};
use nix::sys::{
    time::TimeSpec,
    timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags},
};
use tokio::io::{Interest, unix::AsyncFd};
use watcher_common::{EVENTS_MAP, RING_WAKEUP_MAP};

/// How often the ring is read while records flow: the most a record waits
/// in the ring before userspace reads it (plus the time to read those
/// ahead of it), and the shortest gap between two wake-ups.
pub const POLL_INTERVAL: Duration = Duration::from_micros(250);
/// Polls in a row that found nothing before the reader sleeps on the ring
/// again (0.5 ms of quiet).
pub const QUIET_POLLS: u32 = 2;
/// Wake-ups from the ring within [`FLOW_WINDOW`] that switch to polling: a
/// rate above 4,000 a second, where the switching costs more than it does
/// for a lone listener's few records (bind, listen), which stay immediate.
pub const FLOW_WAKEUPS: u32 = 4;
pub const FLOW_WINDOW: Duration = Duration::from_millis(1);
/// Unread bytes above which records wake the reader anyway (one in each
/// sixteenth of this many bytes, RING_WAKEUP_STEPS): a quarter of the ring
/// (this divides its size). The reader polls far more often than a flood
/// fills that much, so this is a backstop, not the usual path.
pub const WAKEUP_FRACTION: u64 = 4;

/// The ring buffer and how the reader waits on it.
pub struct RingReader {
    state: State,
    timer: AsyncFd<Timer>,
    /// Records read since the last wait.
    read: u64,
    /// The last `next` found the ring empty (not the caller's batch limit).
    emptied: bool,
    /// Polls in a row that found nothing.
    quiet: u32,
    /// When the current [`FLOW_WINDOW`] began, and the wake-ups from the
    /// ring in it: a flow or a burst.
    window: (Instant, u32),
    /// The last wait ended because the ring looked readable (idle).
    woken: bool,
}

enum State {
    /// Not registered anywhere: the kernel's wake-ups reach nobody.
    Polling(RingBuf<MapData>),
    /// Registered with tokio, woken by the kernel.
    Idle(AsyncFd<RingBuf<MapData>>),
    /// Only while moving between the two.
    Moving,
}

impl RingReader {
    /// Takes the EVENTS ring buffer (`ring_bytes` long) from `ebpf` and
    /// turns on the programs' wake-up batching, which this reader makes safe.
    pub fn new(ebpf: &mut Ebpf, ring_bytes: u32) -> anyhow::Result<Self> {
        let ring = RingBuf::try_from(ebpf.take_map(EVENTS_MAP).context("map EVENTS missing from the eBPF object")?)
            .context("opening the EVENTS ring buffer")?;
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)
            .context("creating the ring buffer's poll timer")?;
        // SAFETY: Timer owns its fd, which stays open and the same for as
        // long as the AsyncFd owns the Timer.
        let timer = unsafe { AsyncFd::register_with_interest(Timer(timer), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("registering the ring buffer's poll timer with tokio")?;
        let mut reader = Self {
            state: State::Moving,
            timer,
            read: 0,
            emptied: true,
            quiet: 0,
            window: (Instant::now(), 0),
            woken: false,
        };
        reader.sleep_on_ring(ring).context("registering the ring buffer with tokio")?;
        // Only now: until this reader reads, the kernel's own wake-ups were right.
        let mut wakeup: Array<_, u64> =
            Array::try_from(ebpf.map_mut(RING_WAKEUP_MAP).context("map RING_WAKEUP missing from the eBPF object")?)
                .context("opening the RING_WAKEUP map")?;
        wakeup
            .set(0, u64::from(ring_bytes) / WAKEUP_FRACTION, 0)
            .context("turning on the ring buffer's wake-up batching")?;
        Ok(reader)
    }

    /// The next record, if one is there.
    #[expect(
        clippy::should_implement_trait,
        reason = "as aya's RingBuf::next: the item borrows the ring, which Iterator cannot express"
    )]
    pub fn next(&mut self) -> Option<RingBufItem<'_>> {
        let ring = match &mut self.state {
            State::Polling(ring) => ring,
            State::Idle(fd) => fd.get_mut(),
            State::Moving => return None,
        };
        let item = ring.next();
        self.emptied = item.is_none();
        if item.is_some() {
            self.read += 1;
        }
        item
    }

    /// Waits until records may be there: at once when the last batch
    /// stopped short of emptying the ring, at the next poll while records
    /// flow, else when the kernel wakes the reader. Cancel-safe: dropped in
    /// a `select!`, it leaves the reader in a state the next call resumes.
    pub async fn ready(&mut self) -> io::Result<()> {
        if !self.emptied {
            return Ok(());
        }
        let read = std::mem::take(&mut self.read);
        let woken = std::mem::take(&mut self.woken);
        match &self.state {
            State::Polling(_) => {
                self.quiet = if read > 0 { 0 } else { self.quiet + 1 };
                if self.quiet < QUIET_POLLS {
                    return self.tick().await;
                }
                let ring = self.take_polling();
                self.sleep_on_ring(ring)?;
            }
            // Woken because the ring looked readable, yet nothing could be
            // read: a record is reserved and not yet committed, and its
            // commit may skip the wake-up. Poll until it is there.
            State::Idle(_) if woken && read == 0 => {
                self.poll_on_timer()?;
                return self.tick().await;
            }
            State::Idle(_) => {}
            State::Moving => return Err(io::Error::other("the ring reader failed to switch modes")),
        }
        let State::Idle(fd) = &self.state else {
            return Err(io::Error::other("the ring reader failed to switch modes"));
        };
        loop {
            let mut guard = fd.readable().await?;
            // tokio's readiness is edge-triggered and the last drain may
            // have left a record that skipped its wake-up: ask the ring
            // itself (level-triggered). Not readable: the readiness is
            // cleared, and every record reserved from now on finds
            // everything before it read and forces a wake-up.
            if guard.try_io(|ring| readable(ring.get_ref())).is_ok() {
                break;
            }
        }
        self.woken = true;
        let now = Instant::now();
        let (start, wakeups) = &mut self.window;
        if now.duration_since(*start) < FLOW_WINDOW {
            *wakeups += 1;
        } else {
            (*start, *wakeups) = (now, 1);
        }
        if *wakeups >= FLOW_WAKEUPS {
            // Records flow: read these, then poll on the timer.
            self.window.1 = 0;
            self.poll_on_timer()?;
        }
        Ok(())
    }

    /// Waits for the poll timer.
    async fn tick(&mut self) -> io::Result<()> {
        let mut guard = self.timer.readable().await?;
        // Expirations are counted by the timer; one read clears them.
        match guard.try_io(|timer| timer.get_ref().0.wait().map_err(io::Error::from)) {
            Ok(result) => result,
            Err(_would_block) => Ok(()),
        }
    }

    fn take_polling(&mut self) -> RingBuf<MapData> {
        match std::mem::replace(&mut self.state, State::Moving) {
            State::Polling(ring) => ring,
            State::Idle(fd) => fd.into_inner(),
            State::Moving => unreachable!("only while switching"),
        }
    }

    /// Leaves the ring (the kernel's wake-ups then reach nobody) for the timer.
    fn poll_on_timer(&mut self) -> io::Result<()> {
        let ring = self.take_polling();
        self.quiet = 0;
        self.state = State::Polling(ring);
        let interval = TimeSpec::from_duration(POLL_INTERVAL);
        self.timer.get_ref().0.set(Expiration::Interval(interval), TimerSetTimeFlags::empty())?;
        Ok(())
    }

    fn sleep_on_ring(&mut self, ring: RingBuf<MapData>) -> io::Result<()> {
        self.timer.get_ref().0.unset()?;
        // SAFETY: the RingBuf owns its map fd, which stays open and is not
        // replaced while the AsyncFd owns the RingBuf.
        match unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) } {
            Ok(fd) => {
                self.state = State::Idle(fd);
                Ok(())
            }
            Err(e) => {
                // Keep polling: slower to fall asleep, never blind.
                let (ring, error) = e.into_parts();
                self.state = State::Polling(ring);
                self.poll_on_timer()?;
                Err(error)
            }
        }
    }
}

/// Whether the ring holds data (committed or still reserved), as poll(2)
/// says; `WouldBlock` when it does not.
fn readable(ring: &RingBuf<MapData>) -> io::Result<()> {
    let mut fd = libc::pollfd { fd: ring.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd, no timeout.
    match unsafe { libc::poll(&mut fd, 1, 0) } {
        n if n < 0 => Err(io::Error::last_os_error()),
        0 => Err(io::ErrorKind::WouldBlock.into()),
        _ => Ok(()),
    }
}

/// AsyncFd wants AsRawFd, which nix's TimerFd does not implement.
struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}
