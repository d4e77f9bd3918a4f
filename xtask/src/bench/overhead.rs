//! `cargo xtask bench overhead`: what watching costs the programs being
//! watched. Three workloads a server runs — (a) socket/bind/listen/close,
//! (b) a loopback server accepting connections, (c) a syscall no hook is
//! about (getppid) — each timed in a forked worker, with nothing attached,
//! with watcher (default hooks; with RUST_LOG=debug, which attaches the
//! kernel programs' log; then with --accept, every optional hook) and with
//! bpftrace one-liners on the same hooks, rounds interleaved.
#[path = "overhead_worker.rs"]
mod worker;

use std::{
    collections::BTreeMap,
    fs,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args as ClapArgs, ValueEnum, value_parser};

use self::worker::{Outcome, Work, Worker};
use super::{
    background::{Background, Stdout},
    duration, ensure_tracefs, machine, print_machine,
};
use crate::util::watcher_binary;

#[derive(ClapArgs)]
pub struct Args {
    /// Rounds. Each round runs every tool once, starting from a different
    /// tool each time, with a run of nothing attached before and after
    /// each, so that a slow spell of the machine does not fall on one mode
    /// only; the report gives medians of the rounds.
    #[arg(long, default_value_t = 7, value_parser = value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// (a) socket/bind(127.0.0.1:0)/listen/close cycles per run (one run: one
    /// mode in one round).
    #[arg(long, default_value_t = 20_000, value_parser = value_parser!(u64).range(100..=1_000_000))]
    pub bind_ops: u64,
    /// (b) Loopback connections accepted (and closed) per run.
    #[arg(long, default_value_t = 20_000, value_parser = value_parser!(u64).range(100..=1_000_000))]
    pub connections: u64,
    /// (c) getppid syscalls per run.
    #[arg(long, default_value_t = 2_000_000, value_parser = value_parser!(u64).range(1_000..=1_000_000_000))]
    pub getppid_calls: u64,
    /// Measure only these modes (repeat the option for several); `off`,
    /// the base of every ratio, is always measured. Default: all of them.
    #[arg(long = "mode", value_enum)]
    pub modes: Vec<Mode>,
}

/// What is attached while the workloads run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Mode {
    /// Nothing.
    Off,
    /// `watcher watch --json --no-snapshot`: the default hooks.
    Watcher,
    /// The same under `RUST_LOG=debug`: the kernel programs' log (aya-log)
    /// attached and read (RUST_LOG=info otherwise).
    WatcherDebug,
    /// `watcher watch --json --no-snapshot --accept`: every optional hook.
    WatcherAccept,
    /// `watcher watch --json --no-snapshot --light`: no syscall tracepoint
    /// (what it gives up on this kernel, the ready line says).
    WatcherLight,
    /// bpftrace on the TCP listen tracepoint watcher uses, printing.
    BpftraceListen,
    /// bpftrace on accept()/accept4() returning a connection, printing.
    BpftraceAccept,
}

/// The latency bench's one-liner (BENCHMARKS.md) without its pid filter:
/// watcher here watches the whole host too.
const BPFTRACE_LISTEN: &str = "tracepoint:sock:inet_sock_set_state /args->newstate == 10 && args->protocol == 6/ \
                               { printf(\"%llu %d %d\\n\", nsecs, pid, args->sport); }";
/// What watcher --accept reports at least: who accepted, and the new fd.
const BPFTRACE_ACCEPT: &str = "tracepoint:syscalls:sys_exit_accept4, tracepoint:syscalls:sys_exit_accept \
                               /args->ret >= 0/ { printf(\"%d %d\\n\", pid, args->ret); }";

/// Compiling a bpftrace program takes seconds on a busy machine.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// After a workload, a tool still printing is waited for until it has
/// printed what the workload caused, or has printed nothing for this long.
const SETTLE_QUIET: Duration = Duration::from_millis(300);
const SETTLE_MAX: Duration = Duration::from_secs(30);

impl Mode {
    const ALL: [Self; 7] = [
        Self::Off,
        Self::Watcher,
        Self::WatcherDebug,
        Self::WatcherAccept,
        Self::WatcherLight,
        Self::BpftraceListen,
        Self::BpftraceAccept,
    ];

    fn is_watcher(self) -> bool {
        matches!(self, Self::Watcher | Self::WatcherDebug | Self::WatcherAccept | Self::WatcherLight)
    }

    fn label(self) -> &'static str {
        match self {
            Self::Off => "off (nothing attached)",
            Self::Watcher => "watcher (default hooks)",
            Self::WatcherDebug => "watcher, RUST_LOG=debug (kernel log attached)",
            Self::WatcherAccept => "watcher --accept",
            Self::WatcherLight => "watcher --light (no syscall tracepoint)",
            Self::BpftraceListen => "bpftrace, listen one-liner",
            Self::BpftraceAccept => "bpftrace, accept one-liner",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Watcher => "watcher",
            Self::WatcherDebug => "watcher debug",
            Self::WatcherAccept => "watcher --accept",
            Self::WatcherLight => "watcher --light",
            Self::BpftraceListen => "bpftrace listen",
            Self::BpftraceAccept => "bpftrace accept",
        }
    }

    /// Lines the tool should print for one run of `work` that did `ops`
    /// operations (other processes' events come on top).
    fn expected_lines(self, work: Work, ops: u64) -> u64 {
        match (self, work) {
            (Self::Off, _) | (_, Work::Getppid) | (Self::BpftraceAccept, Work::Bind) => 0,
            // bind, listen, close per listener.
            (Self::Watcher | Self::WatcherDebug | Self::WatcherAccept | Self::WatcherLight, Work::Bind) => 3 * ops,
            // The server's own listener: bind, listen, close.
            (Self::Watcher | Self::WatcherDebug | Self::WatcherLight, Work::Accept) => 3,
            (Self::WatcherAccept, Work::Accept) => ops + 3,
            (Self::BpftraceListen, Work::Bind) | (Self::BpftraceAccept, Work::Accept) => ops,
            (Self::BpftraceListen, Work::Accept) => 1,
        }
    }
}

fn work_label(work: Work) -> &'static str {
    match work {
        Work::Bind => "(a) socket+bind+listen+close",
        Work::Accept => "(b) loopback accept4+close (server)",
        Work::Getppid => "(c) getppid syscall",
    }
}

fn work_count(args: &Args, work: Work) -> u64 {
    match work {
        Work::Bind => args.bind_ops,
        Work::Accept => args.connections,
        Work::Getppid => args.getppid_calls,
    }
}

/// One workload run under one mode.
struct Sample {
    /// Position of its mode's run in the whole sequence of runs.
    seq: usize,
    mode: Mode,
    work: Work,
    outcome: Outcome,
    /// The tool's CPU time (user + system) from the workload's start until
    /// it had printed what the workload caused.
    tool_cpu_ns: Option<u64>,
    /// Lines the tool printed over the same span.
    tool_lines: Option<u64>,
    /// Other watcher/bpftrace processes on the host when the workload began.
    foreign: usize,
    /// The tool printed fewer lines than the workload's events.
    short: bool,
}

/// What a tool reported about itself over one round.
#[derive(Default)]
struct ToolRun {
    /// Launch → ready (and, for bpftrace, proven live).
    start_ns: u64,
    /// Records watcher said the kernel dropped; bpftrace's "Lost N events".
    lost: u64,
    /// bpftrace's losses by workload (bind, accept, getppid); the rest of
    /// `lost` came while no workload ran (starting, stopping).
    lost_during: [u64; 3],
    /// watcher's "watcher: ready: …" line (what it attached).
    ready_line: Option<String>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    // Forked first, while the bench has no other thread.
    let mut worker = Worker::start()?;
    let machine = machine();
    ensure_tracefs()?;
    // Off is always measured: every ratio is to it.
    let mut modes = if args.modes.is_empty() { Mode::ALL.to_vec() } else { args.modes.clone() };
    modes.push(Mode::Off);
    modes.sort();
    modes.dedup();

    eprintln!(
        "xtask: bench overhead: {} rounds × {} modes; per run: {} bind+listen+close, {} connections, {} getppid calls",
        args.rounds,
        modes.len(),
        args.bind_ops,
        args.connections,
        args.getppid_calls
    );
    // Page faults, socket hash tables and CPU caches warm up in the first
    // runs: a tenth of each workload, not reported.
    for work in Work::ALL {
        worker.run(work, (work_count(args, work) / 10).max(1)).context("warming up")?;
    }
    let began = Instant::now();
    let mut samples = Vec::new();
    let mut tool_runs: BTreeMap<Mode, Vec<ToolRun>> = BTreeMap::new();
    let tools: Vec<Mode> = modes.iter().copied().filter(|&m| m != Mode::Off).collect();
    let mut seq = 0;
    for round in 0..args.rounds as usize {
        // Off before and after every tool: each tool's runs are compared
        // with the off runs that bracket them (seconds apart), not only
        // with off runs minutes away.
        let mut order = Vec::with_capacity(2 * tools.len() + 1);
        for k in 0..tools.len() {
            // The previous round's last off run is this one's first.
            if round == 0 || k > 0 {
                order.push(Mode::Off);
            }
            order.push(tools[(round + k) % tools.len()]);
        }
        order.push(Mode::Off);
        for mode in order {
            let (run, new) = measure(mode, seq, &mut worker, args)
                .with_context(|| format!("round {} of {}, mode {}", round + 1, args.rounds, mode.label()))?;
            let figures: Vec<String> = new.iter().map(|s| format!("{} {}", short_work(s.work), figure(s))).collect();
            eprintln!(
                "xtask: bench overhead: round {}/{} {:<17} {}",
                round + 1,
                args.rounds,
                mode.short(),
                figures.join(", ")
            );
            samples.extend(new);
            if mode != Mode::Off {
                tool_runs.entry(mode).or_default().push(run);
            }
            seq += 1;
        }
    }
    let run_s = began.elapsed().as_secs_f64();
    drop(worker);

    let chosen: String =
        args.modes.iter().filter_map(|m| m.to_possible_value()).map(|v| format!(" --mode {}", v.get_name())).collect();
    println!(
        "## `cargo xtask bench overhead --rounds {} --bind-ops {} --connections {} --getppid-calls {}{chosen}`\n",
        args.rounds, args.bind_ops, args.connections, args.getppid_calls
    );
    print_machine(&machine);
    if modes.iter().any(|m| m.is_watcher()) {
        println!(
            "- watcher: `RUST_LOG=info {} watch --json --no-snapshot [--accept]` (the whole host, no --pid); \
             watcher debug: the same with `RUST_LOG=debug`",
            watcher_binary().display()
        );
    }
    if modes.contains(&Mode::BpftraceListen) {
        println!("- bpftrace, listen: `bpftrace -B line -e '{BPFTRACE_LISTEN}'`");
    }
    if modes.contains(&Mode::BpftraceAccept) {
        println!("- bpftrace, accept: `bpftrace -B line -e '{BPFTRACE_ACCEPT}'`");
    }
    println!(
        "- {} rounds; in each, every tool once (order rotated round to round), with nothing attached before and \
         after each; {run_s:.0} s of measuring (tool starts included)",
        args.rounds
    );
    println!();
    print_report(&modes, &samples, &tool_runs);
    Ok(())
}

/// Starts `mode`'s tool, runs the three workloads under it, stops it.
fn measure(mode: Mode, seq: usize, worker: &mut Worker, args: &Args) -> anyhow::Result<(ToolRun, Vec<Sample>)> {
    let launched = Instant::now();
    let tool = start_tool(mode, worker)?;
    let mut run = ToolRun {
        start_ns: launched.elapsed().as_nanos() as u64,
        lost: 0,
        lost_during: [0; 3],
        ready_line: tool
            .as_ref()
            .and_then(|t| t.stderr_tail().lines().find(|l| l.starts_with("watcher: ready:")).map(str::to_owned)),
    };
    let mut samples = Vec::new();
    for work in Work::ALL {
        let foreign = foreign_tracers(tool.as_ref().map(Background::pid));
        let before = match &tool {
            Some(t) => Some((t.stdout_lines(), t.usage().context("reading the tool's CPU time")?.cpu_ns)),
            None => None,
        };
        let outcome = worker.run(work, work_count(args, work))?;
        let (mut tool_cpu_ns, mut tool_lines): (Option<u64>, Option<u64>) = (None, None);
        if let (Some(t), Some((lines0, cpu0))) = (&tool, before) {
            settle(t, lines0, mode.expected_lines(work, outcome.ops));
            tool_lines = Some(t.stdout_lines() - lines0);
            tool_cpu_ns = Some(t.usage().context("reading the tool's CPU time")?.cpu_ns.saturating_sub(cpu0));
            // bpftrace's lines are kept only to find its loss reports.
            let lost = t.take_lines().iter().filter_map(|l| bpftrace_lost(l)).sum::<u64>();
            run.lost += lost;
            run.lost_during[Work::ALL.iter().position(|&w| w == work).unwrap_or(0)] += lost;
        }
        samples.push(Sample {
            seq,
            mode,
            work,
            outcome,
            tool_cpu_ns,
            tool_lines,
            foreign,
            short: tool_lines.is_some_and(|n| n < mode.expected_lines(work, outcome.ops)),
        });
    }
    if let Some(mut t) = tool {
        t.stop();
        // Returns once both reader threads have seen the end of their pipe
        // (an error, which is expected): the stderr tail is then complete.
        let _ = t.wait_for_line(|_| false, Duration::from_secs(5));
        if mode.is_watcher() {
            run.lost = t.stderr_tail().lines().filter_map(watcher_lost_total).max().unwrap_or(0);
        } else {
            run.lost += t.take_lines().iter().filter_map(|l| bpftrace_lost(l)).sum::<u64>();
        }
    }
    Ok((run, samples))
}

/// Starts the tool of `mode` (none for Off) and returns it once it is
/// attached: watcher says so; bpftrace's "Attaching N probes..." comes
/// before the attach is done, so a workload op of the worker's must show
/// up in its output first.
fn start_tool(mode: Mode, worker: &mut Worker) -> anyhow::Result<Option<Background>> {
    let (program, probe) = match mode {
        Mode::Off => return Ok(None),
        Mode::Watcher | Mode::WatcherDebug | Mode::WatcherAccept | Mode::WatcherLight => {
            let mut cmd = Command::new(watcher_binary());
            cmd.args(["watch", "--json", "--no-snapshot"]);
            // Not the bench's own RUST_LOG: debug attaches the kernel log.
            cmd.env("RUST_LOG", if mode == Mode::WatcherDebug { "debug" } else { "info" });
            if mode == Mode::WatcherAccept {
                cmd.arg("--accept");
            }
            if mode == Mode::WatcherLight {
                cmd.arg("--light");
            }
            eprintln!("xtask: bench overhead: starting {cmd:?}");
            let watcher = Background::start(
                "watcher",
                &mut cmd,
                Stdout::Count,
                |l| l.starts_with("watcher: ready:"),
                START_TIMEOUT,
            )?;
            return Ok(Some(watcher));
        }
        Mode::BpftraceListen => (BPFTRACE_LISTEN, Work::Bind),
        Mode::BpftraceAccept => (BPFTRACE_ACCEPT, Work::Accept),
    };
    eprintln!("xtask: bench overhead: starting bpftrace -B line -e '{program}'");
    // -B line: without it bpftrace's lines wait in its stdio buffer, and
    // the proof below would never arrive.
    let mut bpftrace = Background::start(
        "bpftrace",
        Command::new("/usr/bin/bpftrace").args(["-B", "line", "-e", program]),
        Stdout::Keep,
        |l| l.starts_with("Attaching "),
        START_TIMEOUT,
    )?;
    let pid = worker.pid().to_string();
    // Both programs print the pid as a field of its own.
    let ours = |l: &str| l.split_whitespace().take(2).any(|f| f == pid);
    // A probe every half second, for up to a minute: the first ones may
    // come before the attach is complete and never be seen.
    for _ in 0..120 {
        bpftrace.discard_queued();
        worker.run(probe, 1).context("running a probe workload")?;
        if bpftrace.wait_for_line(ours, Duration::from_millis(500))? {
            bpftrace.take_lines();
            return Ok(Some(bpftrace));
        }
    }
    bail!("bpftrace did not report the worker's {probe:?} within a minute; its stderr:\n{}", bpftrace.stderr_tail())
}

/// Waits until the tool has printed `expected` lines since `before`, or
/// printed nothing for SETTLE_QUIET (it lost records, or a line was not
/// one per op), at most SETTLE_MAX.
fn settle(tool: &Background, before: u64, expected: u64) {
    if expected == 0 {
        return;
    }
    let deadline = Instant::now() + SETTLE_MAX;
    let (mut last, mut last_change) = (tool.stdout_lines(), Instant::now());
    while Instant::now() < deadline {
        let lines = tool.stdout_lines();
        if lines - before >= expected {
            return;
        }
        if lines != last {
            (last, last_change) = (lines, Instant::now());
        } else if last_change.elapsed() >= SETTLE_QUIET {
            return;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// watcher's stderr warning "the kernel dropped N records (ring buffer
/// full; T in all)": T, the total since it started.
fn watcher_lost_total(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once("ring buffer full; ")?;
    rest.split_whitespace().next()?.parse().ok()
}

/// bpftrace's "Lost N events" (its perf buffer was full).
fn bpftrace_lost(line: &str) -> Option<u64> {
    line.strip_prefix("Lost ")?.split_whitespace().next()?.parse().ok()
}

/// Other watcher and bpftrace processes: a host where another tracer
/// already put every task on the syscall slow path has no true "off".
fn foreign_tracers(ours: Option<u32>) -> usize {
    let Ok(dir) = fs::read_dir("/proc") else {
        return 0;
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| Some(pid) != ours)
        .filter(|pid| {
            fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| matches!(c.trim_end(), "watcher" | "bpftrace"))
        })
        .count()
}

// ---- the report ----

fn short_work(work: Work) -> &'static str {
    match work {
        Work::Bind => "bind",
        Work::Accept => "accept",
        Work::Getppid => "getppid",
    }
}

/// ns per operation, the figure every median and ratio is taken of.
fn ns_per_op(s: &Sample) -> f64 {
    s.outcome.elapsed_ns as f64 / s.outcome.ops.max(1) as f64
}

/// A rate for (a) and (b) (ops/s), a time per call for (c).
fn show(work: Work, ns_per_op: f64) -> String {
    format!("{} {}", number(work, ns_per_op), unit(work))
}

fn number(work: Work, ns_per_op: f64) -> String {
    match work {
        Work::Bind | Work::Accept => thousands(1e9 / ns_per_op),
        Work::Getppid => format!("{ns_per_op:.1}"),
    }
}

fn unit(work: Work) -> &'static str {
    match work {
        Work::Bind => "ops/s",
        Work::Accept => "conn/s",
        Work::Getppid => "ns/call",
    }
}

fn figure(s: &Sample) -> String {
    show(s.work, ns_per_op(s))
}

fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn median(values: &mut [f64]) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// The slowdown: time per op under the mode ÷ with nothing attached (for a
/// rate, off's rate ÷ the mode's: the same number).
fn slowdown(mode_ns: f64, off_ns: f64) -> String {
    if off_ns <= 0.0 {
        return "–".to_owned();
    }
    format!("{:.2}×", mode_ns / off_ns)
}

/// What the mode adds to each operation, in time (negative: noise).
fn extra(mode_ns: f64, off_ns: f64) -> String {
    let d = mode_ns - off_ns;
    let sign = if d < 0.0 { "−" } else { "+" };
    format!("{sign}{}", duration(d.abs().round() as u64))
}

fn print_report(modes: &[Mode], samples: &[Sample], tool_runs: &BTreeMap<Mode, Vec<ToolRun>>) {
    let of = |mode: Mode, work: Work| samples.iter().filter(move |s| s.mode == mode && s.work == work);
    let median_of = |mode: Mode, work: Work, f: &dyn Fn(&Sample) -> Option<f64>| {
        median(&mut of(mode, work).filter_map(f).collect::<Vec<_>>())
    };
    let per_op = |mode: Mode, work: Work| median_of(mode, work, &|s| Some(ns_per_op(s)));
    // Each tool run against the mean of the off runs just before and
    // after it, then the median of those ratios.
    let paired = |mode: Mode, work: Work| {
        let off_at =
            |seq: usize| samples.iter().find(|s| s.seq == seq && s.mode == Mode::Off && s.work == work).map(ns_per_op);
        let mut ratios: Vec<f64> = of(mode, work)
            .filter_map(|s| {
                let around: Vec<f64> =
                    [s.seq.checked_sub(1).and_then(off_at), off_at(s.seq + 1)].into_iter().flatten().collect();
                (!around.is_empty()).then(|| ns_per_op(s) * around.len() as f64 / around.iter().sum::<f64>())
            })
            .collect();
        median(&mut ratios)
    };

    // Slowdowns at a glance.
    println!(
        "Median of the rounds and, in brackets, the slowdown: time per operation ÷ off's, each run against the \
         mean of the off runs just before and after it, median of the rounds (the paired column below):\n"
    );
    print!("| workload |");
    for m in modes {
        print!(" {} |", m.short());
    }
    println!();
    println!("|---|{}", "---|".repeat(modes.len()));
    for work in Work::ALL {
        let off = per_op(Mode::Off, work);
        print!("| {} |", work_label(work));
        for &m in modes {
            match (per_op(m, work), off) {
                (Some(v), _) if m == Mode::Off => print!(" {} |", show(work, v)),
                (Some(v), Some(_)) => {
                    print!(" {} ({}) |", show(work, v), paired(m, work).map_or("–".to_owned(), |r| format!("{r:.2}×")))
                }
                _ => print!(" – |"),
            }
        }
        println!();
    }
    println!();

    println!(
        "| workload | mode | runs | median | slowdown (medians) | slowdown (paired) | added per op | \
         runs: slowest – fastest | tool CPU per run | tool lines per run |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for work in Work::ALL {
        let off = per_op(Mode::Off, work);
        for &m in modes {
            let Some(v) = per_op(m, work) else { continue };
            let mut all: Vec<f64> = of(m, work).map(ns_per_op).collect();
            all.sort_by(f64::total_cmp);
            let spread = match (all.last(), all.first()) {
                (Some(&slow), Some(&fast)) => format!("{} – {}", number(work, slow), number(work, fast)),
                _ => "–".to_owned(),
            };
            let (ratio, added, pair) = match (off, paired(m, work)) {
                (Some(o), Some(p)) if m != Mode::Off => (slowdown(v, o), extra(v, o), format!("{p:.2}×")),
                _ => ("1.00×".to_owned(), "–".to_owned(), "1.00×".to_owned()),
            };
            let cpu = median_of(m, work, &|s| s.tool_cpu_ns.map(|n| n as f64))
                .map_or("–".to_owned(), |n| format!("{:.0} ms", n / 1e6));
            let lines = median_of(m, work, &|s| s.tool_lines.map(|n| n as f64)).map_or("–".to_owned(), thousands);
            println!(
                "| {} | {} | {} | {} | {ratio} | {pair} | {added} | {spread} | {cpu} | {lines} |",
                work_label(work),
                m.label(),
                all.len(),
                show(work, v)
            );
        }
    }
    println!();

    println!("- operations per run: {}", {
        let counts: Vec<String> = Work::ALL
            .iter()
            .filter_map(|&w| of(Mode::Off, w).next().map(|s| format!("{} {}", short_work(w), s.outcome.ops)))
            .collect();
        counts.join(", ")
    });
    for (mode, runs) in tool_runs {
        let mut starts: Vec<f64> = runs.iter().map(|r| r.start_ns as f64).collect();
        let lost: u64 = runs.iter().map(|r| r.lost).sum();
        let during: Vec<String> = Work::ALL
            .iter()
            .enumerate()
            .map(|(i, &w)| (w, runs.iter().map(|r| r.lost_during[i]).sum::<u64>()))
            .filter(|&(_, n)| n > 0)
            .map(|(w, n)| format!("{n} during {}", short_work(w)))
            .collect();
        let lost = if during.is_empty() { lost.to_string() } else { format!("{lost} ({})", during.join(", ")) };
        println!(
            "- {}: launch → ready {} (median of {} starts); records it reported lost: {lost}{}",
            mode.label(),
            median(&mut starts).map_or("–".to_owned(), |n| duration(n as u64)),
            runs.len(),
            runs.iter()
                .find_map(|r| r.ready_line.as_deref())
                .map_or(String::new(), |l| format!("; `{}`", l.split(" (").next().unwrap_or(l)))
        );
    }
    let missing: u64 = samples.iter().map(|s| s.outcome.missing).sum();
    if missing > 0 {
        println!("- connections the client made that the server never accepted (left out of the rates): {missing}");
    }
    let short: Vec<String> = samples
        .iter()
        .filter(|s| s.short)
        .map(|s| format!("{} during {}", s.mode.short(), short_work(s.work)))
        .collect();
    if !short.is_empty() {
        println!(
            "- runs in which the tool printed fewer lines than the workload made events (it missed some): {}",
            short.join(", ")
        );
    }
    let foreign: Vec<&Sample> = samples.iter().filter(|s| s.foreign > 0).collect();
    if foreign.is_empty() {
        println!("- no other watcher or bpftrace process ran on the host while the workloads ran");
    } else {
        println!(
            "- other watcher/bpftrace processes (not the bench's) were running at the start of {}/{} workload runs, \
             up to {} at once ({} of the runs with nothing of ours attached). Their hooks slow every mode, off \
             included, and a watcher watching the whole host also reports the bench's listeners, taking CPU from the \
             worker: the figures are noisier, and the ratios lower, than on a quiet host",
            foreign.len(),
            samples.len(),
            foreign.iter().map(|s| s.foreign).max().unwrap_or(0),
            foreign.iter().filter(|s| s.mode == Mode::Off).count()
        );
    }
    println!(
        "- tool CPU: user + system time of the tool's process (clock ticks, 10 ms) from a workload's start until it \
         had printed what the workload caused; the eBPF programs themselves run in the worker and count in its time"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing_and_figures() {
        assert_eq!(
            watcher_lost_total("WARN watcher: the kernel dropped 12 records (ring buffer full; 40 in all)"),
            Some(40)
        );
        assert_eq!(watcher_lost_total("watcher: ready: 30 programs attached"), None);
        assert_eq!(bpftrace_lost("Lost 1234 events"), Some(1234));
        assert_eq!(bpftrace_lost("123 456 789"), None);
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
        assert_eq!(slowdown(108.0, 100.0), "1.08×");
        assert_eq!(extra(1500.0, 1000.0), "+500 ns");
        assert_eq!(extra(900.0, 1000.0), "−100 ns");
        assert_eq!(Mode::WatcherAccept.expected_lines(Work::Accept, 10), 13);
        assert_eq!(Mode::WatcherDebug.expected_lines(Work::Bind, 10), 30);
    }
}
