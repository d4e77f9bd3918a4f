//! `cargo xtask bench latency`: for each listener, the time from the
//! child's return from listen() to each tool showing it.
use std::{collections::HashMap, time::Duration};

use super::{
    LatencyArgs, Streaming, Summary,
    child::{Listener, ListenerChild, Plan},
    duration, machine, monotonic_ns, print_machine, ratio, summarize,
    tools::{Collected, LineFilter, Poller, Snapshot, TraceEvent, WatchEvent, parse_ss},
};

/// bpftrace's nsecs is read inside listen(); the BOOTTIME→MONOTONIC
/// conversion is good to well under a microsecond, so this slack only
/// guards against rounding.
const BPFTRACE_SLACK_NS: u64 = 50_000;

pub fn run(args: &LatencyArgs) -> anyhow::Result<()> {
    // Forked first, while the bench has no other thread.
    let mut child = ListenerChild::start()?;
    let machine = machine();
    let pid = child.pid();
    let filters = (args.flood > 0).then(|| {
        (
            LineFilter::new(vec![format!("\"pid\":{pid},"), "\"event\":\"lost\"".to_owned()]),
            LineFilter::new(
                [format!(" {pid} "), "Attaching".to_owned(), "Lost".to_owned(), "ERROR".to_owned()].to_vec(),
            ),
        )
    });
    let mut streaming = Streaming::start_with(&mut child, filters.as_ref().map(|(w, b)| (w, b)))?;
    let flood = match args.flood {
        0 => None,
        rate => Some(Flood::start(rate, args)?),
    };

    let pollers = (!args.no_ss).then(|| {
        (
            Poller::start(
                "ss -ltnH every 100 ms",
                "/usr/bin/ss",
                &["-ltnH"],
                Duration::from_millis(100),
                parse_ss,
                pid,
            ),
            Poller::start("ss -ltnH every 1 s", "/usr/bin/ss", &["-ltnH"], Duration::from_secs(1), parse_ss, pid),
        )
    });
    let plan = Plan {
        count: args.count,
        mean_interval_ns: args.interval_ms * 1_000_000,
        hold_ns: args.hold_ms * 1_000_000,
        seed: monotonic_ns(),
    };
    eprintln!(
        "xtask: bench latency: {} listeners on 127.0.0.1, one every ~{} ms, each open {} ms (about {} s)",
        args.count,
        args.interval_ms,
        args.hold_ms,
        (u64::from(args.count) * args.interval_ms + args.hold_ms).div_ceil(1000)
    );
    if args.hold_ms <= 1100 && !args.no_ss {
        eprintln!(
            "xtask: bench latency: warning: listeners held {} ms can close before the 1 s ss poller runs",
            args.hold_ms
        );
    }
    let flood_before = filters.as_ref().map(|(w, b)| (w.dropped(), b.dropped()));
    let run_started = monotonic_ns();
    let listeners = child.run(&plan);
    let run_ns = monotonic_ns() - run_started;
    let flooded = filters.as_ref().map(|(w, b)| (w.dropped(), b.dropped()));
    drop(flood);
    // The pollers stop (and the tools below) even when the run failed.
    let polled = pollers.map(|(fast, slow)| (fast.finish(), slow.finish()));
    let listeners = listeners?;
    let (fast, slow) = match polled {
        Some((fast, slow)) => (fast?, slow?),
        None => (Vec::new(), Vec::new()),
    };
    streaming.finish(Duration::from_secs(10), |c| {
        c.watcher.len() >= listeners.len() && c.bpftrace.len() >= listeners.len()
    })?;
    drop(child);

    let mut report = Report::new(&listeners, &streaming.seen, &fast, &slow);
    if args.no_ss {
        report.rows.retain(|row| !row.tool.contains("ss -ltnH"));
    }
    println!(
        "## `cargo xtask bench latency --count {} --interval-ms {} --hold-ms {}{}{}`\n",
        args.count,
        args.interval_ms,
        args.hold_ms,
        if args.no_ss { " --no-ss" } else { "" },
        if args.flood > 0 { format!(" --flood {}", args.flood) } else { String::new() }
    );
    print_machine(&machine);
    println!("- bpftrace program: `{}`", streaming.bpftrace_program);
    if let (Some((w0, b0)), Some((w1, b1))) = (flood_before, flooded) {
        let per_s = |n: u64| n as f64 * 1e9 / run_ns as f64;
        println!(
            "- flood: {} records/s asked of a C loop of socket+bind+listen+close (another process); while the \
             listeners were timed ({:.1} s) the bench read {:.0} other lines/s from watcher (every record is a line) \
             and {:.0} from bpftrace (a line per listen)",
            args.flood,
            run_ns as f64 / 1e9,
            per_s(w1 - w0),
            per_s(b1 - b0)
        );
    }
    println!();
    report.print(listeners.len(), &streaming.seen, (!args.no_ss).then_some((fast.len(), slow.len())));
    Ok(())
}

struct Row {
    tool: &'static str,
    measured_at: &'static str,
    /// Signed ns from listen() return, one per listener the tool showed.
    latencies: Vec<i64>,
}

struct Report {
    rows: Vec<Row>,
    /// watcher: kernel event (ktime_ns) → userspace decode (seen_ktime_ns).
    watcher_kernel_to_user: Vec<i64>,
    /// bpftrace: kernel event (nsecs) → line read by the bench.
    bpftrace_kernel_to_line: Vec<i64>,
    /// How long the child's listen() call took, clock read to clock read.
    listen_call: Vec<i64>,
    /// bpftrace events whose nsecs (as MONOTONIC) fall inside the listen() call.
    bpftrace_inside_listen: usize,
}

impl Report {
    fn new(listeners: &[Listener], seen: &Collected, fast: &[Snapshot], slow: &[Snapshot]) -> Self {
        let mut watcher_by_port: HashMap<u16, Vec<&WatchEvent>> = HashMap::new();
        for e in &seen.watcher {
            watcher_by_port.entry(e.port).or_default().push(e);
        }
        let mut bpftrace_by_port: HashMap<u16, Vec<&TraceEvent>> = HashMap::new();
        for e in &seen.bpftrace {
            bpftrace_by_port.entry(e.port).or_default().push(e);
        }
        let mut seen_rows = [Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        let mut watcher_kernel_to_user = Vec::new();
        let mut bpftrace_kernel_to_line = Vec::new();
        let mut bpftrace_inside_listen = 0;
        for l in listeners {
            let after = l.after_ns as i64;
            // watcher's ktime_ns is read inside listen(): it must fall in the call.
            if let Some(e) = watcher_by_port
                .get(&l.port)
                .and_then(|v| v.iter().find(|e| (l.before_ns..=l.after_ns).contains(&e.ktime_ns)))
            {
                seen_rows[0].push(e.seen_ns as i64 - after);
                seen_rows[1].push(e.read_ns as i64 - after);
                watcher_kernel_to_user.push(e.seen_ns as i64 - e.ktime_ns as i64);
            }
            if let Some(e) = bpftrace_by_port.get(&l.port).and_then(|v| {
                v.iter().find(|e| {
                    (l.before_ns.saturating_sub(BPFTRACE_SLACK_NS)..=l.after_ns + BPFTRACE_SLACK_NS)
                        .contains(&e.ktime_ns)
                })
            }) {
                seen_rows[2].push(e.read_ns as i64 - after);
                bpftrace_kernel_to_line.push(e.read_ns as i64 - e.ktime_ns as i64);
                if (l.before_ns..=l.after_ns).contains(&e.ktime_ns) {
                    bpftrace_inside_listen += 1;
                }
            }
            for (row, snapshots) in [(3, fast), (4, slow)] {
                if let Some(s) = first_showing(snapshots, l) {
                    seen_rows[row].push(s.end_ns as i64 - after);
                }
            }
        }
        let [w_seen, w_read, bt, fast, slow] = seen_rows;
        Self {
            rows: vec![
                Row {
                    tool: "watcher",
                    measured_at: "`seen_ktime_ns` (userspace decoded the record)",
                    latencies: w_seen,
                },
                Row { tool: "watcher", measured_at: "its JSON line read by the bench", latencies: w_read },
                Row { tool: "bpftrace one-liner", measured_at: "its line read by the bench", latencies: bt },
                Row {
                    tool: "`ss -ltnH` every 100 ms",
                    measured_at: "output of the first run listing the port read",
                    latencies: fast,
                },
                Row {
                    tool: "`ss -ltnH` every 1 s",
                    measured_at: "output of the first run listing the port read",
                    latencies: slow,
                },
            ],
            watcher_kernel_to_user,
            bpftrace_kernel_to_line,
            bpftrace_inside_listen,
            listen_call: listeners.iter().map(|l| (l.after_ns - l.before_ns) as i64).collect(),
        }
    }

    /// `polls`: the `ss` runs at 100 ms and 1 s; None when they were left out.
    fn print(&self, total: usize, seen: &Collected, polls: Option<(usize, usize)>) {
        let base = summarize(&self.rows[0].latencies);
        println!(
            "| tool | latency measured at | seen | p50 | p99 | max | p50 / watcher | p99 / watcher | max / watcher |"
        );
        println!("|---|---|---|---|---|---|---|---|---|");
        for row in &self.rows {
            let cells = match summarize(&row.latencies) {
                Some(s) => {
                    let vs = |f: fn(&Summary) -> u64| base.as_ref().map_or("–".to_owned(), |b| ratio(f(&s), f(b)));
                    [
                        signed(s.p50, &s),
                        signed(s.p99, &s),
                        signed(s.max, &s),
                        vs(|s| s.p50),
                        vs(|s| s.p99),
                        vs(|s| s.max),
                    ]
                }
                None => ["–", "–", "–", "–", "–", "–"].map(str::to_owned),
            };
            println!(
                "| {} | {} | {}/{total} | {} |",
                row.tool,
                row.measured_at,
                row.latencies.len(),
                cells.join(" | ")
            );
        }
        println!();
        let negatives: Vec<String> = self
            .rows
            .iter()
            .filter_map(|r| summarize(&r.latencies).filter(|s| s.negative > 0).map(|s| (r, s)))
            .map(|(r, s)| format!("{} at {}: {}/{}", r.tool, r.measured_at, s.negative, r.latencies.len()))
            .collect();
        if !negatives.is_empty() {
            println!(
                "Some listeners were shown before the child, back from listen(), had read its clock (a negative latency, \
                 counted as 0; a percentile that falls among them reads \"≤ 0\"): {}.\n",
                negatives.join("; ")
            );
        }
        let breakdown = |v: &[i64]| {
            summarize(v).map_or("–".to_owned(), |s| {
                format!("p50 {}, p99 {}, max {}", duration(s.p50), duration(s.p99), duration(s.max))
            })
        };
        println!("- the child's listen() call (clock read before → after): {}", breakdown(&self.listen_call));
        println!(
            "- watcher, kernel event (`ktime_ns`) → userspace decode (`seen_ktime_ns`): {}",
            breakdown(&self.watcher_kernel_to_user)
        );
        println!("- bpftrace, kernel event (`nsecs`) → line read: {}", breakdown(&self.bpftrace_kernel_to_line));
        println!(
            "- clock check: {}/{} bpftrace `nsecs` values, taken as CLOCK_BOOTTIME and converted to CLOCK_MONOTONIC, fall inside the child's listen() call",
            self.bpftrace_inside_listen,
            self.rows[2].latencies.len()
        );
        println!(
            "- records watcher reported lost: {}; bpftrace's other output: {}",
            seen.watcher_lost,
            if seen.bpftrace_other.is_empty() { "none".to_owned() } else { seen.bpftrace_other.join(" / ") }
        );
        match polls {
            Some((fast, slow)) => println!("- ss runs: {fast} at 100 ms, {slow} at 1 s"),
            None => println!("- ss: not run (`--no-ss`)"),
        }
    }
}

/// The first poll whose output lists the listener's port and that could
/// have seen it: it ended after listen() was called and began before the
/// listener closed (a port can be reused once closed).
fn first_showing<'a>(snapshots: &'a [Snapshot], l: &Listener) -> Option<&'a Snapshot> {
    snapshots
        .iter()
        .filter(|s| s.end_ns > l.before_ns && s.start_ns < l.close_ns && s.ports.contains(&l.port))
        .min_by_key(|s| s.end_ns)
}

/// A percentile of clamped latencies: 0 with negatives recorded means "≤ 0".
fn signed(value: u64, s: &Summary) -> String {
    if value == 0 && s.negative > 0 { "≤ 0".to_owned() } else { duration(value) }
}

/// The flood's generator: xtask/src/bench/callgrind_loop.c, compiled here,
/// opening listeners at a third of the records asked for (each makes a
/// bind, a listen and a close record), in a process of its own, from when
/// it starts until it is dropped (SIGKILL).
struct Flood {
    child: std::process::Child,
    dir: std::path::PathBuf,
}

impl Flood {
    fn start(records_per_s: u32, args: &LatencyArgs) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let dir = std::env::temp_dir().join(format!("watcher-bench-flood-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let binary = crate::util::compile_c("xtask/src/bench/callgrind_loop.c", &dir, "flood")?;
        let ops_per_s = u64::from(records_per_s).div_ceil(3);
        // Enough for the whole run and a minute more; it is killed at the end.
        let secs = (u64::from(args.count) * args.interval_ms + args.hold_ms) / 1000 + 60;
        let go = dir.join("go");
        std::fs::write(&go, b"").context("the flood's start file")?;
        let child = std::process::Command::new(&binary)
            .arg((ops_per_s * secs).to_string())
            .arg(ops_per_s.to_string())
            .arg(&go)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        eprintln!("xtask: bench latency: flood of {ops_per_s} listeners/s ({records_per_s} records/s) started");
        // Under way before the first listener is timed.
        std::thread::sleep(Duration::from_millis(500));
        Ok(Self { child, dir })
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
