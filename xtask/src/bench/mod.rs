//! `cargo xtask bench latency | catch-rate | overhead | throughput |
//! resources | start | kill`: watcher measured against its peers (bpftrace
//! one-liners, `ss` and `lsof`) in the same run, on sockets opened by
//! separate processes. See BENCHMARKS.md.
mod background;
mod catch_rate;
mod child;
mod forked;
mod guest_peers;
mod holder;
mod kill;
mod latency;
mod overhead;
mod resources;
mod start;
mod throughput;
mod tools;

use std::{fs, path::Path, process::Command, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, value_parser};
use hdrhistogram::Histogram;

use self::{
    child::ListenerChild,
    tools::{Collected, Hub, LineFilter, Proc, Tool},
};
use crate::util::{output, watcher_binary};

#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub which: Which,
}

#[derive(Subcommand)]
pub enum Which {
    /// Time from listen() returning to each tool showing the listener:
    /// watcher, bpftrace, `ss -ltnH` every 100 ms and every 1 s.
    Latency(LatencyArgs),
    /// How many sub-millisecond listeners each tool sees: watcher,
    /// bpftrace, `ss -ltnH` every 100 ms, `lsof` polled back to back.
    CatchRate(CatchRateArgs),
    /// What watching costs other programs: a bind+listen+close loop,
    /// loopback accepts per second and a getppid loop, with nothing
    /// attached, with watcher (default hooks, then every hook) and with
    /// bpftrace one-liners on the same hooks.
    Overhead(overhead::Args),
    /// The highest listener-event rate watcher reads with zero loss, and
    /// above it, loss counted exactly (made = read + counted lost), beside
    /// bpftrace's one-liner: both attached at once, or with `--alone` each
    /// alone in a pass of its own.
    Throughput(throughput::Args),
    /// watcher's CPU and RSS at idle, at 10,000 events/s and with 100,000
    /// live listeners in its table, beside bpftrace's.
    Resources(resources::Args),
    /// On Debian 12's kernel in the qemu guest: watcher beside bcc's
    /// bindsnoop, solisten and tcpaccept on one workload (what each
    /// reports, with which columns), and a getppid loop's cost with each.
    GuestPeers,
    /// Launch to attached; time to snapshot 10,000 existing listeners,
    /// against `ss -lntup -p` and `lsof -i -n -P` on the same set.
    Start(start::Args),
    /// kill_unexpected on a listener that daemonizes: listen() to its port
    /// closed, beside bpftrace's in-kernel signal() on the same tracepoint.
    Kill(kill::Args),
}

#[derive(Args)]
pub struct LatencyArgs {
    /// TCP listeners to open on 127.0.0.1.
    #[arg(long, default_value_t = 1000, value_parser = value_parser!(u32).range(1..=100_000))]
    pub count: u32,
    /// Mean time between two openings in ms (each gap is drawn uniformly
    /// between half and one and a half times this).
    #[arg(long, default_value_t = 10, value_parser = value_parser!(u64).range(1..=60_000))]
    pub interval_ms: u64,
    /// How long each listener stays open in ms. It must exceed the slowest
    /// poll period (1 s) plus one `ss` run, or `ss` can miss listeners.
    #[arg(long, default_value_t = 2000, value_parser = value_parser!(u64).range(1..=600_000))]
    pub hold_ms: u64,
    /// Leave the `ss` pollers out. Each run of `ss` is a process that holds
    /// a core for milliseconds; on a small machine it then delays the
    /// streaming tools' readers, and their tails are partly its. Without
    /// it, the tails are the tools' own.
    #[arg(long)]
    pub no_ss: bool,
    /// A flood of about this many records a second from another process
    /// while the listeners are timed: a C loop of socket, bind, listen and
    /// close on 127.0.0.1 (three records each: bind, listen, close). Both
    /// tools then watch every process (watcher without `--pid`, bpftrace
    /// without its pid filter) and print the flood's lines too, which the
    /// bench reads and counts: the listeners' line-read delay under load.
    /// 0: no flood.
    #[arg(long, default_value_t = 0, value_parser = value_parser!(u32).range(0..=3_000_000))]
    pub flood: u32,
}

#[derive(Args)]
pub struct CatchRateArgs {
    /// Listeners to open, each closed right after listen() returns.
    #[arg(long, default_value_t = 10_000, value_parser = value_parser!(u32).range(1..=1_000_000))]
    pub count: u32,
    /// Mean time between two openings in µs (jittered ±50%).
    #[arg(long, default_value_t = 1000, value_parser = value_parser!(u64).range(1..=10_000_000))]
    pub interval_us: u64,
    /// Pause between two `lsof` runs in ms (0: back to back).
    #[arg(long, default_value_t = 0, value_parser = value_parser!(u64).range(0..=60_000))]
    pub lsof_period_ms: u64,
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benches load eBPF programs (watcher, bpftrace): run them as root");
    }
    if !watcher_binary().exists() {
        bail!("{} is missing: `cargo xtask build` first", watcher_binary().display());
    }
    for tool in ["/usr/bin/bpftrace", "/usr/bin/ss", "/usr/bin/lsof"] {
        if !Path::new(tool).exists() {
            bail!("{tool} is missing: `cargo xtask setup --test-deps` installs it");
        }
    }
    match args.which {
        Which::Latency(a) => latency::run(&a),
        Which::CatchRate(a) => catch_rate::run(&a),
        Which::Overhead(a) => overhead::run(&a),
        Which::Throughput(a) => throughput::run(&a),
        Which::Resources(a) => resources::run(&a),
        Which::Start(a) => start::run(&a),
        Which::GuestPeers => guest_peers::run(),
        Which::Kill(a) => kill::run(&a),
    }
}

/// CLOCK_MONOTONIC in ns: the clock of watcher's ktime_ns and seen_ktime_ns.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CLOCK_BOOTTIME − CLOCK_MONOTONIC. bpftrace 0.17 compiles `nsecs` to
/// bpf_ktime_get_boot_ns() (helper 125, CLOCK_BOOTTIME), not
/// bpf_ktime_get_ns(); the offset is the time the machine spent suspended.
/// Read between two monotonic reads, the closest of a few tries.
fn boot_offset_ns() -> i64 {
    (0..5)
        .map(|_| {
            let a = monotonic_ns();
            let boot = clock_ns(libc::CLOCK_BOOTTIME);
            let b = monotonic_ns();
            (b - a, boot as i64 - (a / 2 + b / 2) as i64)
        })
        .min_by_key(|&(spread, _)| spread)
        .map(|(_, offset)| offset)
        .unwrap_or(0)
}

/// watcher and bpftrace, attached and proven to see the listener child.
struct Streaming {
    hub: Hub,
    seen: Collected,
    watcher: Proc,
    bpftrace: Proc,
    bpftrace_program: String,
}

const START_TIMEOUT: Duration = Duration::from_secs(120);

impl Streaming {
    fn start(child: &mut ListenerChild) -> anyhow::Result<Self> {
        Self::start_with(child, None)
    }

    /// [`Streaming::start`]; with `every_process`, neither tool filters on
    /// the child's pid in the kernel, and their readers keep only the lines
    /// that name it (and watcher's loss reports), counting the others in the
    /// filters given.
    fn start_with(
        child: &mut ListenerChild,
        every_process: Option<(&LineFilter, &LineFilter)>,
    ) -> anyhow::Result<Self> {
        ensure_tracefs()?;
        let pid = child.pid();
        let hub = Hub::new();
        let mut seen = Collected::new(pid, boot_offset_ns());

        let mut args = vec!["watch".to_owned(), "--json".to_owned()];
        if every_process.is_none() {
            args.extend(["--pid".to_owned(), pid.to_string()]);
        }
        eprintln!("xtask: bench: starting watcher {}", args.join(" "));
        let watcher = Proc::spawn(
            Tool::Watcher,
            Command::new(watcher_binary()).args(&args),
            &hub,
            every_process.map(|(watcher, _)| watcher.clone()),
        )?;
        if !hub.wait_until(&mut seen, START_TIMEOUT, |c| c.watcher_ready)? {
            bail!("watcher did not say it was ready within {START_TIMEOUT:?}: {}", seen.stderr_tail(Tool::Watcher));
        }

        // Same kernel-side filter as watcher's --pid: only the child's
        // TCP sockets entering LISTEN.
        let pid_filter = if every_process.is_some() { String::new() } else { format!(" && pid == {pid}") };
        let program = format!(
            "tracepoint:sock:inet_sock_set_state /args->newstate == 10 && args->protocol == 6{pid_filter}/ \
             {{ printf(\"%llu %d %d\\n\", nsecs, pid, args->sport); }}"
        );
        eprintln!("xtask: bench: starting bpftrace -B line -e '{program}'");
        let bpftrace = Proc::spawn(
            Tool::Bpftrace,
            Command::new("/usr/bin/bpftrace").args(["-B", "line", "-e", &program]),
            &hub,
            every_process.map(|(_, bpftrace)| bpftrace.clone()),
        )?;
        if !hub.wait_until(&mut seen, START_TIMEOUT, |c| c.bpftrace_attached)? {
            bail!("bpftrace did not attach within {START_TIMEOUT:?}: {}", seen.stderr_tail(Tool::Bpftrace));
        }

        // "Attaching 1 probe..." comes before the attach is done: a
        // listener both tools report proves both are live.
        let mut proven = false;
        for _ in 0..30 {
            let probe = child.probe()?;
            proven = hub.wait_until(&mut seen, Duration::from_secs(2), |c| {
                c.watcher.iter().any(|e| e.port == probe.port && e.ktime_ns >= probe.before_ns)
                    && c.bpftrace.iter().any(|e| e.port == probe.port)
            })?;
            if proven {
                break;
            }
        }
        if !proven {
            bail!("watcher and bpftrace did not both report a test listener within a minute");
        }
        hub.drain(&mut seen)?;
        seen.clear_events();
        Ok(Self { hub, seen, watcher, bpftrace, bpftrace_program: program })
    }

    /// Waits (at most `timeout`) until `done`, then stops both tools.
    fn finish(&mut self, timeout: Duration, done: impl Fn(&Collected) -> bool) -> anyhow::Result<()> {
        self.hub.wait_until(&mut self.seen, timeout, done)?;
        self.hub.drain(&mut self.seen)?;
        self.watcher.stop();
        self.bpftrace.stop();
        Ok(())
    }
}

/// aya and bpftrace read tracepoint ids from tracefs, which is not mounted
/// at boot on these machines.
fn ensure_tracefs() -> anyhow::Result<()> {
    if Path::new("/sys/kernel/tracing/events").exists() || Path::new("/sys/kernel/debug/tracing/events").exists() {
        return Ok(());
    }
    let status = Command::new("mount")
        .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
        .status()
        .context("running mount -t tracefs")?;
    if !status.success() {
        bail!("mounting tracefs on /sys/kernel/tracing failed: {status}");
    }
    Ok(())
}

/// The machine, for the report: cores, kernel, CPU, tool versions, load.
fn machine() -> Vec<(String, String)> {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':').map(|(_, v)| v.trim().to_owned()))
        .unwrap_or_else(|| "?".to_owned());
    let first_line = |cmd: &mut Command| {
        output(cmd)
            .and_then(|o| o.lines().find(|l| !l.trim().is_empty()).map(|l| l.trim().to_owned()))
            .unwrap_or_else(|| "?".to_owned())
    };
    vec![
        ("nproc".into(), first_line(&mut Command::new("nproc"))),
        ("uname -r".into(), first_line(Command::new("uname").arg("-r"))),
        ("CPU".into(), cpu),
        ("bpftrace".into(), first_line(Command::new("/usr/bin/bpftrace").arg("--version"))),
        ("ss".into(), first_line(Command::new("/usr/bin/ss").arg("-V"))),
        ("load average at start".into(), loadavg()),
    ]
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn print_machine(machine: &[(String, String)]) {
    for (k, v) in machine {
        println!("- {k}: {v}");
    }
    println!("- load average at end: {}", loadavg());
}

/// p50 / p99 / max of signed latencies in ns. Values below zero (a tool
/// that showed the event before the child's clock read after listen()
/// returned) are recorded as 0 and counted.
#[derive(Clone, Copy)]
struct Summary {
    negative: usize,
    p50: u64,
    p99: u64,
    max: u64,
}

fn summarize(values: &[i64]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let mut h = Histogram::<u64>::new(3).expect("3 significant figures is a valid precision");
    let mut negative = 0;
    for &v in values {
        if v < 0 {
            negative += 1;
        }
        h.record(v.max(0) as u64).expect("auto-resizing histogram");
    }
    Some(Summary {
        negative,
        p50: h.value_at_quantile(0.50),
        p99: h.value_at_quantile(0.99),
        // Exact, not the histogram's bucket edge.
        max: values.iter().copied().max().unwrap_or(0).max(0) as u64,
    })
}

/// 850 ns, 12.3 µs, 4.56 ms, 1.23 s.
fn duration(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

fn ratio(peer: u64, base: u64) -> String {
    if base == 0 {
        return "–".to_owned();
    }
    let r = peer as f64 / base as f64;
    if r >= 100.0 { format!("{r:.0}×") } else { format!("{r:.1}×") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_and_units() {
        let s = summarize(&[-5, 1000, 2000, 3000]).unwrap();
        assert_eq!(s.negative, 1);
        assert_eq!(s.max, 3000);
        assert_eq!(duration(850), "850 ns");
        assert_eq!(duration(12_345), "12.3 µs");
        assert_eq!(duration(4_560_000), "4.56 ms");
        assert_eq!(ratio(1_000_000, 10_000), "100×");
        assert_eq!(ratio(15, 10), "1.5×");
        assert!(summarize(&[]).is_none());
    }
}
