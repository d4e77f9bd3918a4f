//! `cargo xtask bench throughput`: listener events at rising rates, from a
//! separate process, watched by watcher and by the bpftrace one-liner at
//! the same time (or, with `--alone`, by each alone in a pass of its own).
//! Per step: what each tool read, what it reported lost, and whether every
//! record made is one or the other; then the highest rate each read with
//! zero loss while keeping up. See BENCHMARKS.md.
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
    /// rate. With one, the generator holds one core and the tools share
    /// the other (with `--alone`, a tool has it to itself); more can
    /// outrun a tool. They start with the generator, before any tool, and
    /// are kept for every step and pass.
    #[arg(long, default_value_t = 1, value_parser = value_parser!(u64).range(1..=64))]
    pub threads: u64,
    /// Listeners of a last step, made as fast as possible while the tools
    /// attached are stopped (SIGSTOP): 100,000 make 300,000 watcher records, about
    /// eight times what its default 4 MiB ring buffer holds, so it shows how each
    /// tool accounts for loss. 0: no such step.
    #[arg(long, default_value_t = 100_000, value_parser = value_parser!(u64).range(0..=10_000_000))]
    pub stalled_listeners: u64,
    /// Run the steps twice on the same generator, first with watcher alone
    /// attached, then with bpftrace alone (each started afresh for its
    /// pass), instead of both at once: neither tool's kernel program or
    /// userspace then slows the generator or takes CPU from the other, so
    /// each pass can show its tool's own ceiling.
    #[arg(long)]
    pub alone: bool,
    /// watcher's `--ring-buffer-mib` (a power of two, 1 to 256): with a
    /// ring large enough to hold the whole stalled step, its read-back
    /// after SIGCONT lasts seconds and its rate is watcher's ceiling, the
    /// records a second it reads with a core to itself and nothing made
    /// meanwhile (the bench looks every 50 ms). 0: watcher's default.
    #[arg(long, default_value_t = 0, value_parser = value_parser!(u32).range(0..=256))]
    pub ring_buffer_mib: u32,
}

/// Which tools one pass of the steps has attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Both,
    Watcher,
    Bpftrace,
}

impl Pass {
    fn watcher(self) -> bool {
        self != Self::Bpftrace
    }

    fn bpftrace(self) -> bool {
        self != Self::Watcher
    }

    /// What the stalled step stops, for the report.
    fn attached(self) -> &'static str {
        match self {
            Self::Both => "both tools",
            Self::Watcher => "watcher",
            Self::Bpftrace => "bpftrace",
        }
    }
}

/// One pass's steps, and what its tools said besides their event lines.
struct PassReport {
    pass: Pass,
    steps: Vec<Step>,
    /// watcher's loss warnings on stderr: how many, the last one's total.
    warnings: Option<(usize, u64)>,
    /// The last `lost` line's total.
    lost_total: u64,
    bpftrace_stderr_lost: usize,
    w_other: (u64, Vec<String>),
    b_other: (u64, Vec<String>),
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    if args.rates.is_empty() {
        bail!("--rates needs at least one step");
    }
    // Started once, before any tool (and so before any thread), and kept
    // for every pass: its threads and pid stay the same throughout.
    let mut generator = Generator::start(args.threads)?;
    let machine = machine();
    let passes: &[Pass] = if args.alone { &[Pass::Watcher, Pass::Bpftrace] } else { &[Pass::Both] };
    let mut reports = Vec::new();
    for &pass in passes {
        reports.push(run_pass(args, pass, &mut generator)?);
    }
    drop(generator);

    match reports.as_slice() {
        [both] if both.pass == Pass::Both => {
            report(args, &machine, &both.steps);
            both.print_other_lines();
        }
        _ => report_alone(args, &machine, &reports),
    }
    Ok(())
}

/// The steps with `pass`'s tools started afresh, their books from zero.
fn run_pass(args: &Args, pass: Pass, generator: &mut Generator) -> anyhow::Result<PassReport> {
    let mut tools = Tools::start(generator.pid(), pass, args.ring_buffer_mib)?;
    // Proves the tools are live (bpftrace says "Attaching" before it is),
    // then starts the books from zero.
    tools.settle(generator, 0, monotonic_ns())?;
    // bpftrace may have missed a marker opened before it was attached:
    // only watcher's books (attached before its ready line) must balance
    // before they start over, so no warm-up line spills into a step.
    if pass.watcher() {
        let (warmed, _) = tools.balance(tools.markers.len() as u64, false);
        if !warmed {
            bail!("watcher's books did not balance after the warm-up markers: {:?}", tools.w);
        }
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
    let prefix = match pass {
        Pass::Both => "xtask: bench throughput:".to_owned(),
        _ => format!("xtask: bench throughput ({} alone):", pass.attached()),
    };
    for (load, stall) in paced.chain(stalled) {
        eprintln!(
            "{prefix} {}",
            match (stall, load.rate) {
                (true, _) => format!("{} listeners with {} stopped", load.max_count, pass.attached()),
                (false, 0) => format!("as fast as possible for {} s", args.step_secs),
                (false, rate) => format!("{rate} listeners/s for {} s", args.step_secs),
            }
        );
        let step = tools.step(generator, &mut listeners, load, stall)?;
        eprintln!("{prefix} {}", step.progress());
        steps.push(step);
    }
    let bpftrace_stderr_lost =
        tools.bpftrace.as_ref().map_or(0, |b| b.stderr_tail().lines().filter(|l| l.starts_with("Lost ")).count());
    Ok(PassReport {
        pass,
        steps,
        warnings: tools.watcher_warnings(),
        lost_total: tools.w.lost_total,
        bpftrace_stderr_lost,
        w_other: (tools.w.other, tools.w.other_sample.clone()),
        b_other: (tools.b.other, tools.b.other_sample.clone()),
    })
}

impl PassReport {
    /// What the tools of the pass said besides their event lines.
    fn print_other_lines(&self) {
        if self.pass.watcher() {
            println!(
                "- watcher's stderr: {}; its `lost` lines said {} records lost in all",
                match self.warnings {
                    Some((n, total)) => format!("{n} loss warning(s), the last saying {total} in all"),
                    None => "no loss warning".to_owned(),
                },
                self.lost_total
            );
        }
        match self.pass {
            Pass::Both => println!(
                "- other lines: watcher {}{}, bpftrace {}{}; bpftrace \"Lost\" lines on stderr: {}",
                self.w_other.0,
                sample(&self.w_other.1),
                self.b_other.0,
                sample(&self.b_other.1),
                self.bpftrace_stderr_lost
            ),
            Pass::Watcher => println!("- other lines: watcher {}{}", self.w_other.0, sample(&self.w_other.1)),
            Pass::Bpftrace => println!(
                "- other lines: bpftrace {}{}; bpftrace \"Lost\" lines on stderr: {}",
                self.b_other.0,
                sample(&self.b_other.1),
                self.bpftrace_stderr_lost
            ),
        }
    }
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

/// watcher and bpftrace running (or one of them, in a pass of its own),
/// and their books. An absent tool's books stay at zero.
struct Tools {
    pid: u32,
    boot_offset_ns: i64,
    watcher: Option<Background>,
    bpftrace: Option<Background>,
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
    /// The tools attached; only theirs of the figures below mean anything.
    pass: Pass,
    rate: u64,
    /// The pass's tools were stopped while the step ran.
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
    /// Its 99th percentile.
    p99_delay_ns: u64,
    bpftrace: ToolStep,
}

impl Tools {
    fn start(pid: u32, pass: Pass, ring_buffer_mib: u32) -> anyhow::Result<Self> {
        ensure_tracefs()?;
        let watcher = pass
            .watcher()
            .then(|| {
                let mut args = ["watch", "--json", "--no-snapshot", "--pid"].map(str::to_owned).to_vec();
                args.push(pid.to_string());
                if ring_buffer_mib > 0 {
                    args.extend(["--ring-buffer-mib".to_owned(), ring_buffer_mib.to_string()]);
                }
                eprintln!("xtask: bench throughput: starting watcher {}", args.join(" "));
                Background::start(
                    "watcher",
                    Command::new(watcher_binary()).args(&args),
                    Stdout::Keep,
                    |l| l.starts_with("watcher: ready:"),
                    START_TIMEOUT,
                )
            })
            .transpose()?;
        let bpftrace = pass
            .bpftrace()
            .then(|| {
                let program = one_liner(&pid.to_string());
                eprintln!("xtask: bench throughput: starting bpftrace -B line -e '{program}'");
                Background::start(
                    "bpftrace",
                    Command::new("/usr/bin/bpftrace").args(["-B", "line", "-e", &program]),
                    Stdout::Keep,
                    |l| l.starts_with("Attaching "),
                    START_TIMEOUT,
                )
            })
            .transpose()?;
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
        let (lines, taken_ns) = (self.watcher.as_ref().map(Background::take_lines).unwrap_or_default(), monotonic_ns());
        for l in &lines {
            self.w.line(l, pid, &self.markers, taken_ns);
        }
        let w = lines.len();
        let (lines, taken_ns) =
            (self.bpftrace.as_ref().map(Background::take_lines).unwrap_or_default(), monotonic_ns());
        for l in &lines {
            self.b.line(l, pid, &self.markers, taken_ns, offset);
        }
        // wait_for_line is not used past the start: its queue only holds
        // copies of lines already counted.
        for tool in self.watcher.iter().chain(&self.bpftrace) {
            tool.discard_queued();
        }
        (w, lines.len())
    }

    /// Each tool's CPU time so far (zero for an absent one).
    fn usage(&self) -> anyhow::Result<(Usage, Usage)> {
        let of = |tool: &Option<Background>, name: &str| {
            tool.as_ref()
                .map(|t| t.usage().with_context(|| format!("reading {name}'s CPU time")))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        Ok((of(&self.watcher, "watcher")?, of(&self.bpftrace, "bpftrace")?))
    }

    fn pass(&self) -> Pass {
        match (self.watcher.is_some(), self.bpftrace.is_some()) {
            (true, false) => Pass::Watcher,
            (false, true) => Pass::Bpftrace,
            _ => Pass::Both,
        }
    }

    /// The pids of the tools attached, for SIGSTOP.
    fn pids(&self) -> Vec<u32> {
        self.watcher.iter().chain(&self.bpftrace).map(Background::pid).collect()
    }

    /// "watcher's stderr:\n…" for each tool attached, for errors.
    fn stderr_tails(&self) -> String {
        [("watcher", &self.watcher), ("bpftrace", &self.bpftrace)]
            .into_iter()
            .filter_map(|(name, tool)| Some(format!("{name}'s stderr:\n{}", tool.as_ref()?.stderr_tail())))
            .collect::<Vec<_>>()
            .join("\n")
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
        self.w.delays_ns.clear();
        let stopped = stall.then(|| Stopped::new(&self.pids()));
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
            pass: self.pass(),
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
            p99_delay_ns: percentile(&mut self.w.delays_ns, 99),
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

    /// Opens markers until each tool attached has printed one: its first
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
            let w_waiting = self.watcher.is_some() && self.w.marker_seen_ns.is_none();
            let b_waiting = self.bpftrace.is_some() && self.b.marker_seen_ns.is_none();
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
                     ({:.1} s ago; {listeners} listeners before them); {}",
                    match (w_waiting, b_waiting) {
                        (true, true) => "watcher and bpftrace did",
                        (true, false) => "watcher did",
                        _ => "bpftrace did",
                    },
                    self.markers.len(),
                    (monotonic_ns() - step_end_ns) as f64 / 1e9,
                    self.stderr_tails()
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
    /// the wait too: it cannot come down); a tool not attached counts as
    /// balanced. Without `bpftrace_too`, only watcher's books are waited for.
    fn balance(&mut self, listeners: u64, bpftrace_too: bool) -> (bool, bool) {
        let deadline = Instant::now() + BALANCE_TIMEOUT;
        let (w_on, b_on) = (self.watcher.is_some(), self.bpftrace.is_some());
        loop {
            self.poll();
            let w = self.w.read() + self.w.lost;
            let b = self.b.lines + self.b.lost;
            let w_made = RECORDS_PER_LISTENER * listeners;
            let w_done = !w_on || w >= w_made;
            let b_done = !b_on || !bpftrace_too || b >= listeners;
            if (w_done && b_done) || Instant::now() > deadline {
                return (!w_on || w == w_made, !b_on || b == listeners);
            }
            thread::sleep(SETTLE_POLL);
        }
    }

    /// watcher's loss warnings on stderr (among the last lines it keeps):
    /// how many, and the last one's running total.
    fn watcher_warnings(&self) -> Option<(usize, u64)> {
        let tail = self.watcher.as_ref()?.stderr_tail();
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
    /// At most STOPPED's length of pids (the bench's two tools); any more
    /// would not be continued by the signal handler, so they are not stopped.
    fn new(pids: &[u32]) -> Self {
        let pids = &pids[..pids.len().min(STOPPED.len())];
        for (slot, &pid) in STOPPED.iter().zip(pids) {
            slot.store(pid as i32, Ordering::SeqCst);
        }
        let handler = continue_and_die as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: installs a handler that only makes async-signal-safe calls.
        let previous =
            [libc::SIGINT, libc::SIGTERM].into_iter().map(|sig| (sig, unsafe { libc::signal(sig, handler) })).collect();
        for &pid in pids {
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
            format!("unthrottled, {} stopped", self.pass.attached())
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
        let mut out = format!("{} listeners at {:.0}/s", self.done.opened, self.achieved());
        for (name, t) in self.tools() {
            out.push_str(&format!("; {name} read {} lost {} of {}", t.read, t.lost, t.made));
        }
        out
    }

    /// The attached tools' figures, with their names.
    fn tools(&self) -> impl Iterator<Item = (&'static str, &ToolStep)> {
        let w = self.pass.watcher().then_some(("watcher", &self.watcher));
        let b = self.pass.bpftrace().then_some(("bpftrace", &self.bpftrace));
        w.into_iter().chain(b)
    }
}

fn report(args: &Args, machine: &[(String, String)], steps: &[Step]) {
    header(args, machine);
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

    let (w_best, b_best) = (best(steps, |s| &s.watcher), best(steps, |s| &s.bpftrace));
    print_sustained_heading();
    println!("- watcher: {}", figure(w_best, RECORDS_PER_LISTENER, "record"));
    // "records" for bpftrace too: the default report's wording, kept.
    println!("- bpftrace one-liner: {}", figure(b_best, 1, "record"));
    if let (Some(w), Some(b)) = (w_best, b_best) {
        println!(
            "- watcher / bpftrace: {} in listeners/s (watcher handles {RECORDS_PER_LISTENER} records per listener, \
             bpftrace 1){}",
            listener_ratio(w, b),
            if steps.iter().filter(|s| !s.stalled).all(|s| s.sustained(&s.watcher) && s.sustained(&s.bpftrace)) {
                "; both kept up at every step, so this is a lower bound set by the generator, not by either tool"
            } else {
                ""
            }
        );
    }
    println!();
    step_details(steps);
    losses(steps);
}

/// `--alone`: a table per pass, each with its tool's own figures, then the
/// two side by side.
fn report_alone(args: &Args, machine: &[(String, String)], passes: &[PassReport]) {
    header(args, machine);
    println!(
        "- `--alone`: the steps ran once per pass against the same generator ({} thread{}, started before either \
         tool): first with watcher alone attached, then with bpftrace alone, each tool started afresh for its pass \
         and its books kept from zero",
        args.threads,
        if args.threads == 1 { "" } else { "s" }
    );
    println!(
        "- read/s: what the tool read over the step and its catch-up (step end → marker shown): when it lost \
         records, about the most it could read there\n"
    );
    for (i, p) in passes.iter().enumerate() {
        let (name, unit, per, pick): (_, _, _, fn(&Step) -> &ToolStep) = match p.pass {
            Pass::Bpftrace => ("bpftrace", "line", 1, |s| &s.bpftrace),
            _ => ("watcher", "record", RECORDS_PER_LISTENER, |s| &s.watcher),
        };
        println!("### Pass {}: {name} alone\n", i + 1);
        println!(
            "| target listeners/s | listeners | achieved listeners/s | {unit}s/s made | {unit}s read | lost (reported) | \
             made = read + lost | read/s | caught up | CPU | CPU per {unit} |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|---|");
        for s in &p.steps {
            let (t, achieved) = (pick(s), s.achieved());
            println!(
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.target(),
                thousands(s.done.opened),
                thousands(achieved.round() as u64),
                thousands((achieved * per as f64).round() as u64),
                thousands(t.read),
                thousands(t.lost),
                books(t),
                read_rate(s, t),
                caught_up(s, t),
                cpu(s, t),
                per_item(t),
            );
        }
        println!();
        print_sustained_heading();
        println!("- {name} alone: {}", figure(best(&p.steps, pick), per, unit));
        println!("- {}", loss_onset(&p.steps, pick, per, unit));
        println!();
        step_details(&p.steps);
        losses(&p.steps);
        p.print_other_lines();
        println!();
    }
    let (Some(w), Some(b)) =
        (passes.iter().find(|p| p.pass == Pass::Watcher), passes.iter().find(|p| p.pass == Pass::Bpftrace))
    else {
        return;
    };
    println!("### Side by side: each tool alone, step by step\n");
    println!(
        "| target listeners/s | watcher pass: listeners/s | records/s made | records lost | caught up | CPU per record | \
         bpftrace pass: listeners/s | lines/s made | lines lost | caught up | CPU per line |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (ws, bs) in w.steps.iter().zip(&b.steps) {
        let (wa, ba) = (ws.achieved(), bs.achieved());
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            if ws.stalled { "unthrottled, the pass's tool stopped".to_owned() } else { ws.target() },
            thousands(wa.round() as u64),
            thousands((wa * RECORDS_PER_LISTENER as f64).round() as u64),
            lost_cell(&ws.watcher),
            caught_up(ws, &ws.watcher),
            per_item(&ws.watcher),
            thousands(ba.round() as u64),
            thousands(ba.round() as u64),
            lost_cell(&bs.bpftrace),
            caught_up(bs, &bs.bpftrace),
            per_item(&bs.bpftrace),
        );
    }
    println!();
    let (w_best, b_best) = (best(&w.steps, |s| &s.watcher), best(&b.steps, |s| &s.bpftrace));
    print_sustained_heading();
    println!("- watcher alone: {}", figure(w_best, RECORDS_PER_LISTENER, "record"));
    println!("- bpftrace one-liner alone: {}", figure(b_best, 1, "line"));
    if let (Some(w), Some(b)) = (w_best, b_best) {
        println!(
            "- watcher / bpftrace: {} in listeners/s (watcher handles {RECORDS_PER_LISTENER} records per listener, \
             bpftrace 1)",
            listener_ratio(w, b)
        );
    }
}

fn header(args: &Args, machine: &[(String, String)]) {
    let rates: Vec<String> = args.rates.iter().map(u64::to_string).collect();
    println!(
        "## `cargo xtask bench throughput --rates {} --step-secs {} --threads {} --stalled-listeners {}{}{}`\n",
        rates.join(","),
        args.step_secs,
        args.threads,
        args.stalled_listeners,
        if args.alone { " --alone" } else { "" },
        if args.ring_buffer_mib > 0 { format!(" --ring-buffer-mib {}", args.ring_buffer_mib) } else { String::new() }
    );
    print_machine(machine);
    println!(
        "- watcher: `watcher watch --json --no-snapshot --pid <generator>`; bpftrace: `bpftrace -B line -e '{}'`",
        one_liner("<generator>")
    );
    println!(
        "- each listener: socket, bind 127.0.0.1:0, getsockname, listen, close; {RECORDS_PER_LISTENER} watcher records \
         (bind, listen, close), 1 bpftrace line (listen){}",
        if args.alone { "" } else { "\n" }
    );
}

fn print_sustained_heading() {
    println!(
        "**Highest sustained zero-loss rate** (no loss, every record accounted for, caught up within {:.0} % of the \
         step's length):\n",
        KEPT_UP_SHARE * 100.0
    );
}

/// The sustained step (see `Step::sustained`) with the highest achieved rate.
fn best(steps: &[Step], tool: fn(&Step) -> &ToolStep) -> Option<&Step> {
    steps.iter().filter(|s| s.sustained(tool(s))).max_by(|a, b| a.achieved().total_cmp(&b.achieved()))
}

/// `unit`: what the tool reads, "record" or "line".
fn figure(s: Option<&Step>, per: u64, unit: &str) -> String {
    match s {
        Some(s) => format!(
            "{} listeners/s ({} {unit}s/s, step {})",
            thousands(s.achieved().round() as u64),
            thousands((s.achieved() * per as f64).round() as u64),
            s.target()
        ),
        None => "none of the steps".to_owned(),
    }
}

fn listener_ratio(w: &Step, b: &Step) -> String {
    let r = w.achieved() / b.achieved().max(1.0);
    ratio((r * 1000.0).round() as u64, 1000)
}

/// Where a tool's loss began among the paced steps: the highest rate of a
/// step it lost nothing at, the lowest one it lost at (the rates a step
/// achieves are not always in the order of its target).
fn loss_onset(steps: &[Step], tool: fn(&Step) -> &ToolStep, per: u64, unit: &str) -> String {
    let paced = || steps.iter().filter(|s| !s.stalled);
    let rate = |s: &Step| {
        format!(
            "{} listeners/s ({} {unit}s/s, step {})",
            thousands(s.achieved().round() as u64),
            thousands((s.achieved() * per as f64).round() as u64),
            s.target()
        )
    };
    let fastest_clean =
        paced().filter(|s| tool(s).lost == 0 && tool(s).balanced).max_by(|a, b| a.achieved().total_cmp(&b.achieved()));
    let slowest_lossy = paced().filter(|s| tool(s).lost > 0).min_by(|a, b| a.achieved().total_cmp(&b.achieved()));
    format!(
        "zero loss (caught up or not) up to {}; {}",
        fastest_clean.map_or_else(|| "none of the steps".to_owned(), rate),
        match slowest_lossy {
            Some(s) => format!(
                "loss from {}: {} of {} {unit}s lost",
                rate(s),
                thousands(tool(s).lost),
                thousands(tool(s).made)
            ),
            None => "no paced step lost anything".to_owned(),
        }
    )
}

/// The tool's reading rate over the step and its catch-up; "–" for a stalled
/// step, whose tools read nothing while it ran.
fn read_rate(s: &Step, t: &ToolStep) -> String {
    if s.stalled {
        return "–".to_owned();
    }
    let ns = (s.done.end_ns - s.done.start_ns) + t.caught_up_ns;
    thousands((t.read as f64 * 1e9 / ns.max(1) as f64).round() as u64)
}

/// CPU time per record or line read.
fn per_item(t: &ToolStep) -> String {
    t.cpu_ns.checked_div(t.read).map_or_else(|| "–".to_owned(), duration)
}

/// Lost, and whether the books balanced.
fn lost_cell(t: &ToolStep) -> String {
    format!("{}{}", thousands(t.lost), if t.balanced { " ✓" } else { " ✗ (books)" })
}

/// A line per step: listeners and markers, watcher's records by kind (when
/// it is attached), its kernel → userspace delay, the step's length.
fn step_details(steps: &[Step]) {
    for s in steps {
        let [bind, listen, close] = s.by_kind;
        let made = s.done.opened + s.markers;
        let kinds_ok = s.watcher.lost > 0 || (bind == made && listen == made && close == made);
        let watcher = if s.pass.watcher() {
            format!(
                "; watcher bind/listen/close lines {bind}/{listen}/{close}{}; kernel → watcher userspace p99 {}, max {}",
                if kinds_ok && s.watcher.lost == 0 {
                    format!(" (= listeners ✓: {RECORDS_PER_LISTENER} records each)")
                } else if kinds_ok {
                    String::new()
                } else {
                    " ✗ (expected one of each per listener)".to_owned()
                },
                duration(s.p99_delay_ns),
                duration(s.max_delay_ns),
            )
        } else {
            String::new()
        };
        println!(
            "- step {}: {} listeners + {} marker{}{watcher}; step {} (CPU figures over {})",
            s.target(),
            s.done.opened,
            s.markers,
            if s.markers == 1 { "" } else { "s" },
            duration(s.done.end_ns - s.done.start_ns),
            duration(s.wall_ns),
        );
    }
}

/// Every step where an attached tool lost records, or its books did not balance.
fn losses(steps: &[Step]) {
    println!("\n**Loss** (every step where a tool lost records):\n");
    let mut any = false;
    for s in steps {
        for (name, t) in s.tools() {
            if t.lost == 0 && t.balanced {
                continue;
            }
            let unit = if name == "watcher" { "records" } else { "events" };
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
                    format!(
                        "; it read its backlog within {} of being continued ({} {unit}/s at least)",
                        duration(t.caught_up_ns),
                        thousands((t.read as f64 * 1e9 / t.caught_up_ns.max(1) as f64).round() as u64)
                    )
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
/// The `p`th percentile of `values` (nearest rank; 0 for none); sorts them.
fn percentile(values: &mut [u64], p: usize) -> u64 {
    if values.is_empty() {
        return 0;
    }
    values.sort_unstable();
    values[(values.len() * p).div_ceil(100).clamp(1, values.len()) - 1]
}

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
    use super::*;

    fn step(rate: u64, opened: u64, lost: u64) -> Step {
        let done = Done { opened, start_ns: 0, end_ns: 1_000_000_000, last_port: 0 };
        let tool = ToolStep { read: 3 * opened - lost, lost, made: 3 * opened, balanced: true, ..ToolStep::default() };
        Step {
            pass: Pass::Watcher,
            rate,
            stalled: false,
            done,
            markers: 1,
            wall_ns: 1_000_000_000,
            watcher: tool,
            by_kind: [0; 3],
            max_delay_ns: 0,
            p99_delay_ns: 0,
            bpftrace: ToolStep::default(),
        }
    }

    #[test]
    fn loss_begins_at_the_slowest_lossy_step() {
        // The unthrottled step achieved less than the 90 000 one: rates,
        // not the order of the steps, say where loss began.
        let steps = [step(50_000, 50_000, 0), step(90_000, 90_000, 0), step(0, 80_000, 7), step(100_000, 95_000, 9)];
        let onset = loss_onset(&steps, |s| &s.watcher, RECORDS_PER_LISTENER, "record");
        assert_eq!(
            onset,
            "zero loss (caught up or not) up to 90 000 listeners/s (270 000 records/s, step 90 000); loss from \
             80 000 listeners/s (240 000 records/s, step unthrottled): 7 of 240 000 records lost"
        );
        assert_eq!(read_rate(&steps[0], &steps[0].watcher), "150 000");
        assert_eq!(per_item(&ToolStep { read: 4, cpu_ns: 10, ..ToolStep::default() }), "2 ns");
        assert_eq!(per_item(&ToolStep::default()), "–");
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        assert_eq!(percentile(&mut [], 99), 0);
        assert_eq!(percentile(&mut [5], 99), 5);
        let mut hundred: Vec<u64> = (1..=100).rev().collect();
        assert_eq!((percentile(&mut hundred, 99), percentile(&mut hundred, 50)), (99, 50));
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1 000");
        assert_eq!(thousands(1_234_567), "1 234 567");
    }
}
