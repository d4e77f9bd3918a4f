//! `cargo xtask bench kill`: how long an unexpected listener that
//! daemonizes (tests/programs/daemonizing_listener.c: bind, listen, fork,
//! the parent exits, setsid, fork again) keeps its port, from listen() to
//! the port closed, over N runs: `watcher daemon` with `kill_unexpected`
//! (the kernel stops the caller inside listen(), userspace kills every
//! holder), beside a bpftrace one-liner that SIGKILLs the caller at the
//! same tracepoint (`signal()`, bpftrace's own in-kernel kill: no
//! allowlist, no report, no look for other holders).
//!
//! Both ends are the kernel's own clock at the tracepoint
//! `sock/inet_sock_set_state`: the socket entering LISTEN (inside listen())
//! and leaving it for CLOSE (when its last holder is gone). watcher prints
//! both as its `listen` and `close` lines (`ktime_ns`), bpftrace as
//! `nsecs`. Each run also says whether the program forked before it died
//! (its pid file) and, for watcher, whether `killed` named it.
use std::{
    collections::VecDeque,
    fs,
    io::{BufRead as _, BufReader},
    net::TcpListener,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc::{self, Receiver},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::value_parser;
use serde_json::Value;

use super::{duration, ensure_tracefs, machine, print_machine, summarize};
use crate::util::{compile_c, watcher_binary};

#[derive(clap::Args)]
pub struct Args {
    /// Runs of the daemonizing program per tool.
    #[arg(long, default_value_t = 100, value_parser = value_parser!(u32).range(1..=10_000))]
    pub runs: u32,
}

/// How long one run may take before it counts as a survivor.
const RUN_TIMEOUT: Duration = Duration::from_secs(5);
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// One run: listen → close in ns (None: the port stayed open), and the
/// processes the program made.
struct Run {
    held_ns: Option<u64>,
    processes: usize,
    killed_named: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    ensure_tracefs()?;
    let dir = std::env::temp_dir().join(format!("watcher-bench-kill-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    let program = compile_c("tests/programs/daemonizing_listener.c", &dir, "daemonizing_listener")?;
    let port = free_port()?;
    let machine = machine();

    let watcher = runs_under_watcher(&dir, &program, port, args.runs)?;
    let bpftrace = runs_under_bpftrace(&dir, &program, port, args.runs)?;
    let _ = fs::remove_dir_all(&dir);

    println!("## kill: listen() of a daemonizing listener to its port closed ({} runs each)\n", args.runs);
    print_machine(&machine);
    println!();
    println!("| tool | p50 | p99 | max | port left open | runs that forked | `killed` named it |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (name, runs, named) in
        [("watcher daemon, kill_unexpected", &watcher, true), ("bpftrace signal(\"SIGKILL\")", &bpftrace, false)]
    {
        let held: Vec<i64> = runs.iter().filter_map(|r| r.held_ns).map(|ns| ns as i64).collect();
        let open = runs.iter().filter(|r| r.held_ns.is_none()).count();
        let forked = runs.iter().filter(|r| r.processes > 1).count();
        let killed = if named {
            format!("{} of {}", runs.iter().filter(|r| r.killed_named).count(), runs.len())
        } else {
            "– (no report)".to_owned()
        };
        match summarize(&held) {
            Some(s) => println!(
                "| {name} | {} | {} | {} | {open} | {forked} | {killed} |",
                duration(s.p50),
                duration(s.p99),
                duration(s.max)
            ),
            None => println!("| {name} | – | – | – | {open} | {forked} | {killed} |"),
        }
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Every TCP port but `port` allowed, and every other kind of socket: the
/// daemon kills nothing on the host but the program.
fn config(port: u16) -> String {
    let mut rules = format!(
        "kill_unexpected = true\n\n[[allow]]\nname = \"below\"\nproto = \"tcp\"\nport = \"1-{}\"\n\n\
         [[allow]]\nname = \"above\"\nproto = \"tcp\"\nport = \"{}-65535\"\n",
        port - 1,
        port + 1
    );
    for proto in ["udp", "unix", "raw", "packet"] {
        rules.push_str(&format!("\n[[allow]]\nname = \"any {proto}\"\nproto = \"{proto}\"\n"));
    }
    rules
}

/// A tool's stdout, line by line, on a channel.
struct Lines {
    child: Child,
    lines: Receiver<String>,
    pending: VecDeque<String>,
}

impl Lines {
    fn spawn(cmd: &mut Command) -> anyhow::Result<Self> {
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().context("starting the tool")?;
        let stdout = child.stdout.take().context("the tool's stdout")?;
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines, pending: VecDeque::new() })
    }

    /// The next line for which `pick` says Some, within `timeout`; the
    /// lines before it are dropped.
    fn until<T>(&mut self, timeout: Duration, mut pick: impl FnMut(&str) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            let line = match self.pending.pop_front() {
                Some(l) => l,
                None => self.lines.recv_timeout(deadline.saturating_duration_since(Instant::now())).ok()?,
            };
            if let Some(found) = pick(&line) {
                return Some(found);
            }
        }
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Starts the program once; returns the pids it wrote and kills what is left.
fn start_program(program: &Path, port: u16, dir: &Path) -> anyhow::Result<Vec<u32>> {
    let pidfile = dir.join("pids");
    let _ = fs::remove_file(&pidfile);
    // Its parent is killed (or exits after its fork): the status is not the point.
    let _ = Command::new(program).arg(port.to_string()).arg(&pidfile).stderr(Stdio::null()).status()?;
    Ok(fs::read_to_string(&pidfile)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' ').and_then(|(_, pid)| pid.parse().ok()))
        .collect())
}

fn cleanup(pids: &[u32]) {
    for &pid in pids {
        // SAFETY: kill(2) on a process of the program; gone ones give ESRCH.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

fn runs_under_watcher(dir: &Path, program: &Path, port: u16, runs: u32) -> anyhow::Result<Vec<Run>> {
    let config_path = dir.join("watcher.toml");
    fs::write(&config_path, config(port))?;
    eprintln!("xtask: bench kill: watcher daemon --config {} (kill_unexpected, port {port})", config_path.display());
    let mut daemon = Lines::spawn(Command::new(watcher_binary()).arg("daemon").arg("--config").arg(&config_path))?;
    // Ready once it reports a new listener of ours (an allowed port); one
    // opened before its programs were attached is only in its snapshot.
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let marker = TcpListener::bind("127.0.0.1:0")?;
        let marker_port = marker.local_addr()?.port();
        let ready = daemon.until(Duration::from_secs(2), |l| {
            let e: Value = serde_json::from_str(l).ok()?;
            (e["event"] == "listen" && e["port"] == marker_port).then_some(())
        });
        if ready.is_some() {
            break;
        }
        if Instant::now() > deadline {
            bail!("watcher daemon did not report a listener within {START_TIMEOUT:?}");
        }
    }
    let mut out = Vec::new();
    for i in 0..runs {
        let pids = start_program(program, port, dir)?;
        let parent = pids.first().copied().unwrap_or(0);
        let (mut listen, mut close, mut killed) = (None, None, false);
        daemon.until(RUN_TIMEOUT, |l| {
            let e: Value = serde_json::from_str(l).ok()?;
            if e["port"] != port {
                return None;
            }
            match e["event"].as_str() {
                Some("listen") if e["pid"] == parent => listen = e["ktime_ns"].as_u64(),
                Some("close") if listen.is_some() => close = e["ktime_ns"].as_u64(),
                Some("killed") => {
                    killed = e["killed"].as_array().is_some_and(|k| k.iter().any(|p| p == parent));
                }
                Some("kill_failed") => return Some(()),
                _ => {}
            }
            (close.is_some() && killed).then_some(())
        });
        cleanup(&pids);
        let held_ns = listen.zip(close).map(|(l, c)| c.saturating_sub(l));
        out.push(Run { held_ns, processes: pids.len(), killed_named: killed });
        if held_ns.is_none() {
            eprintln!("xtask: bench kill: watcher run {i}: the port was not seen closed");
        }
    }
    Ok(out)
}

fn runs_under_bpftrace(dir: &Path, program: &Path, port: u16, runs: u32) -> anyhow::Result<Vec<Run>> {
    let script = format!(
        "tracepoint:sock:inet_sock_set_state /args->protocol == 6 && args->sport == {port} && args->newstate == 10/ \
         {{ signal(\"SIGKILL\"); printf(\"listen %d %llu\\n\", pid, nsecs); }} \
         tracepoint:sock:inet_sock_set_state /args->protocol == 6 && args->sport == {port} && args->oldstate == 10 && args->newstate == 7/ \
         {{ printf(\"close %d %llu\\n\", pid, nsecs); }} \
         tracepoint:sock:inet_sock_set_state /args->protocol == 6 && args->newstate == 10 && pid == {me}/ \
         {{ printf(\"ready\\n\"); }}",
        me = std::process::id()
    );
    eprintln!("xtask: bench kill: bpftrace --unsafe -B line -e '{script}'");
    let mut bpftrace = Lines::spawn(Command::new("/usr/bin/bpftrace").args(["--unsafe", "-B", "line", "-e", &script]))?;
    // Attached once it reports a listener of ours.
    let mut ready = false;
    for _ in 0..60 {
        let marker = TcpListener::bind("127.0.0.1:0")?;
        if bpftrace.until(Duration::from_secs(2), |l| (l == "ready").then_some(())).is_some() {
            ready = true;
            break;
        }
        drop(marker);
    }
    if !ready {
        bail!("bpftrace did not report a listener within two minutes");
    }
    let mut out = Vec::new();
    for i in 0..runs {
        let pids = start_program(program, port, dir)?;
        let parent = pids.first().copied().unwrap_or(0);
        let mut listen = None;
        let close = bpftrace.until(RUN_TIMEOUT, |l| {
            let mut words = l.split_whitespace();
            let (what, pid, ns) =
                (words.next()?, words.next()?.parse::<u32>().ok()?, words.next()?.parse::<u64>().ok()?);
            match what {
                "listen" if pid == parent => listen = Some(ns),
                "close" if listen.is_some() => return Some(ns),
                _ => {}
            }
            None
        });
        cleanup(&pids);
        let held_ns = listen.zip(close).map(|(l, c)| c.saturating_sub(l));
        out.push(Run { held_ns, processes: pids.len(), killed_named: false });
        if held_ns.is_none() {
            eprintln!("xtask: bench kill: bpftrace run {i}: the port was not seen closed");
        }
    }
    Ok(out)
}
