//! Reading the EVENTS ring buffer with few wake-ups and a bounded delay.
//!
//! Left to itself, the kernel wakes the reader whenever the reader has caught
//! up: under a flood the reader then sleeps and is woken every few records,
//! and most of its CPU goes to switching in and out. [`RingReader`] instead
//! asks the programs to skip the wake-up (RING_WAKEUP, see watcher-common)
//! and bounds the delay itself:
//!
//! - **polling** while records flow: it is not registered on the ring at all
//!   (so the kernel's wake-ups reach nobody) and wakes on a timer every
//!   [`POLL_INTERVAL`], reading whatever came meanwhile: at most that long
//!   behind, at most 1 / [`POLL_INTERVAL`] wake-ups a second however fast
//!   records come;
//! - **idle** once [`QUIET_POLLS`] polls in a row found nothing: it
//!   registers on the ring (the registration checks the ring, so nothing
//!   that came meanwhile waits) and sleeps until a record comes. The first
//!   record after everything was read always forces a wake-up, so an idle
//!   watcher uses no CPU and is not woken at all, and still sees that first
//!   record at once.
//!
//! Used from the pipeline's `select!` loop instead of an `AsyncFd` on the
//! ring (`ready` is cancel-safe):
//!
//! ```ignore
//! let mut ring = RingReader::new(&mut attached.ebpf)?;
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
    time::Duration,
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
use watcher_common::{EVENTS_BYTES, EVENTS_MAP, RING_WAKEUP_MAP};

/// How often the ring is read while records flow: the most a record waits
/// in the ring before userspace reads it (plus the time to read those
/// ahead of it).
pub const POLL_INTERVAL: Duration = Duration::from_micros(250);
/// Polls in a row that found nothing before the reader sleeps until woken:
/// 1 ms of quiet. Longer costs wake-ups for nothing after each burst;
/// shorter makes a steady trickle wake the reader through the kernel.
pub const QUIET_POLLS: u32 = 4;
/// Unread bytes above which every record wakes the reader anyway: a
/// quarter of the ring. The reader polls far more often than a flood fills
/// that much, so this is a backstop, not the usual path.
pub const WAKEUP_BYTES: u64 = EVENTS_BYTES as u64 / 4;

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
}

enum State {
    /// Not registered anywhere: the kernel's wake-ups reach nobody.
    Polling(RingBuf<MapData>),
    /// Registered with tokio, waiting for a wake-up.
    Idle(AsyncFd<RingBuf<MapData>>),
    /// Only while moving between the two.
    Moving,
}

impl RingReader {
    /// Takes the EVENTS ring buffer from `ebpf` and turns on the programs'
    /// wake-up batching, which this reader makes safe.
    pub fn new(ebpf: &mut Ebpf) -> anyhow::Result<Self> {
        let ring = RingBuf::try_from(ebpf.take_map(EVENTS_MAP).context("map EVENTS missing from the eBPF object")?)
            .context("opening the EVENTS ring buffer")?;
        let timer = TimerFd::new(ClockId::CLOCK_MONOTONIC, TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC)
            .context("creating the ring buffer's poll timer")?;
        // SAFETY: Timer owns its fd, which stays open and the same for as
        // long as the AsyncFd owns the Timer.
        let timer = unsafe { AsyncFd::register_with_interest(Timer(timer), Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .context("registering the ring buffer's poll timer with tokio")?;
        let mut reader = Self { state: State::Moving, timer, read: 0, emptied: true, quiet: 0 };
        reader.poll_on_timer(ring)?;
        // Only now: until this reader reads, the kernel's own wake-ups were right.
        let mut wakeup: Array<_, u64> =
            Array::try_from(ebpf.map_mut(RING_WAKEUP_MAP).context("map RING_WAKEUP missing from the eBPF object")?)
                .context("opening the RING_WAKEUP map")?;
        wakeup.set(0, WAKEUP_BYTES, 0).context("turning on the ring buffer's wake-up batching")?;
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
        if read > 0 {
            self.quiet = 0;
        } else {
            self.quiet = self.quiet.saturating_add(1);
        }
        if matches!(self.state, State::Polling(_)) && self.quiet >= QUIET_POLLS {
            self.sleep_on_ring()?;
        }
        match &self.state {
            State::Polling(_) => {
                let mut guard = self.timer.readable().await?;
                // Expirations are counted by the timer; one read clears them.
                match guard.try_io(|timer| timer.get_ref().0.wait().map_err(io::Error::from)) {
                    Ok(result) => result?,
                    Err(_would_block) => return Ok(()),
                }
            }
            State::Idle(fd) => {
                let mut guard = fd.readable().await?;
                guard.clear_ready();
                drop(guard);
                // Woken: records came, or one is reserved and not yet
                // committed (its commit may skip the wake-up). Either way,
                // poll until the ring has been quiet for a while.
                self.quiet = 0;
                let State::Idle(fd) = std::mem::replace(&mut self.state, State::Moving) else {
                    unreachable!("matched above")
                };
                self.poll_on_timer(fd.into_inner())?;
            }
            State::Moving => return Err(io::Error::other("the ring reader failed to switch modes")),
        }
        Ok(())
    }

    fn poll_on_timer(&mut self, ring: RingBuf<MapData>) -> io::Result<()> {
        let interval = TimeSpec::from_duration(POLL_INTERVAL);
        self.timer.get_ref().0.set(Expiration::Interval(interval), TimerSetTimeFlags::empty())?;
        self.state = State::Polling(ring);
        Ok(())
    }

    fn sleep_on_ring(&mut self) -> io::Result<()> {
        self.timer.get_ref().0.unset()?;
        let State::Polling(ring) = std::mem::replace(&mut self.state, State::Moving) else {
            return Ok(());
        };
        // Registering polls the ring: a record that came since the last
        // read makes it readable at once. Any record reserved after that
        // finds everything before it read, and forces a wake-up.
        // SAFETY: the RingBuf owns its map fd, which stays open and is not
        // replaced while the AsyncFd owns the RingBuf.
        match unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) } {
            Ok(fd) => {
                self.state = State::Idle(fd);
                self.quiet = 0;
                Ok(())
            }
            Err(e) => {
                // Keep polling: slower to fall asleep, never blind.
                let (ring, error) = e.into_parts();
                self.poll_on_timer(ring)?;
                Err(error)
            }
        }
    }
}

/// AsyncFd wants AsRawFd, which nix's TimerFd does not implement.
struct Timer(TimerFd);

impl AsRawFd for Timer {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}
