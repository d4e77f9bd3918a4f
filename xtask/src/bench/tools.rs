//! The tools under measurement: streaming ones (watcher, bpftrace) whose
//! every output line is stamped with CLOCK_MONOTONIC the moment the bench
//! reads it, and polled ones (ss, lsof) run on a fixed schedule.
use std::{
    collections::{HashSet, VecDeque},
    io::{BufRead as _, BufReader, Read},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, Sender, channel},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use super::{
    background::{spawn_piped, terminate},
    monotonic_ns,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    Watcher,
    Bpftrace,
}

impl Tool {
    pub fn name(self) -> &'static str {
        match self {
            Self::Watcher => "watcher",
            Self::Bpftrace => "bpftrace",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One line of a tool's output, or the end of that stream (`text: None`).
pub struct Msg {
    tool: Tool,
    stream: Stream,
    read_ns: u64,
    text: Option<String>,
}

/// Every reader thread sends here; the main thread is the only receiver.
pub struct Hub {
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
}

impl Hub {
    pub fn new() -> Self {
        let (tx, rx) = channel();
        Self { tx, rx }
    }

    /// Takes in lines until `done` holds, or gives up after `timeout`
    /// (Ok(false)). Fails if a tool's stdout ends: it has exited.
    pub fn wait_until(
        &self,
        seen: &mut Collected,
        timeout: Duration,
        done: impl Fn(&Collected) -> bool,
    ) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            if done(seen) {
                return Ok(true);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(msg) => seen.absorb(msg),
                Err(RecvTimeoutError::Timeout) => return Ok(done(seen)),
                Err(RecvTimeoutError::Disconnected) => unreachable!("the hub holds a sender"),
            }
            self.check_alive(seen)?;
        }
    }

    /// Takes in whatever has already arrived.
    pub fn drain(&self, seen: &mut Collected) -> anyhow::Result<()> {
        while let Ok(msg) = self.rx.try_recv() {
            seen.absorb(msg);
        }
        self.check_alive(seen)
    }

    /// A tool whose stdout ended has exited: fail with what it said on
    /// stderr (given half a second to arrive).
    fn check_alive(&self, seen: &mut Collected) -> anyhow::Result<()> {
        let Some(tool) = seen.exited else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_millis(500);
        while let Ok(msg) = self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            seen.absorb(msg);
        }
        bail!("{} exited; its stderr:\n{}", tool.name(), seen.stderr_tail(tool))
    }
}

/// A listen event as watcher printed it.
#[derive(Clone, Copy, Debug)]
pub struct WatchEvent {
    pub port: u16,
    pub ktime_ns: u64,
    pub seen_ns: u64,
    /// When the bench read the JSON line.
    pub read_ns: u64,
}

/// A LISTEN transition as the bpftrace one-liner printed it.
#[derive(Clone, Copy, Debug)]
pub struct TraceEvent {
    pub port: u16,
    /// bpftrace's `nsecs`, converted from CLOCK_BOOTTIME to CLOCK_MONOTONIC.
    pub ktime_ns: u64,
    pub read_ns: u64,
}

/// What the streaming tools said, filtered to the listener child's pid.
pub struct Collected {
    pid: u32,
    /// CLOCK_BOOTTIME − CLOCK_MONOTONIC, to convert bpftrace's nsecs.
    boot_offset_ns: i64,
    pub watcher_ready: bool,
    pub bpftrace_attached: bool,
    pub watcher: Vec<WatchEvent>,
    pub bpftrace: Vec<TraceEvent>,
    /// Records watcher reported the kernel dropped ("lost" events).
    pub watcher_lost: u64,
    /// Lines bpftrace printed that are not events (e.g. "Lost N events").
    pub bpftrace_other: Vec<String>,
    stderr: [VecDeque<String>; 2],
    /// The first tool whose stdout ended.
    exited: Option<Tool>,
}

impl Collected {
    pub fn new(pid: u32, boot_offset_ns: i64) -> Self {
        Self {
            pid,
            boot_offset_ns,
            watcher_ready: false,
            bpftrace_attached: false,
            watcher: Vec::new(),
            bpftrace: Vec::new(),
            watcher_lost: 0,
            bpftrace_other: Vec::new(),
            stderr: [VecDeque::new(), VecDeque::new()],
            exited: None,
        }
    }

    /// Forgets the events seen so far (those of the readiness handshake).
    pub fn clear_events(&mut self) {
        self.watcher.clear();
        self.bpftrace.clear();
        self.watcher_lost = 0;
        self.bpftrace_other.clear();
    }

    pub fn stderr_tail(&self, tool: Tool) -> String {
        let lines = &self.stderr[tool as usize];
        if lines.is_empty() {
            "(nothing on stderr)".to_owned()
        } else {
            lines.iter().cloned().collect::<Vec<_>>().join("\n")
        }
    }

    fn absorb(&mut self, msg: Msg) {
        let Some(text) = msg.text else {
            if msg.stream == Stream::Stdout {
                self.exited.get_or_insert(msg.tool);
            }
            return;
        };
        match (msg.tool, msg.stream) {
            (tool, Stream::Stderr) => {
                if tool == Tool::Watcher && text.starts_with("watcher: ready:") {
                    self.watcher_ready = true;
                }
                let tail = &mut self.stderr[tool as usize];
                if tail.len() == 40 {
                    tail.pop_front();
                }
                tail.push_back(text);
            }
            (Tool::Watcher, Stream::Stdout) => self.watcher_line(&text, msg.read_ns),
            (Tool::Bpftrace, Stream::Stdout) => self.bpftrace_line(text, msg.read_ns),
        }
    }

    fn watcher_line(&mut self, text: &str, read_ns: u64) {
        let Ok(v) = serde_json::from_str::<Value>(text) else {
            return;
        };
        let num = |k: &str| v.get(k).and_then(Value::as_u64);
        match v.get("event").and_then(Value::as_str) {
            Some("lost") => self.watcher_lost += num("count").unwrap_or(0),
            Some("listen") if num("pid") == Some(u64::from(self.pid)) && v["proto"] == "tcp" => {
                if let (Some(port), Some(ktime_ns), Some(seen_ns)) =
                    (num("port"), num("ktime_ns"), num("seen_ktime_ns"))
                {
                    self.watcher.push(WatchEvent { port: port as u16, ktime_ns, seen_ns, read_ns });
                }
            }
            _ => {}
        }
    }

    /// Lines are "<nsecs> <pid> <sport>".
    fn bpftrace_line(&mut self, text: String, read_ns: u64) {
        if text.starts_with("Attaching ") {
            self.bpftrace_attached = true;
            return;
        }
        let fields: Vec<&str> = text.split_whitespace().collect();
        let parsed = match fields.as_slice() {
            [ns, pid, port] => ns.parse::<u64>().ok().zip(pid.parse::<u32>().ok()).zip(port.parse::<u16>().ok()),
            _ => None,
        };
        match parsed {
            Some(((boot_ns, pid), port)) if pid == self.pid => self.bpftrace.push(TraceEvent {
                port,
                ktime_ns: (boot_ns as i64 - self.boot_offset_ns) as u64,
                read_ns,
            }),
            Some(_) => {}
            None if text.trim().is_empty() => {}
            None => self.bpftrace_other.push(text),
        }
    }
}

/// A tool started by the bench: stopped (SIGTERM, then SIGKILL) when
/// dropped, so that an error anywhere still cleans up; and killed by the
/// kernel if the bench dies first (PR_SET_PDEATHSIG).
pub struct Proc {
    tool: Tool,
    child: Option<Child>,
}

/// Which stdout lines a tool's reader hands on, and how many it dropped.
/// Under a flood both tools print tens of thousands of lines a second of
/// other processes: the reader stamps each one, keeps those that contain
/// `needle`, and only counts the others, so that neither the hub's queue
/// nor its JSON parsing grows with the flood.
#[derive(Clone)]
pub struct LineFilter {
    pub needles: Vec<String>,
    pub dropped: Arc<AtomicU64>,
}

impl LineFilter {
    pub fn new(needles: Vec<String>) -> Self {
        Self { needles, dropped: Arc::new(AtomicU64::new(0)) }
    }

    /// Lines dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn keeps(&self, line: &str) -> bool {
        self.needles.iter().any(|n| line.contains(n.as_str()))
    }
}

impl Proc {
    /// Starts `cmd`, its stdout lines passed through `filter` if given.
    pub fn spawn(tool: Tool, cmd: &mut Command, hub: &Hub, filter: Option<LineFilter>) -> anyhow::Result<Self> {
        let mut child = spawn_piped(tool.name(), cmd)?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        read_lines(tool, Stream::Stdout, stdout, hub.tx.clone(), filter);
        read_lines(tool, Stream::Stderr, stderr, hub.tx.clone(), None);
        Ok(Self { tool, child: Some(child) })
    }

    /// SIGTERM, up to 5 s to exit, then SIGKILL.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        terminate(&mut child, self.tool.name())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_lines(
    tool: Tool,
    stream: Stream,
    pipe: impl Read + Send + 'static,
    tx: Sender<Msg>,
    filter: Option<LineFilter>,
) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line);
            // Stamped the moment the line is in hand: when a user would see it.
            let read_ns = monotonic_ns();
            let text = match n {
                Ok(0) | Err(_) => None,
                Ok(_) => Some(line.trim_end_matches('\n').to_owned()),
            };
            let end = text.is_none();
            if let (Some(filter), Some(text)) = (&filter, &text)
                && !filter.keeps(text)
            {
                filter.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if tx.send(Msg { tool, stream, read_ns, text }).is_err() || end {
                return;
            }
        }
    });
}

/// One run of a polled tool: when it started, when its output had been
/// read in full (what a user would look at), and the 127.0.0.1 ports it
/// listed as listening.
pub struct Snapshot {
    pub start_ns: u64,
    pub end_ns: u64,
    pub ports: HashSet<u16>,
}

/// Runs a command every `period` on a fixed-rate schedule (a run that
/// overruns makes the next start at once; missed ticks are skipped).
pub struct Poller {
    pub label: String,
    stop: Sender<()>,
    handle: JoinHandle<anyhow::Result<Vec<Snapshot>>>,
}

/// Picks our listeners' ports out of a tool's output.
pub type Parse = fn(&str, u32) -> HashSet<u16>;

impl Poller {
    pub fn start(label: &str, program: &str, args: &[&str], period: Duration, parse: Parse, pid: u32) -> Self {
        let (stop, stopped) = channel::<()>();
        let program = program.to_owned();
        let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
        let period_ns = period.as_nanos() as u64;
        let handle = thread::spawn(move || {
            let mut snapshots = Vec::new();
            let mut next = monotonic_ns();
            loop {
                let start_ns = monotonic_ns();
                let out = Command::new(&program)
                    .args(&args)
                    .stdin(Stdio::null())
                    .output()
                    .with_context(|| format!("running {program}"))?;
                let end_ns = monotonic_ns();
                // lsof exits 1 when nothing matches.
                let nothing_listed = out.status.code() == Some(1) && out.stdout.is_empty();
                if !out.status.success() && !nothing_listed {
                    bail!(
                        "{program} {} failed ({}): {}",
                        args.join(" "),
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
                let ports = parse(&String::from_utf8_lossy(&out.stdout), pid);
                snapshots.push(Snapshot { start_ns, end_ns, ports });
                next += period_ns;
                let now = monotonic_ns();
                next = next.max(now);
                match stopped.recv_timeout(Duration::from_nanos(next - now)) {
                    Err(RecvTimeoutError::Timeout) => {}
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => return Ok(snapshots),
                }
            }
        });
        Self { label: label.to_owned(), stop, handle }
    }

    pub fn finish(self) -> anyhow::Result<Vec<Snapshot>> {
        let _ = self.stop.send(());
        match self.handle.join() {
            Ok(result) => result.with_context(|| format!("poller {}", self.label)),
            Err(_) => bail!("poller {} panicked", self.label),
        }
    }
}

/// `ss -ltnH`: "LISTEN 0 128 127.0.0.1:41234 0.0.0.0:*". ss shows no
/// process here, so every 127.0.0.1 listener counts; a port is matched to
/// one of ours by time as well (see the analysis).
pub fn parse_ss(text: &str, _pid: u32) -> HashSet<u16> {
    text.lines().filter_map(|l| l.split_whitespace().nth(3)?.strip_prefix("127.0.0.1:")?.parse().ok()).collect()
}

/// `lsof -iTCP -sTCP:LISTEN -n -P`: "xtask 123 root 3u IPv4 ... TCP
/// 127.0.0.1:41234 (LISTEN)"; only lines of the listener child's pid.
pub fn parse_lsof(text: &str, pid: u32) -> HashSet<u16> {
    let pid = pid.to_string();
    text.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(pid.as_str()))
        .filter_map(|l| l.split_whitespace().find_map(|f| f.strip_prefix("127.0.0.1:"))?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ss_and_lsof_lines() {
        let ss = "LISTEN 0      128        127.0.0.1:41234      0.0.0.0:*\n\
                  LISTEN 0      4096         0.0.0.0:22         0.0.0.0:*\n";
        assert_eq!(parse_ss(ss, 0), HashSet::from([41234]));
        let lsof = "COMMAND PID USER FD TYPE DEVICE SIZE/OFF NODE NAME\n\
                    xtask 77 root 3u IPv4 1 0t0 TCP 127.0.0.1:5000 (LISTEN)\n\
                    other 78 root 3u IPv4 1 0t0 TCP 127.0.0.1:5001 (LISTEN)\n";
        assert_eq!(parse_lsof(lsof, 77), HashSet::from([5000]));
    }

    #[test]
    fn bpftrace_nsecs_become_monotonic() {
        let mut c = Collected::new(42, 1000);
        c.bpftrace_line("Attaching 1 probe...".into(), 1);
        c.bpftrace_line("5000 42 8080".into(), 2);
        c.bpftrace_line("5000 43 8081".into(), 3);
        assert!(c.bpftrace_attached);
        assert_eq!(c.bpftrace.len(), 1);
        assert_eq!((c.bpftrace[0].port, c.bpftrace[0].ktime_ns), (8080, 4000));
    }
}
