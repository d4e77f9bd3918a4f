//! Harness for watcher's end-to-end tests: the real binary, the real
//! kernel, real child processes. Nothing here sleeps for readiness: the
//! watcher says "ready" on stderr, children say what they opened on stdout.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of the harness; an expect would be unfulfilled in those that use it all"
)]

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
        mpsc::{Receiver, RecvTimeoutError, channel},
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

/// How long any one wait may last before the test fails: a bound on a
/// wait for a signal, never a sleep.
pub const TIMEOUT: Duration = Duration::from_secs(30);

pub const PYTHON: &str = "/usr/bin/python3";

pub fn watcher_bin() -> &'static str {
    env!("CARGO_BIN_EXE_watcher")
}

pub fn sockets_py() -> PathBuf {
    program("sockets.py")
}

/// A file of tests/programs.
pub fn program(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/programs").join(name)
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Run,
    Skip(String),
}

/// Whether a test that loads BPF may run here. Under CI=true it never
/// skips: it panics, so that CI fails loudly instead of passing empty.
pub fn decide(is_root: bool, ci: bool) -> Decision {
    if is_root {
        return Decision::Run;
    }
    let reason = "needs root to load eBPF programs".to_owned();
    assert!(!ci, "{reason}, and CI=true: failing instead of skipping");
    Decision::Skip(reason)
}

/// True when the calling test should go on; prints why when it skips.
pub fn require_bpf(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    match decide(root, ci) {
        Decision::Run => true,
        Decision::Skip(reason) => {
            eprintln!("SKIP {test}: {reason}");
            false
        }
    }
}

/// A running `watcher watch`, its stdout lines delivered on a channel.
pub struct Watcher {
    child: Child,
    lines: Receiver<String>,
    /// Lines already received but not yet asked for.
    pending: Vec<String>,
    stderr_lines: Arc<Mutex<Vec<String>>>,
}

impl Watcher {
    /// Starts watcher with `--json` and these arguments, and returns once
    /// it has said on stderr that every program is attached.
    pub fn start_json(args: &[&str]) -> Self {
        let mut all = vec!["watch", "--json"];
        all.extend_from_slice(args);
        Self::start(&all)
    }

    pub fn start(args: &[&str]) -> Self {
        let mut command = Command::new(watcher_bin());
        command.args(args);
        Self::start_command(command)
    }

    /// Starts a prepared command (watcher under a wrapper, with its own
    /// environment) and waits for the ready line like [`Watcher::start`].
    pub fn start_command(mut command: Command) -> Self {
        // info unless the test asks for more (the kernel log's tests).
        if !command.get_envs().any(|(name, _)| name == "RUST_LOG") {
            command.env("RUST_LOG", "info");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning watcher");
        let (ready_tx, ready_rx) = channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&stderr_lines);
        thread::spawn(move || {
            let mut ready_tx = Some(ready_tx);
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("[watcher stderr] {line}");
                kept.lock().unwrap().push(line.clone());
                if line.starts_with("watcher: ready:") {
                    if let Some(tx) = ready_tx.take() {
                        let _ = tx.send(Ok(()));
                    }
                } else if line.starts_with("watcher: error:")
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(Err(line));
                }
            }
        });
        let (tx, lines) = channel();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        match ready_rx.recv_timeout(TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(line)) => panic!("watcher failed to start: {line}"),
            Err(e) => panic!("watcher did not say it was ready: {e}"),
        }
        Self { child, lines, pending: Vec::new(), stderr_lines }
    }

    /// Every line watcher wrote on stderr so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr_lines.lock().unwrap().clone()
    }

    /// The next stdout line that `keep` accepts, waiting at most TIMEOUT.
    pub fn next_line(&mut self, keep: impl Fn(&str) -> bool) -> String {
        if let Some(i) = self.pending.iter().position(|l| keep(l)) {
            return self.pending.remove(i);
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if keep(&line) => return line,
                Ok(line) => self.pending.push(line),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no matching line from watcher within {TIMEOUT:?}; it printed {} others", self.pending.len())
                }
                Err(RecvTimeoutError::Disconnected) => panic!("watcher's stdout closed"),
            }
        }
    }

    /// The next JSON event that `keep` accepts.
    pub fn next_event(&mut self, keep: impl Fn(&Value) -> bool) -> Value {
        let line = self.next_line(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| keep(&v)));
        serde_json::from_str(&line).unwrap()
    }

    /// Every JSON event received so far (including pending ones) plus those
    /// that arrive until `done` accepts one; returns them all, in order.
    pub fn events_until(&mut self, done: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut seen: Vec<Value> = self.pending.drain(..).filter_map(|l| serde_json::from_str(&l).ok()).collect();
        if seen.iter().any(&done) {
            return seen;
        }
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                    let finished = done(&value);
                    seen.push(value);
                    if finished {
                        return seen;
                    }
                }
                Err(e) => panic!("watcher stopped short ({e}) after {} events", seen.len()),
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends a signal to watcher (SIGSTOP / SIGCONT to make it miss /proc).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, signal) }, 0);
    }

    /// Stops watcher with SIGTERM; returns its exit status and every line
    /// it printed that no wait has taken yet.
    pub fn stop(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let status = self.terminate();
        let mut rest = std::mem::take(&mut self.pending);
        // The reader thread ends when watcher's stdout closes.
        rest.extend(self.lines.iter());
        (status, rest)
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on our own child's pid. SIGCONT too: a test that
        // failed while the watcher was stopped (SIGSTOP) must not wait
        // forever on a SIGTERM a stopped process never acts on.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
            libc::kill(pid, libc::SIGCONT);
        }
        // A watcher that does not exit on SIGTERM within a minute is a
        // failure of its own, said by the caller's assertion on the status;
        // the test must end either way.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    eprintln!("watcher {pid} did not exit within 60 s of SIGTERM: killed");
                    let _ = self.child.kill();
                    return self.child.wait().expect("waiting for watcher");
                }
            }
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.terminate();
        }
    }
}

/// A child process running tests/programs/sockets.py in one mode.
pub struct SocketChild {
    pub child: Child,
    pub pid: u32,
    stdin: Option<ChildStdin>,
    stdout: BufReader<std::process::ChildStdout>,
}

impl SocketChild {
    /// Spawns the child; it waits for [`SocketChild::go`] before acting.
    pub fn spawn(mode: &str, args: &[&str]) -> Self {
        Self::spawn_with(&[], mode, args)
    }

    /// Like [`SocketChild::spawn`], with a wrapper before python (e.g.
    /// setpriv to run it as another user).
    pub fn spawn_with(wrapper: &[&str], mode: &str, args: &[&str]) -> Self {
        Self::spawn_program(wrapper, &sockets_py(), mode, args)
    }

    /// A child running another program of tests/programs with the same protocol.
    pub fn spawn_program(wrapper: &[&str], program: &std::path::Path, mode: &str, args: &[&str]) -> Self {
        let mut argv: Vec<String> = wrapper.iter().map(|s| s.to_string()).collect();
        argv.push(PYTHON.into());
        argv.push(program.display().to_string());
        argv.push(mode.into());
        argv.extend(args.iter().map(|s| s.to_string()));
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawning the socket child");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut this = Self { pid: child.id(), child, stdin, stdout };
        let hello = this.read_line();
        assert_eq!(hello, format!("pid {}", this.pid), "the child is the process we spawned");
        this
    }

    pub fn say(&mut self, word: &str) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        writeln!(stdin, "{word}").expect("writing to the child");
        stdin.flush().unwrap();
    }

    pub fn go(&mut self) {
        self.say("go");
    }

    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("reading from the child");
        assert!(!line.is_empty(), "the child exited early");
        line.trim_end().to_owned()
    }

    /// Reads the child's next line, which must start with `word`, and
    /// returns the words after it.
    pub fn expect(&mut self, word: &str) -> Vec<String> {
        let line = self.read_line();
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some(word), "child said {line:?}");
        words.map(str::to_owned).collect()
    }

    /// /proc/<pid>/exe while the child lives.
    pub fn exe(&self) -> String {
        std::fs::read_link(format!("/proc/{}/exe", self.pid)).unwrap().display().to_string()
    }

    pub fn comm(&self) -> String {
        std::fs::read_to_string(format!("/proc/{}/comm", self.pid)).unwrap().trim_end().to_owned()
    }

    /// Closes the child's stdin and waits for it.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "child failed: {status}");
    }
}

impl Drop for SocketChild {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A free port on this family's loopback, for tests that bind an explicit
/// port. It lies below the kernel's ephemeral range: a port the kernel
/// hands out for a bind to port 0 (another test's listeners, any process
/// on this shared host) could be taken between a test's close and its
/// re-listen, and a daemon watching the whole host would then see a
/// restart of someone else's listener. Ports are drawn from a sequence
/// seeded by the pid, so that test binaries and their threads start far
/// apart; a port found taken is skipped.
pub fn free_port(family: &str, proto: &str) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u32, ephemeral_low.max(10_001));
    let start = std::process::id().wrapping_mul(2_654_435_761) % (high - low);
    let ip = if family == "4" { "127.0.0.1" } else { "[::1]" };
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (low + (start + n.wrapping_mul(7919)) % (high - low)) as u16;
        let addr = format!("{ip}:{port}");
        let free = match proto {
            "tcp" => std::net::TcpListener::bind(&addr).is_ok(),
            _ => std::net::UdpSocket::bind(&addr).is_ok(),
        };
        if free {
            return port;
        }
    }
    panic!("no free {proto} port on {ip} below {high} after 1000 tries");
}

/// Rules that allow every socket but TCP listeners on `ports`: a daemon
/// under test with `kill_unexpected` must judge, stop and kill nothing on
/// this shared host but the test's own listeners.
pub fn allow_all_but(ports: &[u16]) -> String {
    let mut ports = ports.to_vec();
    ports.sort_unstable();
    let mut rules = String::new();
    let mut from = 1u32;
    for &port in &ports {
        if u32::from(port) > from {
            rules.push_str(&format!("[[allow]]\nproto = \"tcp\"\nport = \"{from}-{}\"\n\n", port - 1));
        }
        from = u32::from(port) + 1;
    }
    if from <= 65535 {
        rules.push_str(&format!("[[allow]]\nproto = \"tcp\"\nport = \"{from}-65535\"\n\n"));
    }
    for proto in ["udp", "unix", "raw", "packet"] {
        rules.push_str(&format!("[[allow]]\nname = \"any {proto}\"\nproto = \"{proto}\"\n\n"));
    }
    rules
}

pub fn is(value: &Value, event: &str, pid: u32) -> bool {
    value["event"] == event && value["pid"] == pid
}
