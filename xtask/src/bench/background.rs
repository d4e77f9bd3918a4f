//! A tool left running while a workload runs (watcher, bpftrace): its
//! stdout lines counted (and kept, if asked), its stderr kept for errors,
//! its readiness awaited on a line it prints, and its CPU time and memory
//! read from /proc — what the overhead, throughput, resources and start
//! benches need of a peer, without the per-line timing of `tools`.
use std::{
    collections::VecDeque,
    fs,
    io::{BufRead as _, BufReader, Read},
    os::unix::process::CommandExt as _,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, SyncSender, TrySendError, sync_channel},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// What becomes of a background tool's stdout.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Stdout {
    /// Count the lines only (they go nowhere else).
    Count,
    /// Count them and keep them for `take_lines`.
    Keep,
}

/// Lines kept for `wait_for_line` between two waits.
const LINE_QUEUE: usize = 4096;

pub struct Background {
    label: String,
    child: Option<Child>,
    lines: Arc<AtomicU64>,
    kept: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// Every line of both streams, for `wait_for_line`.
    rx: Receiver<String>,
}

impl Background {
    /// Starts `cmd` and waits (at most `timeout`) for a line of its stdout
    /// or stderr for which `ready` holds. Fails with its stderr if it exits
    /// or never says so.
    pub fn start(
        label: &str,
        cmd: &mut Command,
        stdout: Stdout,
        ready: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let mut child = spawn_piped(label, cmd)?;
        let (tx, rx) = sync_channel(LINE_QUEUE);
        let lines = Arc::new(AtomicU64::new(0));
        let kept = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(VecDeque::new()));
        {
            let (lines, kept, tx) = (lines.clone(), kept.clone(), tx.clone());
            let pipe = child.stdout.take().expect("piped");
            read_lines(pipe, tx, move |line| {
                lines.fetch_add(1, Ordering::Relaxed);
                if stdout == Stdout::Keep {
                    kept.lock().expect("not poisoned").push(line.to_owned());
                }
            });
        }
        {
            let stderr = stderr.clone();
            let pipe = child.stderr.take().expect("piped");
            read_lines(pipe, tx, move |line| {
                let mut tail = stderr.lock().expect("not poisoned");
                if tail.len() == 50 {
                    tail.pop_front();
                }
                tail.push_back(line.to_owned());
            });
        }
        let mut me = Self { label: label.to_owned(), child: Some(child), lines, kept, stderr, rx };
        if !me.wait_for_line(ready, timeout)? {
            bail!("{label} did not say it was ready within {timeout:?}; its stderr:\n{}", me.stderr_tail());
        }
        Ok(me)
    }

    /// Waits (at most `timeout`) for a line, on either stream, for which
    /// `wanted` holds; Ok(false) on time-out, an error if the tool exited.
    pub fn wait_for_line(&mut self, wanted: impl Fn(&str) -> bool, timeout: Duration) -> anyhow::Result<bool> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(false);
            }
            match self.rx.recv_timeout(left) {
                Ok(line) if wanted(&line) => return Ok(true),
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => return Ok(false),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.as_mut().and_then(|c| c.wait().ok());
                    bail!("{} exited ({status:?}); its stderr:\n{}", self.label, self.stderr_tail());
                }
            }
        }
    }

    /// Forgets the lines queued since the last wait: call it before
    /// triggering what `wait_for_line` should then see, when the tool may
    /// have printed more than LINE_QUEUE lines meanwhile.
    pub fn discard_queued(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Lines the tool has written to stdout so far.
    pub fn stdout_lines(&self) -> u64 {
        self.lines.load(Ordering::Relaxed)
    }

    /// The stdout lines kept so far (with `Stdout::Keep`), emptied.
    pub fn take_lines(&self) -> Vec<String> {
        std::mem::take(&mut *self.kept.lock().expect("not poisoned"))
    }

    pub fn stderr_tail(&self) -> String {
        self.stderr.lock().expect("not poisoned").iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// CPU time (user + system, all threads, dead ones included) and memory.
    pub fn usage(&self) -> anyhow::Result<Usage> {
        Usage::of(self.pid())
    }

    /// SIGTERM, up to 5 s to exit, then SIGKILL.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, &self.label);
        }
    }
}

/// Spawns a tool with stdin closed and stdout and stderr piped, killed
/// (SIGTERM) by the kernel if the bench dies first (PR_SET_PDEATHSIG), so
/// that no tool outlives an interrupted bench.
pub fn spawn_piped(label: &str, cmd: &mut Command) -> anyhow::Result<Child> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: prctl is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong);
            Ok(())
        });
    }
    cmd.spawn().with_context(|| format!("starting {label}: {cmd:?}"))
}

/// SIGTERM, up to 5 s to exit, then SIGKILL; the child is reaped either way.
pub fn terminate(child: &mut Child, label: &str) -> Option<ExitStatus> {
    // SAFETY: a signal to our own child, not reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(_) => break,
        }
    }
    eprintln!("xtask: bench: {label} ignored SIGTERM; killing it");
    let _ = child.kill();
    child.wait().ok()
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_lines(pipe: impl Read + Send + 'static, tx: SyncSender<String>, mut each: impl FnMut(&str) + Send + 'static) {
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches('\n');
            each(text);
            // Between waits nobody reads the queue: past LINE_QUEUE lines
            // the newest are dropped (the count above still has them), so
            // a tool printing millions of lines costs no memory here.
            if let Err(TrySendError::Disconnected(_)) = tx.try_send(text.to_owned()) {
                return;
            }
        }
    });
}

/// A process's CPU time and memory, from /proc/PID/stat and status.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// utime + stime, ns (clock-tick resolution, 10 ms here).
    pub cpu_ns: u64,
    /// VmRSS, KiB.
    pub rss_kib: u64,
    /// VmHWM (peak RSS), KiB.
    pub peak_rss_kib: u64,
}

impl Usage {
    pub fn of(pid: u32) -> anyhow::Result<Self> {
        let stat =
            fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("reading /proc/{pid}/stat"))?;
        // comm may hold spaces and parentheses: fields start after the last ')'.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        // After ')': state is field 3, utime 14, stime 15 (1-based, proc(5)).
        let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        let cpu_ns = (ticks(14) + ticks(15)) * 1_000_000_000 / hz;
        let status =
            fs::read_to_string(format!("/proc/{pid}/status")).with_context(|| format!("reading /proc/{pid}/status"))?;
        let kib = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(Self { cpu_ns, rss_kib: kib("VmRSS:"), peak_rss_kib: kib("VmHWM:") })
    }
}
