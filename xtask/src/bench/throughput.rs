//! `cargo xtask bench throughput`: listener events at rising rates, from a
//! separate process, watched by watcher and by the bpftrace one-liner at
//! the same time. Per step: what each tool read, what it reported lost, and
//! whether every record made is one or the other; then the highest rate
//! each read with zero loss while keeping up. See BENCHMARKS.md.
#[path = "throughput_generator.rs"]
mod generator;
#[path = "throughput_tally.rs"]
mod tally;

use std::{
    process::Command,
    sync::{
        atomic::{AtomicI32, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use clap::{Args as ClapArgs, value_parser};

use self::{
    generator::{ANY_CPU, Done, Generator, Load, cpus},
    tally::{BpftraceTally, Marker, WatcherTally},
};
use super::{
    START_TIMEOUT,
    background::{Background, Stdout, Usage},
    boot_offset_ns, duration, ensure_tracefs, machine, monotonic_ns, print_machine, ratio,
};
use crate::util::watcher_binary;

/// Ring-buffer records one listener of the generator makes with watcher's
/// `--pid` on it: bind (cgroup/post_bind4), listen and close
/// (sock/inet_sock_set_state). Its socket(), getsockname() and close()
/// report nothing on success, it never forks or execs, and the other
/// processes' records are filtered out in the kernel before the ring
/// buffer (tests/reliability.rs counts the same 3). The bench checks it
/// at every step: bind, listen and close must each number the listeners.
const RECORDS_PER_LISTENER: u64 = 3;

/// Poll period while a step runs: bounds the lines held in memory.
const STEP_POLL: Duration = Duration::from_millis(50);
/// Poll period while waiting for a tool to catch up: the resolution of the
/// catch-up times.
const SETTLE_POLL: Duration = Duration::from_millis(2);
/// A tool that printed nothing for this long after a marker lost it (its
/// buffer was still full): another marker is opened.
const MARKER_RETRY: Duration = Duration::from_secs(1);
/// Both tools' buffers are bounded (watcher's 4 MiB ring by default, bpftrace's 64
/// pages per CPU), so a live tool shows a marker within seconds.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// watcher reports loss once a second; bpftrace drains each CPU's buffer
/// in turn. Past this the books are reported unbalanced.
const BALANCE_TIMEOUT: Duration = Duration::from_secs(3);
/// A step counts as sustained if the tool showed the marker within this
/// share of the step's length after the step ended (it read at least
/// about 90 % of what was made while it was made).
const KEPT_UP_SHARE: f64 = 0.1;

#[derive(ClapArgs)]
pub struct Args {
    /// Steps, in listeners opened per second, run in this order; 0 runs
    /// the generator as fast as it can.
    #[arg(long, value_delimiter = ',', default_values_t = [2_000u64, 5_000, 10_000, 20_000, 50_000, 100_000, 0])]
    pub rates: Vec<u64>,
    /// How long each step opens listeners, in seconds.
    #[arg(long, default_value_t = 5, value_parser = value_parser!(u64).range(1..=300))]
    pub step_secs: u64,
    /// Threads opening listeners in the generator, sharing each step's
    /// rate. With one, the generator holds one core and each tool can have
    /// the other; more can outrun a tool.
    #[arg(long, default_value_t = 1, value_parser = value_parser!(u64).range(1..=64))]
    pub threads: u64,
    /// Listeners of a last step, made as fast as possible while both tools
    /// are stopped (SIGSTOP): 100,000 make 300,000 watcher records, about
    /// eight times what its default 4 MiB ring buffer holds, so it shows how each
    /// tool accounts for loss. 0: no such step.
    #[arg(long, default_value_t = 100_000, value_parser = value_parser!(u64).range(0..=10_000_000))]
    pub stalled_listeners: u64,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.rates.is_empty() {
        bail!("--rates needs at least one step");
    }
    let mut generator = Generator::start(args.threads)?;
    let machine = machine();
    let mut tools = Tools::start(generator.pid())?;
    // Proves both tools are live (bpftrace says "Attaching" before it is),
    // then starts the books from zero.
    tools.settle(&mut generator, 0, monotonic_ns())?;
    // bpftrace may have missed a marker opened before it was attached:
    // only watcher's books (attached before its ready line) must balance
    // before they start over, so no warm-up line spills into a step.
    let (warmed, _) = tools.balance(tools.markers.len() as u64, false);
    if !warmed {
        bail!("watcher's books did not balance after the warm-up markers: {:?}", tools.w);
    }
    tools.w = WatcherTally::default();
    tools.b = BpftraceTally::default();

    let mut listeners = 0u64;
    let mut steps = Vec::new();
    let paced = args.rates.iter().map(|&rate| {
        let load = Load {
            rate,
            duration_ns: args.step_secs * 1_000_000_000,
            max_count: 0,
            threads: args.threads,
            cpu: ANY_CPU,
        };
        (load, false)
    });
    let stalled = (args.stalled_listeners > 0).then_some((
        Load { rate: 0, duration_ns: u64::MAX, max_count: args.stalled_listeners, threads: args.threads, cpu: ANY_CPU },
        true,
    ));
    for (load, stall) in paced.chain(stalled) {
        eprintln!(
            "xtask: bench throughput: {}",
            match (stall, load.rate) {
                (true, _) => format!("{} listeners with both tools stopped", load.max_count),
                (false, 0) => format!("as fast as possible for {} s", args.step_secs),
                (false, rate) => format!("{rate} listeners/s for {} s", args.step_secs),
            }
        );
        let step = tools.step(&mut generator, &mut listeners, load, stall)?;
        eprintln!("xtask: bench throughput: {}", step.progress());
        steps.push(step);
    }
    let warnings = tools.watcher_warnings();
    let bpftrace_stderr_lost = tools.bpftrace.stderr_tail().lines().filter(|l| l.starts_with("Lost ")).count();
    let (w_other, b_other) =
        ((tools.w.other, tools.w.other_sample.clone()), (tools.b.other, tools.b.other_sample.clone()));
    let lost_total = tools.w.lost_total;
    drop(tools);
    drop(generator);

    report(args, &machine, &steps);
    println!(
        "- watcher's stderr: {}; its `lost` lines said {lost_total} records lost in all",
        match warnings {
            Some((n, total)) => format!("{n} loss warning(s), the last saying {total} in all"),
            None => "no loss warning".to_owned(),
        }
    );
    println!(
        "- other lines: watcher {}{}, bpftrace {}{}; bpftrace \"Lost\" lines on stderr: {bpftrace_stderr_lost}",
        w_other.0,
        sample(&w_other.1),
        b_other.0,
        sample(&b_other.1)
    );
    Ok(())
}

/// The latency bench's one-liner: same tracepoint as watcher's TCP
/// listens, same in-kernel pid filter, a line per listener.
fn one_liner(pid: &str) -> String {
    format!(
        "tracepoint:sock:inet_sock_set_state /args->newstate == 10 && args->protocol == 6 && pid == {pid}/ \
         {{ printf(\"%llu %d %d\\n\", nsecs, pid, args->sport); }}"
    )
}

fn sample(lines: &[String]) -> String {
    if lines.is_empty() { String::new() } else { format!(" (e.g. `{}`)", lines.join("` / `")) }
}

/// watcher and bpftrace running, and their books.
struct Tools {
    pid: u32,
    boot_offset_ns: i64,
    watcher: Background,
    bpftrace: Background,
    w: WatcherTally,
    b: BpftraceTally,
    markers: Vec<Marker>,
}

/// One tool's figures for one step.
#[derive(Clone, Copy, Debug, Default)]
struct ToolStep {
    /// watcher: records read (bind + listen + close); bpftrace: lines.
    read: u64,
    lost: u64,
    /// What the generator made for this tool in this step, markers included.
    made: u64,
    /// Since the start, everything made was read or reported lost, exactly.
    balanced: bool,
    /// Loss reports the tool printed in the step (watcher's `lost` lines,
    /// bpftrace's "Lost N events").
    reports: u64,
    /// Balanced only once a listener had been opened on every CPU: how
    /// many records were unaccounted for until then.
    late: Option<u64>,
    /// Step end → the bench read the tool's marker line.
    caught_up_ns: u64,
    cpu_ns: u64,
}

struct Step {
    rate: u64,
    /// Both tools were stopped while the step ran.
    stalled: bool,
    done: Done,
    /// Listeners opened after the step until both tools showed one.
    markers: u64,
    /// Step start → books balanced: the time the CPU figures cover.
    wall_ns: u64,
    watcher: ToolStep,
    /// watcher's bind, listen, close lines in the step.
    by_kind: [u64; 3],
    /// Largest kernel → watcher userspace delay in the step.
    max_delay_ns: u64,
    bpftrace: ToolStep,
}

impl Tools {
    fn start(pid: u32) -> anyhow::Result<Self> {
        ensure_tracefs()?;
        eprintln!("xtask: bench throughput: starting watcher watch --json --no-snapshot --pid {pid}");
        let watcher = Background::start(
            "watcher",
            Command::new(watcher_binary()).args(["watch", "--json", "--no-snapshot", "--pid", &pid.to_string()]),
            Stdout::Keep,
            |l| l.starts_with("watcher: ready:"),
            START_TIMEOUT,
        )?;
        let program = one_liner(&pid.to_string());
        eprintln!("xtask: bench throughput: starting bpftrace -B line -e '{program}'");
        let bpftrace = Background::start(
            "bpftrace",
            Command::new("/usr/bin/bpftrace").args(["-B", "line", "-e", &program]),
            Stdout::Keep,
            |l| l.starts_with("Attaching "),
            START_TIMEOUT,
        )?;
        Ok(Self {
            pid,
            boot_offset_ns: boot_offset_ns(),
            watcher,
            bpftrace,
            w: WatcherTally::default(),
            b: BpftraceTally::default(),
            markers: Vec::new(),
        })
    }

    /// Counts the lines both tools printed since the last call; returns
    /// how many each printed.
    fn poll(&mut self) -> (usize, usize) {
        let (pid, offset) = (self.pid, self.boot_offset_ns);
        // Stamped when taken, before counting, so that counting one
        // tool's lines does not delay the other's catch-up time.
        let (lines, taken_ns) = (self.watcher.take_lines(), monotonic_ns());
        for l in &lines {
            self.w.line(l, pid, &self.markers, taken_ns);
        }
        let w = lines.len();
        let (lines, taken_ns) = (self.bpftrace.take_lines(), monotonic_ns());
        for l in &lines {
            self.b.line(l, pid, &self.markers, taken_ns, offset);
        }
        // wait_for_line is not used past the start: its queue only holds
        // copies of lines already counted.
        self.watcher.discard_queued();
        self.bpftrace.discard_queued();
        (w, lines.len())
    }

    fn usage(&self) -> anyhow::Result<(Usage, Usage)> {
        Ok((
            self.watcher.usage().context("reading watcher's CPU time")?,
            self.bpftrace.usage().context("reading bpftrace's CPU time")?,
        ))
    }

    /// One step: `rate` listeners/s for `duration_ns`, then markers until
    /// both tools have caught up, then the books.
    /// With `stall`, both tools are stopped while the generator runs.
    fn step(
        &mut self,
        generator: &mut Generator,
        listeners: &mut u64,
        load: Load,
        stall: bool,
    ) -> anyhow::Result<Step> {
        let (w_cpu, b_cpu) = self.usage()?;
        let (w_kinds, w_lost, b_lines, b_lost) = (self.w.by_kind, self.w.lost, self.b.lines, self.b.lost);
        let (w_reports, b_reports) = (self.w.lost_lines, self.b.lost_lines);
        let listeners_before = *listeners;
        self.w.max_delay_ns = 0;
        let stopped = stall.then(|| Stopped::new([self.watcher.pid(), self.bpftrace.pid()]));
        // The generator is driven from a thread so that the lines are
        // counted (and freed) while the step runs.
        // Its end is awaited on a channel, not by polling, so that the
        // marker (and the tools' SIGCONT) follow it at once.
        let (finished, result) = mpsc::channel();
        let running = &mut *generator;
        let done = thread::scope(|s| {
            s.spawn(move || finished.send(running.run(&load)));
            loop {
                match result.recv_timeout(STEP_POLL) {
                    Ok(done) => return done,
                    Err(RecvTimeoutError::Timeout) => {
                        self.poll();
                    }
                    Err(RecvTimeoutError::Disconnected) => {
                        return Err(anyhow!("the thread driving the listener generator panicked"));
                    }
                }
            }
        })?;
        drop(stopped);
        *listeners += done.opened;
        self.settle(generator, listeners_before + done.opened, done.end_ns)?;
        let mut markers = self.markers.len() as u64;
        *listeners += markers;
        let (mut w_ok, mut b_ok) = self.balance(*listeners, true);
        // A perf buffer (bpftrace's) writes its count of lost samples into
        // the buffer only with the next sample on the same CPU: a listener
        // on every CPU lets each report what it lost.
        let short = |read: u64, lost: u64, made: u64| (read + lost != made).then(|| made.saturating_sub(read + lost));
        let mut w_late = short(self.w.read(), self.w.lost, RECORDS_PER_LISTENER * *listeners);
        let mut b_late = short(self.b.lines, self.b.lost, *listeners);
        if !w_ok || !b_ok {
            for cpu in cpus() {
                generator
                    .run(&Load { cpu, ..Load::MARKER })
                    .with_context(|| format!("opening a marker listener on CPU {cpu}"))?;
                markers += 1;
                *listeners += 1;
            }
            (w_ok, b_ok) = self.balance(*listeners, true);
        } else {
            (w_late, b_late) = (None, None);
        }
        let wall_ns = monotonic_ns() - done.start_ns;
        let (w_cpu_after, b_cpu_after) = self.usage()?;
        let made = *listeners - listeners_before;
        let by_kind: [u64; 3] = std::array::from_fn(|i| self.w.by_kind[i] - w_kinds[i]);
        let caught_up = |seen: Option<u64>| seen.unwrap_or(done.end_ns).saturating_sub(done.end_ns);
        Ok(Step {
            rate: load.rate,
            stalled: stall,
            done,
            markers,
            wall_ns,
            watcher: ToolStep {
                read: by_kind.iter().sum(),
                lost: self.w.lost - w_lost,
                made: made * RECORDS_PER_LISTENER,
                balanced: w_ok,
                late: w_late.filter(|_| w_ok),
                reports: self.w.lost_lines - w_reports,
                caught_up_ns: caught_up(self.w.marker_seen_ns),
                cpu_ns: w_cpu_after.cpu_ns.saturating_sub(w_cpu.cpu_ns),
            },
            by_kind,
            max_delay_ns: self.w.max_delay_ns,
            bpftrace: ToolStep {
                read: self.b.lines - b_lines,
                lost: self.b.lost - b_lost,
                made,
                balanced: b_ok,
                late: b_late.filter(|_| b_ok),
                reports: self.b.lost_lines - b_reports,
                caught_up_ns: caught_up(self.b.marker_seen_ns),
                cpu_ns: b_cpu_after.cpu_ns.saturating_sub(b_cpu.cpu_ns),
            },
        })
    }

    /// Opens markers until both tools have printed one: each tool's first
    /// marker line comes after everything made before it (watcher's ring
    /// buffer keeps order; for bpftrace see `balance`). A marker can be
    /// lost too, when a tool's buffer is still full: a tool that prints
    /// nothing for MARKER_RETRY gets another. `listeners` counts those
    /// made before the first marker, for the error message.
    fn settle(&mut self, generator: &mut Generator, listeners: u64, step_end_ns: u64) -> anyhow::Result<()> {
        self.markers.clear();
        self.w.marker_seen_ns = None;
        self.b.marker_seen_ns = None;
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        let mut last_change = Instant::now();
        // The first marker goes out before anything else, so that counting
        // the step's backlog of lines does not delay it.
        let mut marker_due = true;
        loop {
            if marker_due {
                let done = generator.run(&Load::MARKER).context("opening a marker listener")?;
                self.markers.push(Marker { port: done.last_port, start_ns: done.start_ns });
                last_change = Instant::now();
                marker_due = false;
            }
            let (w_new, b_new) = self.poll();
            let (w_waiting, b_waiting) = (self.w.marker_seen_ns.is_none(), self.b.marker_seen_ns.is_none());
            if !w_waiting && !b_waiting {
                return Ok(());
            }
            if (w_waiting && w_new > 0) || (b_waiting && b_new > 0) {
                last_change = Instant::now();
            }
            if last_change.elapsed() >= MARKER_RETRY {
                marker_due = true;
                continue;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not show any of {} marker listeners within {SETTLE_TIMEOUT:?} of the step's end \
                     ({:.1} s ago; {listeners} listeners before them); watcher's stderr:\n{}\nbpftrace's stderr:\n{}",
                    match (w_waiting, b_waiting) {
                        (true, true) => "watcher and bpftrace did",
                        (true, false) => "watcher did",
                        _ => "bpftrace did",
                    },
                    self.markers.len(),
                    (monotonic_ns() - step_end_ns) as f64 / 1e9,
                    self.watcher.stderr_tail(),
                    self.bpftrace.stderr_tail()
                );
            }
            thread::sleep(SETTLE_POLL);
        }
    }

    /// Waits (at most BALANCE_TIMEOUT) until, since the books started,
    /// watcher's records read + reported lost = RECORDS_PER_LISTENER ×
    /// `listeners`, and bpftrace's lines + reported lost = `listeners`:
    /// watcher reports loss once a second, and bpftrace reads one CPU's
    /// buffer after the other, so a marker can overtake another CPU's lines.
    /// Returns whether each balanced (a count above what was made stops
    /// the wait too: it cannot come down). Without `bpftrace_too`, only
    /// watcher's books are waited for.
    fn balance(&mut self, listeners: u64, bpftrace_too: bool) -> (bool, bool) {
        let deadline = Instant::now() + BALANCE_TIMEOUT;
        loop {
            self.poll();
            let w = self.w.read() + self.w.lost;
            let b = self.b.lines + self.b.lost;
            let w_made = RECORDS_PER_LISTENER * listeners;
            if (w >= w_made && (b >= listeners || !bpftrace_too)) || Instant::now() > deadline {
                return (w == w_made, b == listeners);
            }
            thread::sleep(SETTLE_POLL);
        }
    }

    /// watcher's loss warnings on stderr (among the last lines it keeps):
    /// how many, and the last one's running total.
    fn watcher_warnings(&self) -> Option<(usize, u64)> {
        let tail = self.watcher.stderr_tail();
        let totals: Vec<u64> = tail
            .lines()
            .filter(|l| l.contains("the kernel dropped"))
            .filter_map(|l| l.rsplit_once("; ")?.1.split_whitespace().next()?.parse().ok())
            .collect();
        totals.last().map(|&t| (totals.len(), t))
    }
}

/// Processes stopped with SIGSTOP, continued when this is dropped (also
/// when the step fails, so that no tool stays stopped). A stopped tool
/// would not act on the SIGTERM it gets when the bench dies (both handle
/// it), so SIGINT and SIGTERM to the bench continue them first.
struct Stopped {
    pids: Vec<u32>,
    previous: Vec<(libc::c_int, libc::sighandler_t)>,
}

/// The pids a signal handler continues (0: none).
static STOPPED: [AtomicI32; 2] = [AtomicI32::new(0), AtomicI32::new(0)];

extern "C" fn continue_and_die(sig: libc::c_int) {
    for pid in &STOPPED {
        let pid = pid.load(Ordering::SeqCst);
        if pid > 0 {
            // SAFETY: kill, signal and raise are async-signal-safe.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }
    // SAFETY: as above; the default action then ends the bench as it would have.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
}

impl Stopped {
    fn new(pids: [u32; 2]) -> Self {
        for (slot, &pid) in STOPPED.iter().zip(&pids) {
            slot.store(pid as i32, Ordering::SeqCst);
        }
        let handler = continue_and_die as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: installs a handler that only makes async-signal-safe calls.
        let previous =
            [libc::SIGINT, libc::SIGTERM].into_iter().map(|sig| (sig, unsafe { libc::signal(sig, handler) })).collect();
        for &pid in &pids {
            // SAFETY: a signal to our own child (Background's), not reaped yet.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
        }
        Self { pids: pids.to_vec(), previous }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for &pid in &self.pids {
            // SAFETY: as in `new`.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGCONT) };
        }
        for &(sig, previous) in &self.previous {
            // SAFETY: puts back what was there before `new`.
            unsafe { libc::signal(sig, previous) };
        }
        for slot in &STOPPED {
            slot.store(0, Ordering::SeqCst);
        }
    }
}

impl Step {
    fn achieved(&self) -> f64 {
        self.done.opened as f64 * 1e9 / (self.done.end_ns - self.done.start_ns).max(1) as f64
    }

    fn target(&self) -> String {
        if self.stalled {
            "unthrottled, both tools stopped".to_owned()
        } else if self.rate == 0 {
            "unthrottled".to_owned()
        } else {
            thousands(self.rate)
        }
    }

    /// Zero loss, every record accounted for, and the marker shown within
    /// KEPT_UP_SHARE of the step's length.
    fn sustained(&self, tool: &ToolStep) -> bool {
        if self.stalled {
            return false;
        }
        let step_ns = (self.done.end_ns - self.done.start_ns) as f64;
        tool.lost == 0 && tool.balanced && (tool.caught_up_ns as f64) <= step_ns * KEPT_UP_SHARE
    }

    fn progress(&self) -> String {
        format!(
            "{} listeners at {:.0}/s; watcher read {} lost {} of {}; bpftrace read {} lost {} of {}",
            self.done.opened,
            self.achieved(),
            self.watcher.read,
            self.watcher.lost,
            self.watcher.made,
            self.bpftrace.read,
            self.bpftrace.lost,
            self.bpftrace.made
        )
    }
}

fn report(args: &Args, machine: &[(String, String)], steps: &[Step]) {
    let rates: Vec<String> = args.rates.iter().map(u64::to_string).collect();
    println!(
        "## `cargo xtask bench throughput --rates {} --step-secs {} --threads {} --stalled-listeners {}`\n",
        rates.join(","),
        args.step_secs,
        args.threads,
        args.stalled_listeners
    );
    print_machine(machine);
    println!(
        "- watcher: `watcher watch --json --no-snapshot --pid <generator>`; bpftrace: `bpftrace -B line -e '{}'`",
        one_liner("<generator>")
    );
    println!(
        "- each listener: socket, bind 127.0.0.1:0, getsockname, listen, close; {RECORDS_PER_LISTENER} watcher records \
         (bind, listen, close), 1 bpftrace line (listen)\n"
    );
    println!(
        "| target listeners/s | listeners | achieved listeners/s | watcher records/s made | watcher read | watcher lost | \
         made = read + lost | watcher caught up | watcher CPU | bpftrace lines | bpftrace lost (reported) | \
         listeners = lines + lost | bpftrace caught up | bpftrace CPU |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for s in steps {
        let achieved = s.achieved();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.target(),
            thousands(s.done.opened),
            thousands(achieved.round() as u64),
            thousands((achieved * RECORDS_PER_LISTENER as f64).round() as u64),
            thousands(s.watcher.read),
            thousands(s.watcher.lost),
            books(&s.watcher),
            caught_up(s, &s.watcher),
            cpu(s, &s.watcher),
            thousands(s.bpftrace.read),
            thousands(s.bpftrace.lost),
            books(&s.bpftrace),
            caught_up(s, &s.bpftrace),
            cpu(s, &s.bpftrace),
        );
    }
    println!();

    let best = |tool: fn(&Step) -> &ToolStep| {
        steps.iter().filter(|s| s.sustained(tool(s))).max_by(|a, b| a.achieved().total_cmp(&b.achieved()))
    };
    let (w_best, b_best) = (best(|s| &s.watcher), best(|s| &s.bpftrace));
    let figure = |s: Option<&Step>, per: u64| match s {
        Some(s) => format!(
            "{} listeners/s ({} records/s, step {})",
            thousands(s.achieved().round() as u64),
            thousands((s.achieved() * per as f64).round() as u64),
            s.target()
        ),
        None => "none of the steps".to_owned(),
    };
    println!(
        "**Highest sustained zero-loss rate** (no loss, every record accounted for, caught up within {:.0} % of the \
         step's length):\n",
        KEPT_UP_SHARE * 100.0
    );
    println!("- watcher: {}", figure(w_best, RECORDS_PER_LISTENER));
    println!("- bpftrace one-liner: {}", figure(b_best, 1));
    if let (Some(w), Some(b)) = (w_best, b_best) {
        let r = w.achieved() / b.achieved().max(1.0);
        println!(
            "- watcher / bpftrace: {} in listeners/s (watcher handles {RECORDS_PER_LISTENER} records per listener, \
             bpftrace 1){}",
            ratio((r * 1000.0).round() as u64, 1000),
            if steps.iter().filter(|s| !s.stalled).all(|s| s.sustained(&s.watcher) && s.sustained(&s.bpftrace)) {
                "; both kept up at every step, so this is a lower bound set by the generator, not by either tool"
            } else {
                ""
            }
        );
    }
    println!();
    for s in steps {
        let [bind, listen, close] = s.by_kind;
        let made = s.done.opened + s.markers;
        let kinds_ok = s.watcher.lost > 0 || (bind == made && listen == made && close == made);
        println!(
            "- step {}: {} listeners + {} marker{}; watcher bind/listen/close lines {bind}/{listen}/{close}{}; \
             kernel → watcher userspace max {}; step {} (CPU figures over {})",
            s.target(),
            s.done.opened,
            s.markers,
            if s.markers == 1 { "" } else { "s" },
            if kinds_ok && s.watcher.lost == 0 {
                format!(" (= listeners ✓: {RECORDS_PER_LISTENER} records each)")
            } else if kinds_ok {
                String::new()
            } else {
                " ✗ (expected one of each per listener)".to_owned()
            },
            duration(s.max_delay_ns),
            duration(s.done.end_ns - s.done.start_ns),
            duration(s.wall_ns),
        );
    }
    println!("\n**Loss** (every step where a tool lost records):\n");
    let mut any = false;
    for s in steps {
        for (name, t, unit) in [("watcher", &s.watcher, "records"), ("bpftrace", &s.bpftrace, "events")] {
            if t.lost == 0 && t.balanced {
                continue;
            }
            any = true;
            println!(
                "- step {}: {name} lost {} of {} {unit} ({:.1} %) in {} loss report{}; read + lost = made: {}{}",
                s.target(),
                thousands(t.lost),
                thousands(t.made),
                t.lost as f64 * 100.0 / t.made.max(1) as f64,
                t.reports,
                if t.reports == 1 { "" } else { "s" },
                books(t),
                if s.stalled {
                    format!("; it read its backlog within {} of being continued", duration(t.caught_up_ns))
                } else {
                    String::new()
                }
            );
        }
    }
    if !any {
        println!("- none");
    }
}

/// The check made = read + lost, over all steps so far (see `balance`).
fn books(t: &ToolStep) -> String {
    match (t.balanced, t.late) {
        (true, None) => format!("✓ ({})", thousands(t.made)),
        (true, Some(late)) => {
            format!("✓ ({}) once a listener ran on each CPU ({} reported late)", thousands(t.made), thousands(late))
        }
        (false, _) => format!("✗ ({} made)", thousands(t.made)),
    }
}

fn caught_up(s: &Step, t: &ToolStep) -> String {
    // Lost nothing, but read too little of it while it was made.
    let behind = !s.stalled && t.lost == 0 && t.balanced && !s.sustained(t);
    format!("{}{}", duration(t.caught_up_ns), if behind { " (behind)" } else { "" })
}

/// CPU time, and its share of one core over the step and its catch-up.
fn cpu(s: &Step, t: &ToolStep) -> String {
    format!("{} ({:.0} %)", duration(t.cpu_ns), t.cpu_ns as f64 * 100.0 / s.wall_ns.max(1) as f64)
}

/// 1234567 → "1 234 567" (thin spaces would not survive every viewer).
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1 000");
        assert_eq!(thousands(1_234_567), "1 234 567");
    }
}
