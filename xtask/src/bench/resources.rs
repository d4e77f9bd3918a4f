//! `cargo xtask bench resources`: the CPU time and memory of watcher (as
//! `watch` and as `daemon`) and of a bpftrace one-liner, all running at
//! once on the same load, in phases: idle, a steady stream of short-lived
//! listeners, 100,000 listeners taken in and held, and their release.
use std::{
    collections::HashSet,
    fs,
    io::{Read as _, Write as _},
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Args as ClapArgs, value_parser};

use super::{
    background::{Background, Stdout, Usage},
    child::{ListenerChild, Plan},
    duration, ensure_tracefs,
    holder::{self, Holders},
    machine, monotonic_ns, print_machine, ratio,
};
use crate::util::watcher_binary;

#[derive(ClapArgs)]
pub struct Args {
    /// Length of the idle phase in s (nothing of the bench's happening).
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u64).range(1..=3600))]
    pub idle_secs: u64,
    /// Events a second `watcher watch` should print in the load phase: the
    /// generator opens and at once closes rate / 3 TCP listeners a second,
    /// each of which is three events (bind, listen, close).
    #[arg(long, default_value_t = 10_000, value_parser = value_parser!(u32).range(3..=1_000_000))]
    pub rate: u32,
    /// Length of the load phase in s.
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u64).range(1..=3600))]
    pub load_secs: u64,
    /// TCP listeners the holders open and keep open at once (on
    /// 127.0.0.2 and up, one address and process per share of at most the
    /// RLIMIT_NOFILE hard limit).
    #[arg(long, default_value_t = 100_000, value_parser = value_parser!(u32).range(1..=1_000_000))]
    pub live: u32,
    /// The holders open at most this many listeners a second in all (0: as
    /// fast as they can; a burst can fill the ring buffers, which is then
    /// counted).
    #[arg(long, default_value_t = 20_000, value_parser = value_parser!(u32).range(0..=10_000_000))]
    pub intake_rate: u32,
    /// Length of the held phase in s: every listener open, nothing else
    /// of the bench's happening.
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u64).range(1..=3600))]
    pub hold_secs: u64,
}

/// Phases wait at most this long, after their work is done, for every tool
/// to have reported it.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// ...or until no tool has printed a line about the bench's processes for
/// this long (a tool that lost records never reaches the count).
const QUIET: Duration = Duration::from_millis(1500);
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// The daemon serves /metrics from the thread that reads events: behind a
/// backlog it answers late, and the bench does not wait for it long.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// CPU time is counted in 10 ms clock ticks: no ratio of fewer than 10.
const MIN_CPU_FOR_RATIO_NS: u64 = 100_000_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Watch,
    Daemon,
    Bpftrace,
}

/// A process of the bench: the load generator or a holder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ours {
    Generator = 0,
    Holder = 1,
}

/// The bench's processes whose listeners the tools report.
struct Pids {
    generator: u32,
    holders: HashSet<u32>,
}

impl Pids {
    fn who(&self, pid: u32) -> Option<Ours> {
        if pid == self.generator {
            Some(Ours::Generator)
        } else if self.holders.contains(&pid) {
            Some(Ours::Holder)
        } else {
            None
        }
    }
}

/// The number after the first `"pid":` of a JSON line (`"ppid":` and
/// `"previous_pid":` do not match: the quote must come right before).
pub fn json_pid(line: &str) -> Option<u32> {
    let rest = &line[line.find("\"pid\":")? + 6..];
    rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())].parse().ok()
}

/// What a tool printed during a phase, about whom.
#[derive(Clone, Copy, Default)]
struct Tally {
    lines: u64,
    /// Lines naming the generator's / a holder's pid.
    of: [u64; 2],
    /// Listeners of theirs reported up (watch: `listen`; daemon:
    /// `listener_up`; bpftrace: a state change to LISTEN) and down
    /// (`close`, `listener_down`, a change from LISTEN).
    up: [u64; 2],
    down: [u64; 2],
    /// Records the tool reported lost (`lost` lines, watch and daemon).
    lost: u64,
    /// The daemon's `resynced` lines: after a loss it rebuilds its table
    /// from a fresh snapshot (sock_diag and a pass over /proc/*/fd).
    resynced: u64,
}

struct Tracked {
    kind: Kind,
    label: &'static str,
    bg: Background,
    tally: Tally,
    /// When the phase's last line about our processes came.
    last_ours: Instant,
}

impl Tracked {
    fn start(kind: Kind, label: &'static str, cmd: &mut Command) -> anyhow::Result<Self> {
        eprintln!("xtask: bench resources: starting {label}: {cmd:?}");
        let ready: fn(&str) -> bool = match kind {
            Kind::Watch | Kind::Daemon => |l| l.starts_with("watcher: ready:"),
            // Printed before the attach is complete: a test listener then
            // proves it live (see `prove_live`).
            Kind::Bpftrace => |l| l.starts_with("Attaching "),
        };
        let bg = Background::start(label, cmd, Stdout::Keep, ready, START_TIMEOUT)?;
        Ok(Self { kind, label, bg, tally: Tally::default(), last_ours: Instant::now() })
    }

    /// Counts the lines printed since the last call, and forgets them (the
    /// bench keeps no more than a fraction of a second of output).
    fn absorb(&mut self, pids: &Pids) {
        for line in self.bg.take_lines() {
            self.tally.lines += 1;
            if self.kind == Kind::Daemon && line.contains("\"event\":\"resynced\"") {
                self.tally.resynced += 1;
            }
            let Some((who, up, down)) = classify(self.kind, &line, pids, &mut self.tally.lost) else {
                continue;
            };
            let t = &mut self.tally;
            t.of[who as usize] += 1;
            t.up[who as usize] += u64::from(up);
            t.down[who as usize] += u64::from(down);
            self.last_ours = Instant::now();
        }
    }
}

/// Whose line it is (if ours), and whether it reports a listener up or down.
fn classify(kind: Kind, line: &str, pids: &Pids, lost: &mut u64) -> Option<(Ours, bool, bool)> {
    match kind {
        Kind::Watch | Kind::Daemon => {
            if line.contains("\"event\":\"lost\"") {
                *lost += serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("count")?.as_u64())
                    .unwrap_or(0);
                return None;
            }
            let who = pids.who(json_pid(line)?)?;
            let (up, down) = if kind == Kind::Watch {
                ("\"event\":\"listen\"", "\"event\":\"close\"")
            } else {
                ("\"event\":\"listener_up\"", "\"event\":\"listener_down\"")
            };
            Some((who, line.contains(up), line.contains(down)))
        }
        // "<nsecs> <pid> <sport> <newstate>"
        Kind::Bpftrace => {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [_, pid, _, newstate] = fields.as_slice() else {
                return None;
            };
            let who = pids.who(pid.parse().ok()?)?;
            let up = *newstate == "10";
            Some((who, up, !up))
        }
    }
}

/// One tool over one phase.
#[derive(Clone, Copy, Default)]
struct Measured {
    cpu_ns: u64,
    /// The phase's work (sleep, load, opening, closing), without the wait
    /// for every tool to have reported it.
    work_ns: u64,
    rss_kib: u64,
    /// VmHWM, reset at the phase's start: the phase's own peak.
    peak_rss_kib: u64,
    tally: Tally,
    /// Since the phase started, when the tool had reported all of the
    /// phase's listeners up (intake) or down (release).
    complete_after: Option<Duration>,
}

struct PhaseResult {
    name: &'static str,
    tools: Vec<Measured>,
    /// `watcher_live_listeners` and `watcher_records_lost_total` from the
    /// daemon's metrics at the end of the phase.
    live_listeners: Option<f64>,
    daemon_lost: Option<f64>,
}

/// A directory of ours under /tmp, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("xtask-bench-{name}-{}", std::process::id()));
        fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    // Both forks first, while the bench is single-threaded.
    let mut generator = ListenerChild::start()?;
    let mut holders = Holders::start(u64::from(args.live))?;
    let pids = Pids { generator: generator.pid(), holders: holders.pids().into_iter().collect() };
    let machine = machine();
    ensure_tracefs()?;

    let dir = TempDir::new("resources")?;
    let metrics_port = free_port()?;
    let config = dir.0.join("watcher.toml");
    fs::write(&config, daemon_config(metrics_port)).with_context(|| format!("writing {}", config.display()))?;

    let mut tools = vec![
        Tracked::start(
            Kind::Watch,
            "watcher watch --json --no-snapshot",
            Command::new(watcher_binary()).args(["watch", "--json", "--no-snapshot"]),
        )?,
        Tracked::start(
            Kind::Daemon,
            "watcher daemon",
            Command::new(watcher_binary()).arg("daemon").arg("--config").arg(&config),
        )?,
        Tracked::start(
            Kind::Bpftrace,
            "bpftrace one-liner",
            Command::new("/usr/bin/bpftrace").args(["-B", "line", "-e", BPFTRACE_PROGRAM]),
        )?,
    ];
    prove_live(&mut tools, &mut generator, &pids)?;
    let base_live = scrape(metrics_port).ok().map(|(live, _)| live);
    // Give the tools a moment to finish starting up (the daemon's first
    // metrics tick, bpftrace's last allocations) so the idle phase is idle.
    thread::sleep(Duration::from_secs(1));

    let mut phases = Vec::new();
    eprintln!("xtask: bench resources: idle for {} s", args.idle_secs);
    phases.push(phase(
        "idle",
        &mut tools,
        &pids,
        metrics_port,
        || {
            thread::sleep(Duration::from_secs(args.idle_secs));
            Ok(())
        },
        |_| true,
        Duration::ZERO,
    )?);

    let per_sec = (args.rate / 3).max(1);
    let plan = Plan {
        count: u32::try_from(u64::from(per_sec) * args.load_secs).context("too many listeners for the load phase")?,
        mean_interval_ns: 1_000_000_000 / u64::from(per_sec),
        hold_ns: 0,
        seed: monotonic_ns(),
    };
    eprintln!(
        "xtask: bench resources: load: {} listeners on 127.0.0.1, ~{per_sec} a second, each closed at once",
        plan.count
    );
    let mut made = Vec::new();
    let count = u64::from(plan.count);
    phases.push(phase(
        "load",
        &mut tools,
        &pids,
        metrics_port,
        || {
            made = generator.run(&plan)?;
            Ok(())
        },
        |t| t.up[Ours::Generator as usize] >= count && t.down[Ours::Generator as usize] >= count,
        SETTLE_TIMEOUT,
    )?);
    let load_secs = match (made.first(), made.last()) {
        (Some(a), Some(b)) => (b.close_ns - a.socket_ns) as f64 / 1e9,
        _ => 0.0,
    };

    eprintln!(
        "xtask: bench resources: intake: {} holders open {} listeners on 127.0.0.{}+ (at most {}/s)",
        pids.holders.len(),
        args.live,
        holder::FIRST_OCTET,
        args.intake_rate
    );
    let mut held = Vec::new();
    let live = u64::from(args.live);
    phases.push(phase(
        "intake",
        &mut tools,
        &pids,
        metrics_port,
        || {
            held = holders.open(live, 0, args.intake_rate)?;
            Ok(())
        },
        |t| t.up[Ours::Holder as usize] >= live,
        SETTLE_TIMEOUT,
    )?);
    if held.len() as u64 != live {
        bail!("the holders opened {} listeners, not {live}", held.len());
    }

    eprintln!("xtask: bench resources: holding {live} listeners for {} s", args.hold_secs);
    phases.push(phase(
        "held",
        &mut tools,
        &pids,
        metrics_port,
        || {
            thread::sleep(Duration::from_secs(args.hold_secs));
            Ok(())
        },
        |_| true,
        Duration::ZERO,
    )?);

    eprintln!("xtask: bench resources: release: the holders close them all");
    phases.push(phase(
        "release",
        &mut tools,
        &pids,
        metrics_port,
        || holders.close_all(),
        |t| t.down[Ours::Holder as usize] >= live,
        SETTLE_TIMEOUT,
    )?);
    let final_live = scrape(metrics_port).ok().map(|(live, _)| live);
    for t in &mut tools {
        // Warnings (loss, resyncs) explain odd figures; they go to stderr.
        let tail = t.bg.stderr_tail();
        let tail: Vec<&str> = tail.lines().rev().take(10).collect();
        eprintln!("xtask: bench resources: the last stderr lines of {}:", t.label);
        for line in tail.iter().rev() {
            eprintln!("  {line}");
        }
        t.bg.stop();
    }
    drop(holders);
    drop(generator);

    report(
        args,
        &machine,
        &phases,
        &Facts { load_secs, load_listeners: made.len(), holders: pids.holders.len(), base_live, final_live },
    );
    Ok(())
}

/// TCP listens and closes of listeners, host-wide like watcher's: the
/// state changes to and from LISTEN on the tracepoint watcher uses too.
const BPFTRACE_PROGRAM: &str = "tracepoint:sock:inet_sock_set_state \
     /args->protocol == 6 && (args->newstate == 10 || args->oldstate == 10)/ \
     { printf(\"%llu %d %d %d\\n\", nsecs, pid, args->sport, args->newstate); }";

/// The daemon's configuration: metrics on loopback, and one rule that
/// allows every loopback TCP listener, so that the bench's listeners are
/// expected ones (no alert each) as a service's would be.
fn daemon_config(metrics_port: u16) -> String {
    format!(
        "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n\
         [[allow]]\nname = \"bench loopback\"\nproto = \"tcp\"\nscope = \"loopback\"\n"
    )
}

/// A port free on 127.0.0.1 now (the kernel's pick), for the metrics.
fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0 to find a free port")?;
    Ok(listener.local_addr().context("reading the free port")?.port())
}

/// `watcher_live_listeners` and `watcher_records_lost_total` from a plain
/// HTTP GET of the daemon's /metrics.
fn scrape(port: u16) -> anyhow::Result<(f64, f64)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to the daemon's metrics on 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(SCRAPE_TIMEOUT)).context("setting a read time-out")?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .context("sending GET /metrics")?;
    let mut body = String::new();
    stream.read_to_string(&mut body).context("reading the daemon's /metrics")?;
    let value =
        |name: &str| body.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok());
    match (value("watcher_live_listeners"), value("watcher_records_lost_total")) {
        (Some(live), Some(lost)) => Ok((live, lost)),
        _ => bail!("the daemon's /metrics lacks watcher_live_listeners or watcher_records_lost_total:\n{body}"),
    }
}

/// "Attaching 1 probe..." (bpftrace) comes before the attach is complete,
/// and watcher's ready line is its own word: a test listener every tool
/// reports proves each live. No sleep stands in for readiness.
fn prove_live(tools: &mut [Tracked], generator: &mut ListenerChild, pids: &Pids) -> anyhow::Result<()> {
    let mut proven = vec![false; tools.len()];
    for _ in 0..30 {
        for t in tools.iter() {
            t.bg.discard_queued();
        }
        let probe = generator.probe()?;
        for (t, proven) in tools.iter_mut().zip(&mut proven) {
            if *proven {
                continue;
            }
            let kind = t.kind;
            *proven = t.bg.wait_for_line(
                |l| {
                    let mut lost = 0;
                    classify(kind, l, pids, &mut lost).is_some() && reports_port(kind, l, probe.port)
                },
                Duration::from_secs(2),
            )?;
        }
        if proven.iter().all(|&p| p) {
            // The lines so far are the probes': not part of any phase.
            for t in tools.iter_mut() {
                t.bg.take_lines();
            }
            return Ok(());
        }
    }
    let missing: Vec<&str> = tools.iter().zip(&proven).filter(|(_, p)| !**p).map(|(t, _)| t.label).collect();
    bail!("{} did not report a test listener within a minute", missing.join(", "))
}

fn reports_port(kind: Kind, line: &str, port: u16) -> bool {
    match kind {
        Kind::Watch | Kind::Daemon => line.contains(&format!("\"port\":{port},")),
        Kind::Bpftrace => line.split_whitespace().nth(2) == Some(&*port.to_string()),
    }
}

/// Runs `work` (in a thread) while counting every tool's output; then waits
/// (at most `settle`) until `done` holds for every tool or none has said
/// anything about our processes for QUIET. CPU time is taken over that
/// whole span, so a tool that lags is charged for catching up.
fn phase(
    name: &'static str,
    tools: &mut [Tracked],
    pids: &Pids,
    metrics_port: u16,
    work: impl FnOnce() -> anyhow::Result<()> + Send,
    done: impl Fn(&Tally) -> bool,
    settle: Duration,
) -> anyhow::Result<PhaseResult> {
    for t in tools.iter_mut() {
        t.absorb(pids);
        t.tally = Tally::default();
        reset_peak_rss(t.bg.pid())?;
    }
    let before: Vec<Usage> = tools.iter().map(|t| t.bg.usage()).collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    let mut complete_after = vec![None; tools.len()];
    let poll = |tools: &mut [Tracked], complete_after: &mut [Option<Duration>]| {
        for (t, c) in tools.iter_mut().zip(complete_after) {
            t.absorb(pids);
            if c.is_none() && done(&t.tally) {
                *c = Some(started.elapsed());
            }
        }
    };
    // The work times itself: the loop below may be slow to notice its end
    // while it counts a flood of lines.
    let work_ns = thread::scope(|s| {
        let worker = s.spawn(move || {
            let began = Instant::now();
            work().map(|()| began.elapsed().as_nanos() as u64)
        });
        while !worker.is_finished() {
            thread::sleep(Duration::from_millis(50));
            poll(tools, &mut complete_after);
        }
        worker.join().map_err(|_| anyhow::anyhow!("the {name} phase's work panicked"))?
    })
    .with_context(|| format!("the {name} phase"))?;
    let work_done = Instant::now();
    for t in tools.iter_mut() {
        t.last_ours = work_done;
    }
    loop {
        poll(tools, &mut complete_after);
        if complete_after.iter().all(Option::is_some)
            || work_done.elapsed() >= settle
            || tools.iter().all(|t| t.last_ours.elapsed() >= QUIET)
        {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let wall_ns = started.elapsed().as_nanos() as u64;
    let after: Vec<Usage> = tools.iter().map(|t| t.bg.usage()).collect::<anyhow::Result<_>>()?;
    // Scraped after the CPU window closed, so the scrape is not charged.
    let (live_listeners, daemon_lost) = match scrape(metrics_port) {
        Ok((live, lost)) => (Some(live), Some(lost)),
        Err(e) => {
            eprintln!("xtask: bench resources: {e:#}");
            (None, None)
        }
    };
    let measured = tools
        .iter()
        .zip(before.iter().zip(&after))
        .zip(&complete_after)
        .map(|((t, (b, a)), &complete_after)| Measured {
            cpu_ns: a.cpu_ns.saturating_sub(b.cpu_ns),
            work_ns,
            rss_kib: a.rss_kib,
            peak_rss_kib: a.peak_rss_kib,
            tally: t.tally,
            complete_after,
        })
        .collect();
    eprintln!("xtask: bench resources: {name} done in {}", duration(wall_ns));
    Ok(PhaseResult { name, tools: measured, live_listeners, daemon_lost })
}

/// Resets VmHWM to the current RSS (proc(5), clear_refs value 5), so the
/// peak read at the end of a phase is that phase's.
fn reset_peak_rss(pid: u32) -> anyhow::Result<()> {
    fs::write(format!("/proc/{pid}/clear_refs"), "5").with_context(|| format!("resetting the peak RSS of pid {pid}"))
}

struct Facts {
    load_secs: f64,
    load_listeners: usize,
    holders: usize,
    base_live: Option<f64>,
    final_live: Option<f64>,
}

fn report(args: &Args, machine: &[(String, String)], phases: &[PhaseResult], facts: &Facts) {
    println!(
        "## `cargo xtask bench resources --idle-secs {} --rate {} --load-secs {} --live {} --intake-rate {} --hold-secs {}`\n",
        args.idle_secs, args.rate, args.load_secs, args.live, args.intake_rate, args.hold_secs
    );
    print_machine(machine);
    println!();
    let labels = ["`watcher watch --json --no-snapshot`", "`watcher daemon`", "bpftrace one-liner"];
    println!(
        "| phase | tool | CPU % | CPU time | RSS at end (MiB) | peak RSS in phase (MiB) | CPU / bpftrace | \
         RSS / bpftrace | lines printed | reported all after |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for p in phases {
        let bpf = p.tools[2];
        for (i, m) in p.tools.iter().enumerate() {
            // Below MIN_CPU_FOR_RATIO_NS, a few clock ticks decide the ratio.
            let cpu_ratio = if i == 2 || bpf.cpu_ns.min(m.cpu_ns) < MIN_CPU_FOR_RATIO_NS {
                "–".to_owned()
            } else {
                ratio(m.cpu_ns, bpf.cpu_ns)
            };
            let rss_ratio = if i == 2 { "–".to_owned() } else { ratio(m.rss_kib, bpf.rss_kib.max(1)) };
            let all = match (p.name, m.complete_after) {
                ("idle" | "held", _) => "–".to_owned(),
                (_, Some(d)) => duration(d.as_nanos() as u64),
                (_, None) => "not all".to_owned(),
            };
            println!(
                "| {} | {} | {:.2} % | {} | {} | {} | {cpu_ratio} | {rss_ratio} | {} | {all} |",
                p.name,
                labels[i],
                m.cpu_ns as f64 * 100.0 / m.work_ns.max(1) as f64,
                duration(m.cpu_ns),
                mib(m.rss_kib),
                mib(m.peak_rss_kib),
                m.tally.lines
            );
        }
    }
    println!();
    println!(
        "CPU % = the tool's CPU time (user + system, all threads, from /proc/PID/stat) over the phase, including \
         any time it took after the phase's work to report all of it, ÷ the length of the work (the sleep, the \
         load, the opening or the closing): 100 % is one core. Peak RSS is VmHWM, reset (clear_refs) at the \
         phase's start. CPU / bpftrace is left out (–) when either CPU time is under 100 ms (10 clock ticks). \
         \"Reported all after\": from the phase's start until the tool had printed every listener \
         of the phase up (load: and down; release: down).\n"
    );
    let phase = |name: &str| phases.iter().find(|p| p.name == name);
    if let Some(p) = phase("idle") {
        println!("- idle: {} with nothing of the bench's happening", duration(p.tools[0].work_ns));
    }
    if let Some(p) = phase("load") {
        let secs = facts.load_secs.max(1e-9);
        let per_sec = |m: &Measured| m.tally.of[Ours::Generator as usize] as f64 / secs;
        let seen = |m: &Measured| {
            format!(
                "{}/{n} up, {}/{n} down",
                m.tally.up[Ours::Generator as usize],
                m.tally.down[Ours::Generator as usize],
                n = facts.load_listeners,
            )
        };
        println!(
            "- load: {} listeners opened and closed (127.0.0.1, kernel-chosen ports) in {:.2} s = {:.0} \
             listeners/s (asked: {}/s); lines about them per second of load: watch {:.0} (bind, listen and \
             close each), daemon {:.0}, bpftrace {:.0} (listen and close); listeners reported: watch {}, \
             daemon {}, bpftrace {}",
            facts.load_listeners,
            facts.load_secs,
            facts.load_listeners as f64 / secs,
            args.rate / 3,
            per_sec(&p.tools[0]),
            per_sec(&p.tools[1]),
            per_sec(&p.tools[2]),
            seen(&p.tools[0]),
            seen(&p.tools[1]),
            seen(&p.tools[2]),
        );
    }
    if let Some(p) = phase("intake") {
        let up = |m: &Measured| m.tally.up[Ours::Holder as usize];
        println!(
            "- intake: {} holder processes opened {} TCP listeners in {} (127.0.0.{}–127.0.0.{}, ports {}–{}, \
             one address per process); reported up: watch {}, daemon {}, bpftrace {}; the daemon's \
             `watcher_live_listeners`: {} before, {} after",
            facts.holders,
            args.live,
            duration(p.tools[0].work_ns),
            holder::FIRST_OCTET,
            usize::from(holder::FIRST_OCTET) + facts.holders - 1,
            holder::FIRST_PORT,
            holder::LAST_PORT,
            up(&p.tools[0]),
            up(&p.tools[1]),
            up(&p.tools[2]),
            gauge(facts.base_live),
            gauge(p.live_listeners),
        );
    }
    if let Some(p) = phase("held") {
        println!(
            "- held: {} listeners open for {}; the daemon's `watcher_live_listeners` at its end: {}",
            args.live,
            duration(p.tools[0].work_ns),
            gauge(p.live_listeners)
        );
    }
    if let Some(p) = phase("release") {
        println!(
            "- release: closing them all took {}; reported down: watch {}, daemon {}, bpftrace {} of {}; \
             `watcher_live_listeners` after: {}",
            duration(p.tools[0].work_ns),
            p.tools[0].tally.down[Ours::Holder as usize],
            p.tools[1].tally.down[Ours::Holder as usize],
            p.tools[2].tally.down[Ours::Holder as usize],
            args.live,
            gauge(facts.final_live)
        );
    }
    let sum = |i: usize, f: fn(&Tally) -> u64| phases.iter().map(|p| f(&p.tools[i].tally)).sum::<u64>();
    println!(
        "- records reported lost (`lost` lines): watch {}, daemon {} (`watcher_records_lost_total` at the last \
         scrape that answered: {}); the daemon's `resynced` lines: {}",
        sum(0, |t| t.lost),
        sum(1, |t| t.lost),
        gauge(phases.iter().rev().find_map(|p| p.daemon_lost)),
        sum(1, |t| t.resynced)
    );
    let foreign: Vec<String> = phases
        .iter()
        .map(|p| {
            let of = |m: &Measured| m.tally.lines - m.tally.of.iter().sum::<u64>();
            format!("{} {}/{}/{}", p.name, of(&p.tools[0]), of(&p.tools[1]), of(&p.tools[2]))
        })
        .collect();
    println!(
        "- lines about other processes than the bench's (other jobs on the machine), watch/daemon/bpftrace: {}",
        foreign.join(", ")
    );
}

fn gauge(v: Option<f64>) -> String {
    v.map_or_else(|| "?".to_owned(), |v| format!("{v:.0}"))
}

fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_classified() {
        let pids = Pids { generator: 10, holders: HashSet::from([20, 30]) };
        let pids = &pids;
        assert_eq!(json_pid(r#"{"ppid":3,"pid":20,"previous_pid":1}"#), Some(20));
        let mut lost = 0;
        let watch = r#"{"event":"listen","proto":"tcp","port":5,"pid":20,"tid":20}"#;
        assert!(matches!(classify(Kind::Watch, watch, pids, &mut lost), Some((Ours::Holder, true, false))));
        let daemon = r#"{"event":"listener_down","port":5,"pid":10,"previous_pid":20}"#;
        assert!(matches!(classify(Kind::Daemon, daemon, pids, &mut lost), Some((Ours::Generator, false, true))));
        assert!(classify(Kind::Watch, r#"{"event":"listen","pid":200,"x":1}"#, pids, &mut lost).is_none());
        assert!(classify(Kind::Watch, r#"{"event":"lost","count":7,"total":7}"#, pids, &mut lost).is_none());
        assert_eq!(lost, 7);
        assert!(matches!(
            classify(Kind::Bpftrace, "123 10 4000 7", pids, &mut lost),
            Some((Ours::Generator, false, true))
        ));
        assert!(reports_port(Kind::Bpftrace, "123 10 4000 10", 4000));
        assert!(reports_port(Kind::Daemon, daemon, 5));
    }
}
