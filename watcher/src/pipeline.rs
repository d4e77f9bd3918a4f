//! The pipeline `watch` and `daemon` share: attach, report the sockets
//! already there, then read the ring buffer (here, and nowhere else), turn
//! each record into a typed event for a [`Sink`] until Ctrl-C or SIGTERM,
//! counting what the kernel had to drop.
use std::{
    collections::{HashMap, HashSet},
    io,
    path::Path,
};

use anyhow::Context as _;
use aya::maps::{MapData, PerCpuArray};
use chrono::{DateTime, Utc};
use log::warn;
use nix::time::{ClockId, clock_gettime};
use tokio::{
    signal::unix::{SignalKind, signal},
    time::{Duration, MissedTickBehavior, interval},
};
use watcher_common::{AF_INET, AF_INET6, BoundSocket, LOST_MAP, ProgramError, UnixSocket};

use crate::{
    enrich::{
        process_table::ProcessTable,
        report::{Report, What},
        socket_options::{PassiveSocket, SocketOptions},
        unix_listeners::UnixListeners,
    },
    host::{cgroups::CgroupNames, process::ProcessLookup},
    kernel::{
        counters::ProgramErrors,
        loader::{self, Attached, LoadOptions},
        ring::RingReader,
        seed,
    },
    model::socket::{Local, Proto},
    output::{
        sink::{PipelineStats, Sink},
        stdout_closed::StdoutClosed,
    },
    policy::filter::{self, Filter},
    record::decode::{Record, SocketKind, Task},
    snapshot::{
        holders::{self, HolderInfo},
        sock_diag::{self, ExistingSocket, Snapshot},
    },
    state::{
        lifecycle::{Change, Socket},
        tracker::{Sighting, Tracker, existing_socket, holder_of, key_of_existing},
    },
};

/// Records after which a quiet second trims the heap.
const TRIM_AFTER_RECORDS: u64 = 10_000;

/// How often the per-CPU loss counter is read.
const LOST_CHECK_PERIOD: Duration = Duration::from_secs(1);

/// What the pipeline attaches and reports.
pub struct PipelineOptions {
    pub filter: Filter,
    pub accept: bool,
    /// Attach no syscall tracepoint (`watch --light`).
    pub light: bool,
    /// Report the sockets already there (`existing`) before streaming.
    pub snapshot: bool,
    /// Bytes in the kernel's ring buffer (`--ring-buffer-mib`).
    pub ring_bytes: u32,
    /// `watch`: a closed stdout (`watcher watch | head`) ends it at once,
    /// exit 0. The daemon goes on (its outputs count what they drop).
    pub stop_when_stdout_closes: bool,
}

/// Attaches the programs, reports the sockets already there, then streams
/// every event into `sink` until SIGINT or SIGTERM (or SIGHUP, when the
/// sink says so), counting what the kernel had to drop.
pub async fn run_pipeline<S: Sink>(options: PipelineOptions, mut sink: S) -> anyhow::Result<()> {
    let mut attached = loader::load_and_attach(LoadOptions {
        tgid: options.filter.kernel_tgid(),
        accept: options.accept,
        enforce: sink.enforces(),
        enforce_lsm: sink.enforces_calls(),
        light: options.light,
        ring_bytes: options.ring_bytes,
    })?;
    sink.attached(&mut attached)?;
    let ring = RingReader::new(&mut attached.ebpf, options.ring_bytes)?;
    let lost = PerCpuArray::<MapData, u64>::try_from(
        attached.ebpf.take_map(LOST_MAP).context("map LOST missing from the eBPF object")?,
    )
    .context("opening the LOST counter")?;
    // Without it (an object built without the map) nothing is counted, and that is said.
    let program_errors = ProgramErrors::take(&mut attached.ebpf)
        .inspect_err(|e| warn!("the kernel programs' errors will not be counted: {e:#}"))
        .ok();

    // Filled after the programs are attached, so that a process started in
    // between is seen by one or the other.
    let mut processes = ProcessTable::new(ProcessLookup::default());
    processes.fill_from_proc();
    let sink_follows = sink.follows_holders();
    let mut watch = Watch {
        reporter: Reporter {
            filter: options.filter,
            sink,
            processes,
            cgroups: attached
                .cgroup_root
                .as_deref()
                .map(CgroupNames::open)
                .and_then(|opened| opened.inspect_err(|e| warn!("events will not name their cgroup: {e:#}")).ok()),
            clock: WallClock::new()?,
            tracker: sink_follows.then(Tracker::holders_only),
            lookup: ProcessLookup::default(),
        },
        socket_options: SocketOptions::default(),
        unix_listeners: UnixListeners::default(),
        already_reported: AlreadyReported::default(),
        lost,
        lost_reported: 0,
        program_errors,
        errors_unsaid: Vec::new(),
        errors_said_at: None,
        read_since_trim: 0,
        read_at_last_check: 0,
    };
    let started = (|| {
        watch.reporter.sink.start()?;
        if options.snapshot {
            let snapshot;
            (watch.already_reported, snapshot) = report_existing(&mut watch.reporter)?;
            if let Some(snapshot) = snapshot {
                seed_closes(&mut attached.ebpf, &snapshot, &mut watch.unix_listeners);
            }
        }
        watch.reporter.sink.flush()?;
        watch.reporter.sink.tick(&watch.reporter.stats())?;
        anyhow::Ok(())
    })();
    match started {
        // `watcher watch | head -1`: the reader left during the snapshot.
        Err(e)
            if options.stop_when_stdout_closes
                && e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) =>
        {
            return Ok(());
        }
        started => started?,
    }
    // The kernel's BTF parsed at load (about 10 MiB at its peak) and the
    // snapshot are freed by now, but malloc keeps freed pages that lie below
    // live allocations (the process table, filled after the BTF was parsed):
    // measured, an idle `watch` kept 11 MiB more with a 25,000-argument
    // process on the host.
    give_back_freed_memory();
    // Handlers first: a script that signals us as soon as it reads the ready
    // line must reach them, not the default action (SIGHUP would kill us).
    let signals = Signals::install(options.stop_when_stdout_closes)?;
    announce_ready(&attached);
    let result = watch.stream(ring, signals).await;
    drop(attached); // detaches every program
    result
}

/// The kernel programs' errors are warned about at most this often.
const ERRORS_SAID_EVERY: Duration = Duration::from_secs(10);

/// Records handled per wake-up of the ring buffer.
const DRAIN_BATCH: usize = 4096;
/// More than the 8 MiB ring buffer holds (its smallest record is 64 bytes).
const FINAL_DRAIN_LIMIT: usize = 8 << 20 >> 6;

struct Signals {
    sigint: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
    sighup: tokio::signal::unix::Signal,
    /// The reader of stdout went away (`watch` only).
    stdout_closed: StdoutClosed,
}

impl Signals {
    fn install(stop_when_stdout_closes: bool) -> anyhow::Result<Self> {
        Ok(Self {
            sigint: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
            sigterm: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            sighup: signal(SignalKind::hangup()).context("installing SIGHUP handler")?,
            stdout_closed: if stop_when_stdout_closes { StdoutClosed::watch() } else { StdoutClosed::never() },
        })
    }
}

struct Watch<S: Sink> {
    reporter: Reporter<S>,
    socket_options: SocketOptions,
    unix_listeners: UnixListeners,
    already_reported: AlreadyReported,
    lost: PerCpuArray<MapData, u64>,
    lost_reported: u64,
    /// What the kernel programs could not do (ERRORS), read with LOST.
    program_errors: Option<ProgramErrors>,
    /// Errors counted since the last warning, said at most every 10 s.
    errors_unsaid: Vec<(ProgramError, u64)>,
    errors_said_at: Option<std::time::Instant>,
    /// Records read since the heap was last trimmed, and at the last loss
    /// check: see [`Watch::trim_after_a_burst`].
    read_since_trim: u64,
    read_at_last_check: u64,
}

/// Names the process of an event, filters, and hands it to the sink.
struct Reporter<S: Sink> {
    filter: Filter,
    sink: S,
    processes: ProcessTable,
    cgroups: Option<CgroupNames>,
    clock: WallClock,
    /// Who holds each listener the events named, for a sink that wants to
    /// hear when they all went and others hold it (`holders_changed`).
    tracker: Option<Tracker>,
    lookup: ProcessLookup,
}

impl<S: Sink> Watch<S> {
    async fn stream(&mut self, mut ring: RingReader, signals: Signals) -> anyhow::Result<()> {
        let Signals { mut sigint, mut sigterm, mut sighup, mut stdout_closed } = signals;
        let mut lost_check = interval(LOST_CHECK_PERIOD);
        lost_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                ready = ring.ready() => {
                    ready.context("waiting on the ring buffer")?;
                    // A batch at a time: under a flood that never lets the
                    // ring empty, signals and the loss check still get their
                    // turn (select! picks among ready branches at random).
                    let mut drained = self.drain(&mut ring, DRAIN_BATCH).map(drop);
                    if drained.is_ok() {
                        drained = self.reporter.settle().and_then(|()| self.reporter.sink.flush());
                    }
                    if !self.keep_going(drained)? {
                        return Ok(());
                    }
                }
                _ = lost_check.tick() => {
                    self.trim_after_a_burst();
                    let mut stats = self.reporter.stats();
                    stats.program_errors = self.program_errors_since_last();
                    // Listeners nobody was seen holding are looked for again
                    // even while no record comes (see Tracker::settle).
                    let reported = self
                        .reporter
                        .settle()
                        .and_then(|()| self.reporter.sink.flush())
                        .and_then(|()| self.report_lost())
                        .and_then(|()| self.reporter.sink.tick(&stats));
                    if !self.keep_going(reported)? {
                        return Ok(());
                    }
                }
                // Nothing left to write to: no final drain, exit 0.
                () = stdout_closed.wait() => return Ok(()),
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
                _ = sighup.recv() => {
                    if !self.reporter.sink.hangup() {
                        break;
                    }
                }
            }
        }
        // Whatever arrived before the signal is still reported: at most a
        // full ring buffer's worth, so a flood cannot keep us from exiting.
        self.drain(&mut ring, FINAL_DRAIN_LIMIT)?;
        self.report_lost()?;
        self.reporter.sink.flush()?;
        Ok(())
    }

    /// A closed stdout (`watcher watch | head`) ends the watch quietly.
    fn keep_going(&self, result: io::Result<()>) -> anyhow::Result<bool> {
        match result {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
            Err(e) => Err(e).context("writing events to stdout"),
        }
    }

    /// Handles at most `limit` records; true when it stopped at the limit
    /// (more may wait), false when the ring buffer is empty.
    fn drain(&mut self, ring: &mut RingReader, limit: usize) -> io::Result<bool> {
        for _ in 0..limit {
            let Some(item) = ring.next() else {
                return Ok(false);
            };
            let seen_ktime_ns = monotonic_ns();
            let record = match Record::decode(&item) {
                Ok(record) => record,
                Err(e) => {
                    warn!("skipping a record from the kernel: {e}");
                    continue;
                }
            };
            drop(item);
            self.read_since_trim += 1;
            self.handle(&record, seen_ktime_ns)?;
        }
        Ok(true)
    }

    /// Once a burst of records is over (a second without one), the memory
    /// its passing allocations (events, lines, changes) freed is handed
    /// back: glibc keeps freed pages that lie between live ones, and after
    /// 100,000 listeners came up the daemon kept about a third more than
    /// it used. One walk of the heap per burst, none while idle.
    fn trim_after_a_burst(&mut self) {
        let quiet = self.read_since_trim == self.read_at_last_check;
        self.read_at_last_check = self.read_since_trim;
        if quiet && self.read_since_trim >= TRIM_AFTER_RECORDS {
            give_back_freed_memory();
            (self.read_since_trim, self.read_at_last_check) = (0, 0);
        }
    }

    /// Folds a record into the process and socket-option tables, and
    /// prints it when it is an event the user asked for.
    fn handle(&mut self, record: &Record, seen_ktime_ns: u64) -> io::Result<()> {
        self.socket_options.apply(record);
        for closed in self.unix_listeners.apply(record) {
            let what = What::Unix {
                kind: SocketKind::Close,
                fd: closed.fd,
                backlog: None,
                sock_type: closed.sock_type,
                path: &closed.path,
            };
            self.reporter.print(&closed.task, what, seen_ktime_ns)?;
        }
        let (task, what) = match record {
            Record::Socket(event) => {
                (&event.task, What::Socket { event, fd_facts: self.socket_options.get(event.task.pid, event.fd) })
            }
            Record::PassiveSocket { task, fd, family, sock_type, protocol } => (
                task,
                What::PassiveSocket {
                    fd: *fd,
                    socket: PassiveSocket { family: *family, sock_type: *sock_type, protocol: *protocol },
                },
            ),
            Record::FilterAttached { task, fd, optname, filter } => (
                task,
                What::FilterAttached {
                    fd: *fd,
                    optname: *optname,
                    filter,
                    socket: self.socket_options.get(task.pid, Some(*fd)).and_then(|f| f.passive),
                },
            ),
            Record::BindFailed { task, fd, errno, addr } => {
                (task, What::BindFailed { fd: *fd, errno: *errno, addr: addr.as_ref() })
            }
            Record::ListenFailed { task, fd, errno, backlog } => {
                (task, What::ListenFailed { fd: *fd, errno: *errno, backlog: *backlog })
            }
            Record::Accept(accept) => (&accept.task, What::Accept(accept)),
            Record::Denied(denied) => (&denied.task, What::Denied { event: denied, why: None }),
            Record::UnixListen { task, fd, backlog, sock_type, path } => (
                task,
                What::Unix { kind: SocketKind::Listen, fd: *fd, backlog: Some(*backlog), sock_type: *sock_type, path },
            ),
            Record::UnixBind { task, fd, sock_type, path } => {
                (task, What::Unix { kind: SocketKind::Bind, fd: *fd, backlog: None, sock_type: *sock_type, path })
            }
            // Printed above, once the last holder let go.
            Record::UnixClose { .. } => return Ok(()),
            Record::Fork { .. } | Record::Exit { .. } | Record::ExecArgs { .. } | Record::Exec { .. } => {
                self.reporter.processes.apply(record);
                return self.reporter.process(record);
            }
            Record::SockoptSet { .. } | Record::SocketOnFd { .. } => return Ok(()),
        };
        if self.already_reported.covers(task, &what) {
            return Ok(());
        }
        self.reporter.print(task, what, seen_ktime_ns)
    }

    /// The kernel programs' errors since the last look, by kind; a warning
    /// at most every 10 s says what they were.
    fn program_errors_since_last(&mut self) -> Vec<(ProgramError, u64)> {
        let Some(errors) = &mut self.program_errors else { return Vec::new() };
        let grown = match errors.new_since_last() {
            Ok(grown) => grown,
            Err(e) => {
                warn!("reading the kernel programs' error counter: {e:#}");
                return Vec::new();
            }
        };
        for (kind, count) in &grown {
            match self.errors_unsaid.iter_mut().find(|(k, _)| k == kind) {
                Some((_, n)) => *n += count,
                None => self.errors_unsaid.push((*kind, *count)),
            }
        }
        if !self.errors_unsaid.is_empty() && self.errors_said_at.is_none_or(|at| at.elapsed() >= ERRORS_SAID_EVERY) {
            let what: Vec<String> = self.errors_unsaid.iter().map(|(k, n)| format!("{n} {}", k.name())).collect();
            warn!(
                "the kernel programs could not do part of their work: {} (watcher_program_errors_total)",
                what.join(", ")
            );
            self.errors_unsaid.clear();
            self.errors_said_at = Some(std::time::Instant::now());
        }
        grown
    }

    fn report_lost(&mut self) -> io::Result<()> {
        let total = match self.lost.get(&0, 0) {
            Ok(per_cpu) => per_cpu.iter().sum::<u64>(),
            Err(e) => {
                warn!("reading the LOST counter: {e}");
                return Ok(());
            }
        };
        if total > self.lost_reported {
            let count = total - self.lost_reported;
            self.lost_reported = total;
            warn!("the kernel dropped {count} records (ring buffer full; {total} in all)");
            self.reporter.sink.lost(count, total, Utc::now())?;
            self.reporter.sink.flush()?;
        }
        Ok(())
    }
}

impl<S: Sink> Reporter<S> {
    fn stats(&self) -> PipelineStats {
        PipelineStats { processes: self.processes.len(), program_errors: Vec::new() }
    }

    fn print(&mut self, task: &Task, what: What<'_>, seen_ktime_ns: u64) -> io::Result<()> {
        if !self.filter.matches(task, &what) {
            return Ok(());
        }
        let process = self.processes.get(task.pid);
        let user = self.processes.shared_user_name(task.uid);
        let report = Report {
            task,
            process: &process,
            user: user.as_deref(),
            time: self.clock.wall_time(task.ktime_ns),
            seen_ktime_ns,
            cgroup: self.cgroups.as_mut().and_then(|c| c.name(task.cgroup_id)),
            what,
        };
        self.sink.report(&report)?;
        if let Some(tracker) = &mut self.tracker
            && let Some(s) = Sighting::of(&report)
        {
            if s.up {
                tracker.up(s.key, Socket::new(s.id, holder_of(&report), Vec::new()), task.ktime_ns);
            } else {
                tracker.closed(&s.key, s.id, Some(task), task.ktime_ns);
            }
        }
        Ok(())
    }

    /// A fork or exit, for the holders the tracker follows.
    fn process(&mut self, record: &Record) -> io::Result<()> {
        if let Some(tracker) = &mut self.tracker {
            tracker.process(record);
        }
        self.sink.process(record)
    }

    /// After a drained batch: the holders of listeners whose named holders exited.
    fn settle(&mut self) -> io::Result<()> {
        if let Some(tracker) = &mut self.tracker {
            for change in tracker.settle(&mut self.lookup) {
                if let Change::HoldersChanged { .. } = change {
                    self.sink.lifecycle(Utc::now(), &change)?;
                }
            }
        }
        Ok(())
    }
}

/// The sockets already there, reported as `existing` events before the
/// live stream. The programs are attached first, so a socket that comes up
/// while the snapshot is taken is in the ring buffer, the snapshot, or
/// both; [`AlreadyReported`] drops the live event in the last case.
fn report_existing<S: Sink>(reporter: &mut Reporter<S>) -> anyhow::Result<(AlreadyReported, Option<Snapshot>)> {
    let snapshot = match sock_diag::take(Path::new("/proc"), &reporter.filter.pids) {
        Ok(snapshot) => snapshot,
        Err(e) => {
            warn!("no snapshot of the sockets already there: {e:#}");
            return Ok((AlreadyReported::default(), None));
        }
    };
    let until_ns = monotonic_ns();
    let mut lookup = ProcessLookup::default();
    let holders = holders::name_holders(&snapshot, &mut lookup);
    let in_netns =
        reporter.filter.netns.is_empty() || snapshot.netns.is_some_and(|n| reporter.filter.netns.contains(&(n as u32)));
    let rows = if in_netns { filter::rows(&snapshot, &holders, &reporter.filter) } else { Vec::new() };
    let time = Utc::now();
    // Rows come socket by socket, a row per holder: each socket goes to the
    // sink once, with every holder the filter kept.
    let mut at = 0;
    while at < rows.len() {
        let socket = rows[at].0;
        let same = rows[at..].iter().take_while(|(s, _)| std::ptr::eq(*s, socket)).count();
        let kept: Vec<HolderInfo> = rows[at..at + same].iter().filter_map(|(_, h)| h.cloned()).collect();
        reporter.sink.existing(time, socket, &kept, snapshot.netns)?;
        if let Some(tracker) = &mut reporter.tracker
            && let Some(key) = key_of_existing(socket, snapshot.netns.unwrap_or(0))
        {
            tracker.up(key, existing_socket(socket, &kept, &mut reporter.lookup), until_ns);
        }
        at += same;
    }
    let mut held = HashMap::new();
    let mut by_address = HashSet::new();
    for socket in &snapshot.sockets {
        for holder in snapshot.holders.get(&socket.inode).into_iter().flatten() {
            held.insert((holder.pid, holder.fd), socket.local.clone());
            by_address.insert((holder.pid, socket.local.clone()));
        }
    }
    Ok((AlreadyReported { until_ns, held, by_address }, Some(snapshot)))
}

/// Hands the sockets of the snapshot to the kernel's socket maps (and the
/// UNIX ones to [`UnixListeners`]) as their binds would have: a bound UDP
/// socket by its cookie, a UNIX socket by each (pid, fd) holding it. Their
/// closes are then reported live like those of sockets bound later.
/// Whatever cannot be handed over is named in a warning.
fn seed_closes(ebpf: &mut aya::Ebpf, snapshot: &Snapshot, unix: &mut UnixListeners) {
    let udp: Vec<(u64, BoundSocket)> = snapshot
        .sockets
        .iter()
        .filter(|s| s.proto == Proto::Udp)
        .filter_map(|s| match (&s.local, s.cookie) {
            (Local::Inet { addr, port }, Some(cookie)) => {
                Some((cookie, bound_socket(addr, *port, snapshot.netns.unwrap_or(0) as u32)))
            }
            _ => None,
        })
        .collect();
    match seed::seed_bound_udp(ebpf, &udp) {
        Ok(seeded) => warn_unseeded(&seeded, "bound UDP sockets already there", "are closed"),
        Err(e) => {
            warn!("the {} bound UDP sockets already there will not be reported when they close: {e:#}", udp.len())
        }
    }

    // One entry per holder of each UNIX socket.
    let mut held: Vec<(u32, UnixSocket)> = Vec::new();
    let mut of_socket: Vec<(&ExistingSocket, std::ops::Range<usize>)> = Vec::new();
    for socket in snapshot.sockets.iter().filter(|s| s.proto == Proto::Unix) {
        let Local::Unix { path } = &socket.local else { continue };
        let start = held.len();
        for holder in snapshot.holders.get(&socket.inode).into_iter().flatten() {
            if let Some(entry) = seed::unix_entry(path, holder.fd, u32::from(socket.sock_type)) {
                held.push((holder.pid, entry));
            }
        }
        of_socket.push((socket, start..held.len()));
    }
    match seed::seed_unix(ebpf, &held) {
        Ok(seeded) => warn_unseeded(&seeded, "holders of UNIX sockets already there", "close them"),
        Err(e) => warn!(
            "the UNIX sockets already there will not be reported when closed (only at their holders' exit): {e:#}"
        ),
    }
    for (socket, range) in of_socket {
        let Local::Unix { path } = &socket.local else { continue };
        // A holder that closed its fd between the snapshot and the seeding
        // was not seen closing: its entry is taken back.
        let still: Vec<(u32, i32)> = held[range]
            .iter()
            .filter(|(pid, entry)| {
                let holds = sock_diag::holds(Path::new("/proc"), *pid, entry.fd, socket.inode);
                if !holds && let Err(e) = seed::unseed_unix(ebpf, *pid, entry) {
                    warn!("{e:#}");
                }
                holds
            })
            .map(|(pid, entry)| (*pid, entry.fd))
            .collect();
        unix.seed(path, u32::from(socket.sock_type), &still);
    }
}

/// Warns when some sockets of the snapshot could not be handed to the kernel.
fn warn_unseeded(seeded: &seed::Seeded, what: &str, when: &str) {
    if seeded.skipped > 0 {
        warn!(
            "{} of the {what} will not be reported when they {when} ({}); {} will",
            seeded.skipped,
            seeded.first_error.as_deref().unwrap_or("unknown error"),
            seeded.inserted + seeded.present,
        );
    }
}

/// A bound UDP socket as post_bind records it.
fn bound_socket(addr: &std::net::IpAddr, port: u16, netns: u32) -> BoundSocket {
    let mut bytes = [0u8; 16];
    let family = match addr {
        std::net::IpAddr::V4(v4) => {
            bytes[..4].copy_from_slice(&v4.octets());
            AF_INET
        }
        std::net::IpAddr::V6(v6) => {
            bytes.copy_from_slice(&v6.octets());
            AF_INET6
        }
    };
    BoundSocket { addr: bytes, family, port, netns }
}

/// Sockets the snapshot reported, by (pid, fd): a live bind, listen or
/// socket() event from before the snapshot ended, for the same fd and
/// address, is the same socket and is not reported again. An event without
/// its fd (a listen() already under way when watcher attached) is matched
/// by (pid, address) instead.
#[derive(Default)]
struct AlreadyReported {
    /// CLOCK_MONOTONIC when the snapshot had read every socket.
    until_ns: u64,
    held: HashMap<(u32, i32), Local>,
    by_address: HashSet<(u32, Local)>,
}

impl AlreadyReported {
    fn covers(&mut self, task: &Task, what: &What<'_>) -> bool {
        if self.held.is_empty() {
            return false;
        }
        if task.ktime_ns > self.until_ns {
            // The ring buffer is nearly in time order: well past the
            // snapshot, nothing more can match; free the table.
            if task.ktime_ns > self.until_ns + 1_000_000_000 {
                self.held = HashMap::new();
                self.by_address = HashSet::new();
            }
            return false;
        }
        let fd = match what {
            What::Socket { event, .. } if event.kind != SocketKind::Close => match event.fd {
                Some(fd) => fd,
                None => {
                    let local = Local::Inet { addr: event.addr, port: event.port };
                    return self.by_address.contains(&(task.pid, local));
                }
            },
            What::Unix { kind: SocketKind::Listen | SocketKind::Bind, fd, .. } | What::PassiveSocket { fd, .. } => *fd,
            _ => return false,
        };
        let Some(local) = self.held.get(&(task.pid, fd)) else {
            return false;
        };
        match (what, local) {
            (What::Socket { event, .. }, Local::Inet { port, .. }) => event.port == *port,
            (What::Unix { path, .. }, Local::Unix { path: held }) => path == held,
            (What::PassiveSocket { .. }, Local::Raw { .. } | Local::Packet { .. }) => true,
            _ => false,
        }
    }
}

/// Says on stderr, once every program is attached, that events now flow;
/// scripts and tests wait for this line instead of sleeping.
fn announce_ready(attached: &Attached) {
    let (hooks, missing) = (&attached.hooks, &attached.missing);
    let not_attached = if missing.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = missing.iter().map(|m| m.hook.as_str()).collect();
        format!("; {} NOT attached, events they see are not reported ({})", missing.len(), names.join(", "))
    };
    let light = if attached.given_up.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = attached.given_up.iter().map(|f| f.name).collect();
        format!("; --light, not reported (only syscall tracepoints see them here): {}", names.join(" | "))
    };
    eprintln!("watcher: ready: {} programs attached ({}){not_attached}{light}", hooks.len(), hooks.join(", "));
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready])
    {
        warn!("telling systemd READY=1: {e}");
    }
}

/// Freed heap pages back to the kernel (malloc_trim walks the free lists):
/// once set up, and after a burst (see [`Watch::trim_after_a_burst`]).
fn give_back_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; it has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds: the kernel's `ktime_ns` clock.
pub fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| (t.tv_sec() as u64) * 1_000_000_000 + t.tv_nsec() as u64)
}

/// Turns the kernel's CLOCK_MONOTONIC stamps into wall-clock time.
struct WallClock {
    /// CLOCK_REALTIME − CLOCK_MONOTONIC at start, in nanoseconds.
    offset_ns: i128,
}

impl WallClock {
    fn new() -> anyhow::Result<Self> {
        let real = clock_gettime(ClockId::CLOCK_REALTIME).context("reading CLOCK_REALTIME")?;
        let mono = monotonic_ns();
        let real_ns = i128::from(real.tv_sec()) * 1_000_000_000 + i128::from(real.tv_nsec());
        Ok(Self { offset_ns: real_ns - i128::from(mono) })
    }

    fn wall_time(&self, ktime_ns: u64) -> DateTime<Utc> {
        let ns = i128::from(ktime_ns) + self.offset_ns;
        let ns = i64::try_from(ns).unwrap_or(i64::MAX);
        DateTime::from_timestamp_nanos(ns)
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::{
        model::socket::{Family, Proto},
        record::decode::SocketEvent,
    };

    fn task(pid: u32, ktime_ns: u64) -> Task {
        Task {
            ktime_ns,
            cgroup_id: 1,
            pid,
            tid: pid,
            uid: 0,
            gid: 0,
            netns: 1,
            comm: crate::model::holder::Comm::from(b"x"),
        }
    }

    fn listen(pid: u32, fd: Option<i32>, port: u16, ktime_ns: u64) -> SocketEvent {
        SocketEvent {
            kind: SocketKind::Listen,
            task: task(pid, ktime_ns),
            sock_id: 1,
            cookie: None,
            proto: Proto::Tcp,
            family: Family::Ipv4,
            addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port,
            fd,
            backlog: None,
            stopped: false,
        }
    }

    fn reported(snapshot_end_ns: u64) -> AlreadyReported {
        let local = Local::Inet { addr: IpAddr::V4(Ipv4Addr::LOCALHOST), port: 8080 };
        AlreadyReported {
            until_ns: snapshot_end_ns,
            held: HashMap::from([((7, 3), local.clone())]),
            by_address: HashSet::from([(7, local)]),
        }
    }

    /// A live listen from before the snapshot ended, for a socket the
    /// snapshot reported (same pid and fd, same port), is dropped; anything
    /// else — another fd, another port, another process, a later event —
    /// is reported.
    #[test]
    fn a_socket_in_both_the_snapshot_and_the_stream_is_reported_once() {
        let mut r = reported(1_000);
        let same = listen(7, Some(3), 8080, 900);
        assert!(r.covers(&same.task, &What::Socket { event: &same, fd_facts: None }));
        for other in [listen(7, Some(4), 8080, 900), listen(7, Some(3), 9090, 900), listen(8, Some(3), 8080, 900)] {
            assert!(!r.covers(&other.task, &What::Socket { event: &other, fd_facts: None }), "{other:?}");
        }
        let later = listen(7, Some(3), 8080, 1_001);
        assert!(!r.covers(&later.task, &What::Socket { event: &later, fd_facts: None }), "after the snapshot");
    }

    /// A listen() already under way when watching began has no fd: it is
    /// matched by pid and address.
    #[test]
    fn an_event_without_its_fd_is_matched_by_address() {
        let mut r = reported(1_000);
        let no_fd = listen(7, None, 8080, 900);
        assert!(r.covers(&no_fd.task, &What::Socket { event: &no_fd, fd_facts: None }));
        let elsewhere = listen(7, None, 8081, 900);
        assert!(!r.covers(&elsewhere.task, &What::Socket { event: &elsewhere, fd_facts: None }));
    }

    /// Well past the snapshot the table is freed: it cannot match any more.
    #[test]
    fn the_table_is_freed_once_the_stream_has_moved_on() {
        let mut r = reported(1_000);
        let much_later = listen(7, Some(3), 8080, 1_000 + 2_000_000_000);
        assert!(!r.covers(&much_later.task, &What::Socket { event: &much_later, fd_facts: None }));
        assert!(r.held.is_empty() && r.by_address.is_empty());
    }
}
