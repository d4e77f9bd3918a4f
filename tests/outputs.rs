//! End-to-end tests of the daemon's fleet outputs (issue 4): syslog into a
//! real rsyslogd that each test starts on loopback with its own
//! configuration, and the Prometheus endpoint scraped over real HTTP and
//! parsed with a Prometheus text-format parser. Real listeners (python3,
//! socat), the real kernel.
mod common;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, ChildStdout, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use common::{PYTHON, TIMEOUT, Watcher, free_port, require_bpf};
use serde_json::Value;

/// How often a file or a port is looked at again while waiting for it.
const POLL: Duration = Duration::from_millis(20);

fn config_file(dir: &Path, body: &str) -> String {
    let path = dir.join("watcher.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

fn daemon(config: &str) -> Watcher {
    Watcher::start(&["daemon", "--config", config])
}

/// A real rsyslogd in the foreground with its own configuration: UDP and
/// TCP inputs on loopback and a local socket (`{name}.sock`, imuxsock with
/// its stock settings, as on /dev/log), every message written to one file
/// with its RFC 5424 fields. Killed when dropped, even if the test fails.
struct Rsyslog {
    child: Child,
    stderr: PathBuf,
}

impl Rsyslog {
    /// Starts rsyslogd and returns once its TCP input accepts connections
    /// and its local socket is there (inputs are activated together, so UDP
    /// is ready too).
    fn start(dir: &Path, name: &str, udp: u16, tcp: u16) -> Self {
        let dir_text = dir.display();
        let conf = dir.join(format!("{name}.conf"));
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{dir_text}" net.enableDNS="off")
module(load="imudp")
module(load="imtcp")
module(load="imuxsock" SysSock.Use="off")
input(type="imuxsock" Socket="{dir_text}/{name}.sock")
input(type="imudp" address="127.0.0.1" port="{udp}")
input(type="imtcp" address="127.0.0.1" port="{tcp}")
template(name="fields" type="string" string="pri=%pri% severity=%syslogseverity-text% facility=%syslogfacility-text% app=%app-name% procid=%procid% msgid=%msgid% msg=%msg%\n")
action(type="omfile" file="{dir_text}/syslog.log" template="fields")
"#
            ),
        )
        .unwrap();
        let stderr = dir.join(format!("{name}.stderr"));
        let mut child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join(format!("{name}.pid")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawning rsyslogd (cargo xtask setup --test-deps installs it)");
        let deadline = Instant::now() + TIMEOUT;
        let socket = dir.join(format!("{name}.sock"));
        while TcpStream::connect(("127.0.0.1", tcp)).is_err() || !socket.exists() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("rsyslogd exited ({status}): {}", std::fs::read_to_string(&stderr).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "rsyslogd never accepted on port {tcp}");
            thread::sleep(POLL);
        }
        Self { child, stderr }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        // SIGTERM: rsyslogd flushes its file and removes its pid file.
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while matches!(self.child.try_wait(), Ok(None)) {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            thread::sleep(POLL);
        }
        let _ = self.child.wait();
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        if !stderr.trim().is_empty() {
            eprintln!("[rsyslogd stderr] {stderr}");
        }
    }
}

/// One line of rsyslog's file.
#[derive(Debug)]
struct Record {
    fields: std::collections::HashMap<String, String>,
    msg: Value,
}

impl Record {
    fn parse(line: &str) -> Option<Self> {
        let (head, msg) = line.split_once(" msg=")?;
        let fields =
            head.split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        // A legacy-format message's MSG starts with the space after "tag:".
        Some(Self { fields, msg: serde_json::from_str(msg.trim_start()).unwrap_or(Value::Null) })
    }

    fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

/// The records of rsyslog's file with this MSGID.
fn records(log: &Path, msgid: &str) -> Vec<Record> {
    let needle = format!(" msgid={msgid} ");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(Record::parse)
        .collect()
}

/// Polls rsyslog's file until a record with this MSGID that `keep` accepts
/// is there. On failure, says what the daemon counted (`metrics`: its port).
fn wait_for_record(log: &Path, msgid: &str, metrics: u16, keep: impl Fn(&Record) -> bool) -> Record {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(r) = records(log, msgid).into_iter().find(&keep) {
            return r;
        }
        if Instant::now() > deadline {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(10).collect();
            let (_, body) = scrape(metrics);
            let counted: Vec<&str> = body.lines().filter(|l| l.starts_with("watcher_syslog")).collect();
            panic!(
                "no matching {msgid} record in {} within {TIMEOUT:?}; it has {} lines, the last: {tail:#?}; the daemon counted {counted:#?}",
                log.display(),
                text.lines().count()
            );
        }
        thread::sleep(POLL);
    }
}

/// A python3 TCP listener on a loopback port the kernel picks, its comm
/// set to `comm` first (when given). Lives until dropped.
struct Listener {
    child: Child,
    _stdout: BufReader<ChildStdout>,
    port: u16,
}

impl Listener {
    fn spawn(comm: Option<&str>) -> Self {
        let script = "import os, socket, sys\n\
                      if len(sys.argv) > 1:\n    open('/proc/self/comm', 'wb').write(os.fsencode(sys.argv[1]))\n\
                      s = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\n\
                      print(s.getsockname()[1], flush=True)\nsys.stdin.read()\n";
        let mut child = Command::new(PYTHON)
            .arg("-c")
            .arg(script)
            .args(comm)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let port = line.trim().parse().unwrap_or_else(|_| panic!("the listener said {line:?}"));
        Self { child, _stdout: stdout, port }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// GET over HTTP/1.1; returns the status, the headers and the body.
fn http_get(port: u16, path: &str) -> (u16, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not HTTP: {response:?}"));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_owned(), body.to_owned())
}

fn scrape(port: u16) -> (prometheus_parse::Scrape, String) {
    let (status, _, body) = http_get(port, "/metrics");
    assert_eq!(status, 200, "{body}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).unwrap();
    (scrape, body)
}

/// The value of the sample `name` whose labels include `labels`.
/// prometheus-parse reads OpenMetrics counters (TYPE `x`, sample `x_total`)
/// as untyped: any scalar kind is taken.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .find_map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// An unexpected listener whose comm holds a newline: rsyslog (over UDP)
/// receives its alert as RFC 5424 — APP-NAME watcher, PROCID the daemon's
/// pid, MSGID the event, severity from the alert's — with the JSON line as
/// MSG, the newline escaped; the listener_up goes too (info), the plain
/// `listen` event does not (all_events is off).
#[test]
fn rsyslog_receives_alerts_over_udp() {
    if !require_bpf("rsyslog_receives_alerts_over_udp") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (udp, tcp, metrics) = (free_port("4", "udp"), free_port("4", "tcp"), free_port("4", "tcp"));
    let rsyslog = Rsyslog::start(dir.path(), "rsyslog", udp, tcp);
    let log = dir.path().join("syslog.log");
    let config = config_file(
        dir.path(),
        &format!(
            "default_severity = \"critical\"\n[syslog]\ntarget = \"udp://127.0.0.1:{udp}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n[[allow]]\nproto = \"udp\"\nport = 53\n"
        ),
    );
    let mut watcher = daemon(&config);
    let daemon_pid = watcher.pid().to_string();

    let listener = Listener::spawn(Some("evil\nname"));
    let (port, pid) = (listener.port, listener.pid());
    // Ours by pid and port: other processes on the host listen too, some on
    // the same port number at another address.
    let ours = |v: &Value| v["pid"] == pid && v["port"] == port;
    watcher.next_event(|e| e["event"] == "alert" && ours(e));

    let got = wait_for_record(&log, "alert", metrics, |r| ours(&r.msg));
    assert_eq!(got.field("app"), "watcher", "{got:?}");
    assert_eq!(got.field("procid"), daemon_pid, "{got:?}");
    assert_eq!(got.field("severity"), "crit", "{got:?}");
    assert_eq!(got.field("facility"), "daemon", "{got:?}");
    assert_eq!(got.msg["severity"], "critical", "{got:?}");
    // The comm arrives escaped (a backslash and an n), not as a line break
    // that rsyslog would have to neutralize (it writes those as #012).
    assert_eq!(got.msg["comm"], "evil\\nname", "{got:?}");

    let up = wait_for_record(&log, "listener_up", metrics, |r| ours(&r.msg));
    assert_eq!(up.field("severity"), "info", "{up:?}");
    drop(listener);
    wait_for_record(&log, "listener_down", metrics, |r| ours(&r.msg));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("#012"), "a raw newline reached rsyslog:\n{text}");
    assert!(!text.lines().any(|l| l.starts_with("name")), "a forged line:\n{text}");
    let plain = records(&log, "listen");
    assert!(!plain.iter().any(|r| r.msg["pid"] == pid), "a plain event was sent: {plain:?}");
    drop(rsyslog);
}

/// `[output] format = "ocsf"`: syslog's MSG is the OCSF line the daemon
/// wrote on stdout, the very same, and its MSGID still the event name.
#[test]
fn rsyslog_receives_the_configured_format() {
    if !require_bpf("rsyslog_receives_the_configured_format") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (udp, tcp, metrics) = (free_port("4", "udp"), free_port("4", "tcp"), free_port("4", "tcp"));
    let rsyslog = Rsyslog::start(dir.path(), "rsyslog", udp, tcp);
    let log = dir.path().join("syslog.log");
    let config = config_file(
        dir.path(),
        &format!(
            "[output]\nformat = \"ocsf\"\n[syslog]\ntarget = \"udp://127.0.0.1:{udp}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"
        ),
    );
    let mut watcher = daemon(&config);
    let listener = Listener::spawn(None);
    let (port, pid) = (listener.port, listener.pid());
    let finding = |v: &Value| {
        v["class_uid"] == 2004
            && v["evidences"][0]["dst_endpoint"]["port"] == port
            && v["evidences"][0]["process"]["pid"] == pid
    };
    let written = watcher.next_event(finding);
    let got = wait_for_record(&log, "alert", metrics, |r| finding(&r.msg));
    assert_eq!(got.msg, written, "syslog carries the line stdout carries");
    assert_eq!(got.field("severity"), "warning", "{got:?}");
    let up = wait_for_record(&log, "listener_up", metrics, |r| {
        r.msg["activity_id"] == 7 && r.msg["dst_endpoint"]["port"] == port && r.msg["actor"]["process"]["pid"] == pid
    });
    assert_eq!((up.msg["class_uid"].as_u64(), up.msg["type_uid"].as_u64()), (Some(4001), Some(400107)), "{up:?}");
    drop(listener);
    let down = wait_for_record(&log, "listener_down", metrics, |r| r.msg["dst_endpoint"]["port"] == port);
    assert_eq!(down.msg["activity_id"], 2, "{down:?}");
    drop(rsyslog);
}

/// `unix:PATH` (what `local` does with /dev/log): the syslog(3) format,
/// which rsyslog's imuxsock parses with its stock settings — tag `watcher`,
/// the daemon's pid, the alert's severity, the JSON line as the message.
#[test]
fn rsyslog_receives_alerts_on_a_local_socket() {
    if !require_bpf("rsyslog_receives_alerts_on_a_local_socket") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (udp, tcp, metrics) = (free_port("4", "udp"), free_port("4", "tcp"), free_port("4", "tcp"));
    let _rsyslog = Rsyslog::start(dir.path(), "rsyslog", udp, tcp);
    let log = dir.path().join("syslog.log");
    let config = config_file(
        dir.path(),
        &format!(
            "[syslog]\ntarget = \"unix:{}/rsyslog.sock\"\nfacility = \"authpriv\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
            dir.path().display()
        ),
    );
    let mut watcher = daemon(&config);
    let listener = Listener::spawn(None);
    let ours = |v: &Value| v["pid"] == listener.pid() && v["port"] == listener.port;
    watcher.next_event(|e| e["event"] == "alert" && ours(e));
    // No MSGID in this format: the event is in the JSON.
    let got = wait_for_record(&log, "-", metrics, |r| r.msg["event"] == "alert" && ours(&r.msg));
    assert_eq!((got.field("app"), got.field("procid")), ("watcher", watcher.pid().to_string().as_str()), "{got:?}");
    assert_eq!((got.field("severity"), got.field("facility")), ("warning", "authpriv"), "{got:?}");
}

/// TCP (octet-counted) to a server that is down when the daemon starts: the
/// daemon goes on, counts the failure, and delivers the alert it kept once
/// rsyslog is up; after rsyslog restarts, the next alert arrives too.
#[test]
fn rsyslog_over_tcp_down_then_up_then_restarted() {
    if !require_bpf("rsyslog_over_tcp_down_then_up_then_restarted") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (udp, tcp, metrics) = (free_port("4", "udp"), free_port("4", "tcp"), free_port("4", "tcp"));
    let log = dir.path().join("syslog.log");
    let config = config_file(
        dir.path(),
        &format!(
            "[syslog]\ntarget = \"tcp://127.0.0.1:{tcp}\"\nfacility = \"local5\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n"
        ),
    );
    let mut watcher = daemon(&config);
    let daemon_pid = watcher.pid().to_string();

    let ours = |v: &Value, l: &Listener| v["pid"] == l.pid() && v["port"] == l.port;
    let first = Listener::spawn(None);
    watcher.next_event(|e| e["event"] == "alert" && ours(e, &first));
    let (scraped, body) = scrape(metrics);
    assert!(sample(&scraped, "watcher_syslog_errors_total", &[]).is_some_and(|v| v >= 1.0), "{body}");

    let rsyslog = Rsyslog::start(dir.path(), "first", udp, tcp);
    let got = wait_for_record(&log, "alert", metrics, |r| ours(&r.msg, &first));
    assert_eq!((got.field("app"), got.field("procid")), ("watcher", daemon_pid.as_str()), "{got:?}");
    assert_eq!((got.field("severity"), got.field("facility")), ("warning", "local5"), "{got:?}");
    let (scraped, body) = scrape(metrics);
    assert!(sample(&scraped, "watcher_syslog_messages_total", &[]).is_some_and(|v| v >= 1.0), "{body}");

    drop(rsyslog);
    let _again = Rsyslog::start(dir.path(), "second", udp, tcp);
    let second = Listener::spawn(None);
    watcher.next_event(|e| e["event"] == "alert" && ours(e, &second));
    wait_for_record(&log, "alert", metrics, |r| ours(&r.msg, &second));
}

/// SIGHUP with a [syslog] section added: the change applies without a
/// restart, and the reload itself is the first message (notice).
#[test]
fn reload_starts_syslog() {
    if !require_bpf("reload_starts_syslog") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (udp, tcp, metrics) = (free_port("4", "udp"), free_port("4", "tcp"), free_port("4", "tcp"));
    let _rsyslog = Rsyslog::start(dir.path(), "rsyslog", udp, tcp);
    let log = dir.path().join("syslog.log");
    let metrics_section = format!("[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n");
    let config = config_file(dir.path(), &metrics_section);
    let mut watcher = daemon(&config);
    std::fs::write(&config, format!("[syslog]\ntarget = \"udp://127.0.0.1:{udp}\"\n{metrics_section}")).unwrap();
    watcher.signal(libc::SIGHUP);
    watcher.next_event(|e| e["event"] == "config_reloaded");
    let got = wait_for_record(&log, "config_reloaded", metrics, |_| true);
    assert_eq!(got.field("severity"), "notice", "{got:?}");
    assert_eq!(got.field("procid"), watcher.pid().to_string(), "{got:?}");
}

/// A real scrape of `GET /metrics` after an alert and a listener_up,
/// parsed with prometheus-parse.
#[test]
fn metrics_endpoint_serves_the_counters() {
    if !require_bpf("metrics_endpoint_serves_the_counters") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics) = (free_port("4", "tcp"), free_port("4", "tcp"));
    let config = config_file(
        dir.path(),
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n[[allow]]\nname = \"web\"\nproto = \"tcp\"\nport = {port}\ncomm = \"python3\"\nseverity = \"critical\"\n"
        ),
    );
    let mut watcher = daemon(&config);
    let socat = Command::new("socat")
        .args([format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"), "STDOUT".into()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let socat = KillOnDrop(socat);
    let ours = |e: &Value| e["pid"] == socat.0.id() && e["port"] == port;
    watcher.next_event(|e| e["event"] == "listener_up" && ours(e));
    let alert = watcher.next_event(|e| e["event"] == "alert" && ours(e));
    assert_eq!(alert["rule"], "web", "{alert}");

    let (status, head, _) = http_get(metrics, "/metrics");
    assert_eq!(status, 200);
    assert!(head.to_ascii_lowercase().contains("content-type: application/openmetrics-text"), "{head}");
    let (scraped, body) = scrape(metrics);
    let at_least_one = |name: &str, labels: &[(&str, &str)]| {
        let v = sample(&scraped, name, labels);
        assert!(v.is_some_and(|v| v >= 1.0), "{name}{labels:?} = {v:?} in\n{body}");
    };
    at_least_one("watcher_alerts_total", &[("rule", "web"), ("severity", "critical")]);
    at_least_one("watcher_events_total", &[("event", "listener_up")]);
    at_least_one("watcher_events_total", &[("event", "alert")]);
    at_least_one("watcher_live_listeners", &[]);
    at_least_one("watcher_process_table_size", &[]);
    assert!(sample(&scraped, "watcher_records_lost_total", &[]).is_some(), "{body}");
    assert!(sample(&scraped, "watcher_syslog_errors_total", &[]).is_some(), "{body}");
    // Configured rules have their series from the start, at 0 when unused.
    assert!(sample(&scraped, "watcher_alerts_total", &[("rule", "-"), ("severity", "warning")]).is_some(), "{body}");

    assert_eq!(http_get(metrics, "/").0, 404);
    drop(socat);
}

/// A [metrics] address that is taken: one line naming it, exit code 2,
/// before any program is loaded.
#[test]
fn metrics_address_taken_exits_2() {
    if !require_bpf("metrics_address_taken_exits_2") {
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), &format!("[metrics]\nlisten = \"{addr}\"\n"));
    let out = Command::new(common::watcher_bin()).args(["daemon", "--config", &config]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let line = stderr.lines().find(|l| l.starts_with("watcher: error:")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains(&format!("[metrics] listen {addr}")) && line.contains("in use"), "{line}");
    assert!(!stderr.contains("watcher: ready"), "{stderr}");
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---- Issue 14: the daemon in production (json_file, logrotate, a full
// disk, a closed stdout, a real Prometheus).

/// The JSON lines of a file so far; a line that does not parse fails the
/// test (a line cut short by a full disk must not stay in the file). The
/// text after the last newline is a line still being written (the daemon's
/// writes need not end at a line's end), not yet a line.
fn json_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line in {} ({e}): {l:?}", path.display()))
        })
        .collect()
}

/// Polls the file until a line that `keep` accepts is there; returns every
/// line and the index of the first that matched.
fn wait_for_line(path: &Path, what: &str, keep: impl Fn(&Value) -> bool) -> (Vec<Value>, usize) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let lines = json_lines(path);
        if let Some(i) = lines.iter().position(&keep) {
            return (lines, i);
        }
        assert!(Instant::now() < deadline, "no {what} in {} within {TIMEOUT:?}: {lines:#?}", path.display());
        thread::sleep(POLL);
    }
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).mode() & 0o7777
}

/// The files a process has open, as /proc/PID/fd's links name them.
fn open_files(pid: u32) -> Vec<PathBuf> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .collect()
}

/// Whether the process runs (and is not a zombie).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// The daemon with json_file (default mode) and a pid file: the file is
/// 0600; `logrotate -f` with the shipped snippet (its paths pointed at a
/// temporary directory) renames it and signals the daemon through the pid
/// file; the daemon then holds no descriptor to the old file, and the next
/// event goes into the new one, also 0600.
#[test]
fn logrotate_with_the_shipped_snippet() {
    if !require_bpf("logrotate_with_the_shipped_snippet") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("events.jsonl");
    let pid_file = dir.path().join("watcher.pid");
    let config = config_file(dir.path(), &format!("[output]\njson_file = \"{}\"\n", log.display()));
    let watcher = Watcher::start(&["daemon", "--config", &config, "--pid-file", &pid_file.display().to_string()]);
    let pid = watcher.pid();
    assert_eq!(mode(&log), 0o600, "created private");
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap(), format!("{pid}\n"));

    let before = Listener::spawn(None);
    let ours = |l: &Listener| {
        let (pid, port) = (l.pid(), l.port);
        move |e: &Value| e["event"] == "listener_up" && e["pid"] == pid && e["port"] == port
    };
    wait_for_line(&log, "listener_up before the rotation", ours(&before));

    let snippet = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/watcher.logrotate")).unwrap();
    let mut text = snippet.clone();
    for (shipped, here) in [
        ("/var/log/watcher/events.jsonl", log.display().to_string()),
        ("/run/watcher.pid", pid_file.display().to_string()),
        // Not the host's own watcher, should one run under systemd here.
        ("watcher.service", "watcher-test-absent.service".to_owned()),
    ] {
        assert!(snippet.contains(shipped), "the snippet no longer names {shipped}:\n{snippet}");
        text = text.replace(shipped, &here);
    }
    let conf = dir.path().join("logrotate.conf");
    std::fs::write(&conf, text).unwrap();
    // logrotate refuses a configuration others can write.
    std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let out = Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(dir.path().join("logrotate.state"))
        .arg(&conf)
        .output()
        .expect("running logrotate (cargo xtask setup --test-deps installs it)");
    assert!(
        out.status.success(),
        "logrotate: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let rotated = dir.path().join("events.jsonl.1");
    assert!(json_lines(&rotated).iter().any(ours(&before)), "the old lines are in {}", rotated.display());
    // The SIGHUP's reload is the first line of the new file.
    let (lines, _) = wait_for_line(&log, "config_reloaded", |e| e["event"] == "config_reloaded");
    assert_eq!(lines[0]["event"], "config_reloaded", "{lines:#?}");
    assert_eq!(mode(&log), 0o600, "the new file is private too");
    let files = open_files(pid);
    assert!(!files.contains(&rotated), "the daemon still holds {}: {files:?}", rotated.display());
    assert!(files.contains(&log), "the daemon holds {}: {files:?}", log.display());

    let after = Listener::spawn(None);
    wait_for_line(&log, "listener_up after the rotation", ours(&after));
    assert!(!json_lines(&rotated).iter().any(ours(&after)), "a line went to the rotated file");
    assert!(json_lines(&rotated).iter().all(|e| e["event"] != "config_reloaded"));

    // A new mode applies at the next SIGHUP.
    std::fs::write(&config, format!("[output]\njson_file = \"{}\"\njson_file_mode = \"0640\"\n", log.display()))
        .unwrap();
    watcher.signal(libc::SIGHUP);
    wait_for_line(&log, "a second config_reloaded", |e| e["event"] == "config_reloaded" && e != &lines[0]);
    assert_eq!(mode(&log), 0o640);
    drop(watcher);
    assert!(!pid_file.exists(), "the pid file is removed at exit");
}

/// A small tmpfs, unmounted (lazily: the daemon may still hold a file on
/// it) when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: PathBuf, size: &str) -> Self {
        std::fs::create_dir(&at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "watcher-test"])
            .arg(&at)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs on {}", at.display());
        Self(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// json_file on a 256 KiB tmpfs that another file fills: the daemon stays
/// up, its alerts still reach rsyslog and its metrics, the dropped counter
/// rises; once the space is freed, lines resume with an `output_dropped`
/// line first that says how many were lost, and the file holds only whole
/// JSON lines.
#[test]
fn a_full_disk_does_not_blind_the_daemon() {
    if !require_bpf("a_full_disk_does_not_blind_the_daemon") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let small = Tmpfs::mount(dir.path().join("small"), "256k");
    let log = small.0.join("events.jsonl");
    let (udp, tcp, metrics) = (free_port("4", "udp"), free_port("4", "tcp"), free_port("4", "tcp"));
    let _rsyslog = Rsyslog::start(dir.path(), "rsyslog", udp, tcp);
    let syslog = dir.path().join("syslog.log");
    let config = config_file(
        dir.path(),
        &format!(
            "[output]\njson_file = \"{}\"\n[syslog]\ntarget = \"udp://127.0.0.1:{udp}\"\n[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n",
            log.display()
        ),
    );
    let watcher = daemon(&config);
    let value = |name: &str, labels: &[(&str, &str)]| sample(&scrape(metrics).0, name, labels).unwrap_or(0.0);
    let dropped = || value("watcher_output_dropped_total", &[("output", "json_file")]);
    assert_eq!(dropped(), 0.0);

    // Fill the file system.
    let filler_path = small.0.join("filler");
    let mut filler = std::fs::File::create(&filler_path).unwrap();
    while filler.write(&[b'x'; 4096]).is_ok_and(|n| n > 0) {}
    drop(filler);

    // The daemon's file may have room left in its last page: listeners,
    // each with its alert, until lines are dropped.
    let ours = |e: &Value, l: &Listener| e["pid"] == l.pid() && e["port"] == l.port;
    let mut listeners = Vec::new();
    while dropped() == 0.0 {
        assert!(listeners.len() < 100, "100 listeners and no line dropped: is the tmpfs full?");
        let listener = Listener::spawn(None);
        wait_for_record(&syslog, "alert", metrics, |r| ours(&r.msg, &listener));
        listeners.push(listener);
    }

    // Full now: the daemon stays up, alerts go on to syslog and metrics.
    let (alerts, lost) = (value("watcher_events_total", &[("event", "alert")]), dropped());
    let during = Listener::spawn(Some("during"));
    let got = wait_for_record(&syslog, "alert", metrics, |r| ours(&r.msg, &during));
    assert_eq!(got.msg["comm"], "during", "{got:?}");
    assert!(value("watcher_events_total", &[("event", "alert")]) > alerts, "the alert is counted");
    assert!(dropped() > lost, "the disk is full, and no more lines dropped: {} then {}", lost, dropped());
    assert!(value("watcher_output_errors_total", &[("output", "json_file")]) >= 1.0);
    assert!(running(watcher.pid()), "the daemon stopped");
    let warned = watcher.stderr_lines();
    assert!(
        warned.iter().any(|l| l.contains(&log.display().to_string()) && l.contains("No space left")),
        "a warning names the file: {warned:#?}"
    );
    assert!(!warned.iter().any(|l| l.contains("stdout")), "{warned:#?}");

    // Room again: the next lines are written, after the notice.
    std::fs::remove_file(&filler_path).unwrap();
    let after = Listener::spawn(None);
    let (lines, at) = wait_for_line(&log, "listener_up after the space was freed", |e| {
        e["event"] == "listener_up" && ours(e, &after)
    });
    // A line may have fit in what the last page of the file had left, so
    // there may be more than one gap; each is reported, and the last one
    // before the lines that came once the space was freed.
    let notices: Vec<usize> = (0..lines.len()).filter(|&i| lines[i]["event"] == "output_dropped").collect();
    let last = *notices.last().expect("an output_dropped line");
    assert!(last < at, "{lines:#?}");
    eprintln!("the notice: {}", lines[last]);
    for &i in &notices {
        let n = &lines[i];
        assert_eq!(n["output"], log.display().to_string(), "{n}");
        assert!(n["error"].as_str().is_some_and(|e| e.contains("No space left")), "{n}");
        assert!(n["dropped"].as_u64().is_some_and(|d| d > 0) && n["since"].is_string(), "{n}");
    }
    let reported: f64 = notices.iter().filter_map(|&i| lines[i]["dropped"].as_f64()).sum();
    assert_eq!(
        reported,
        dropped(),
        "the notices count every line dropped: {:?}",
        notices.iter().map(|&i| &lines[i]).collect::<Vec<_>>()
    );
    // Syslog hears of the gap too.
    let told = wait_for_record(&syslog, "output_dropped", metrics, |r| r.msg == lines[last]);
    assert_eq!(told.field("severity"), "warning", "{told:?}");
    assert!(running(watcher.pid()));
    drop(listeners);
}

/// A `watcher daemon` whose stdout is a pipe the test holds: the test
/// closes it to play a log shipper that died.
struct PipedDaemon {
    child: Child,
    stdout: Option<std::process::ChildStdout>,
}

impl PipedDaemon {
    fn start(config: &str) -> Self {
        let mut child = Command::new(common::watcher_bin())
            .args(["daemon", "--config", config])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (ready, said_ready) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("[watcher stderr] {line}");
                if line.starts_with("watcher: ready:") || line.starts_with("watcher: error:") {
                    let _ = ready.send(line);
                }
            }
        });
        let line = said_ready.recv_timeout(TIMEOUT).expect("the daemon said nothing");
        assert!(line.starts_with("watcher: ready:"), "{line}");
        let stdout = child.stdout.take();
        Self { child, stdout }
    }
}

impl Drop for PipedDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon writing to stdout, whose reader goes away: it goes on, its
/// alert reaches the metrics, what it could not write is counted, and it
/// still stops cleanly (exit 0) on SIGTERM.
#[test]
fn the_daemon_goes_on_when_its_stdout_is_closed() {
    if !require_bpf("the_daemon_goes_on_when_its_stdout_is_closed") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics) = (free_port("4", "tcp"), free_port("4", "tcp"));
    let config = config_file(
        dir.path(),
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n[[allow]]\nname = \"ours\"\nproto = \"tcp\"\nport = {port}\ncomm = \"nosuchprogram\"\n"
        ),
    );
    let mut daemon = PipedDaemon::start(&config);
    drop(daemon.stdout.take());
    let socat = KillOnDrop(
        Command::new("socat")
            .args([format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"), "STDOUT".into()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (scraped, body) = scrape(metrics);
        let alerts = sample(&scraped, "watcher_alerts_total", &[("rule", "ours")]);
        let dropped = sample(&scraped, "watcher_output_dropped_total", &[("output", "stdout")]);
        if alerts == Some(1.0) && dropped.is_some_and(|d| d >= 2.0) {
            break;
        }
        assert!(Instant::now() < deadline, "no alert counted, or no drop, within {TIMEOUT:?}:\n{body}");
        thread::sleep(POLL);
    }
    assert!(running(daemon.child.id()));
    drop(socat);
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(daemon.child.id() as i32, libc::SIGTERM) };
    let status = daemon.child.wait().unwrap();
    assert!(status.success(), "{status}");
}

/// A real Prometheus on loopback, its configuration and storage in `dir`,
/// scraping `target` every second. Killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    stderr: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, target: u16) -> Self {
        let port = free_port("4", "tcp");
        let conf = dir.join("prometheus.yml");
        std::fs::write(
            &conf,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: watcher\n    static_configs:\n      - targets: ['127.0.0.1:{target}']\n"
            ),
        )
        .unwrap();
        let stderr = dir.join("prometheus.stderr");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", conf.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("prometheus-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("spawning prometheus (cargo xtask setup --test-deps installs it)");
        Self { child, port, stderr }
    }

    /// GET on Prometheus's HTTP API; None while it does not answer yet.
    fn api(&mut self, path: &str) -> Option<Value> {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("prometheus exited ({status}): {}", std::fs::read_to_string(&self.stderr).unwrap_or_default());
        }
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", self.port).ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        if !head.starts_with("HTTP/1.1 200") {
            return None;
        }
        if !head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            return serde_json::from_str(body).ok();
        }
        // Go chunks a body too long for its first buffer: SIZE CRLF DATA CRLF … 0.
        let (mut rest, mut whole) = (body, String::new());
        loop {
            let (size, after) = rest.split_once("\r\n")?;
            let size = usize::from_str_radix(size.trim(), 16).ok()?;
            if size == 0 {
                return serde_json::from_str(&whole).ok();
            }
            whole.push_str(after.get(..size)?);
            rest = after.get(size + 2..)?;
        }
    }

    /// Polls the API until `done` accepts its answer; returns that answer.
    fn until(&mut self, what: &str, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + TIMEOUT;
        let mut last = None;
        loop {
            if let Some(answer) = self.api(path) {
                if done(&answer) {
                    return answer;
                }
                last = Some(answer);
            }
            assert!(Instant::now() < deadline, "prometheus: no {what} within {TIMEOUT:?}; last answer: {last:#?}");
            thread::sleep(POLL);
        }
    }

    /// An instant query's samples: (labels, value).
    fn query(&mut self, what: &str, query: &str, done: impl Fn(&[(Value, f64)]) -> bool) -> Vec<(Value, f64)> {
        let encoded: String = query
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let samples = |answer: &Value| -> Vec<(Value, f64)> {
            answer["data"]["result"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| Some((s["metric"].clone(), s["value"][1].as_str()?.parse().ok()?)))
                .collect()
        };
        let answer = self.until(what, &format!("/api/v1/query?query={encoded}"), |a| done(&samples(a)));
        samples(&answer)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's prometheus scrapes the daemon's endpoint: the target is up,
/// the alert counter of a rule goes from 0 to 1 when a listener the rule
/// gives to another program comes up, and the live listener gauge counts it.
#[test]
fn a_real_prometheus_scrapes_the_daemon() {
    if !require_bpf("a_real_prometheus_scrapes_the_daemon") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (port, metrics) = (free_port("4", "tcp"), free_port("4", "tcp"));
    let config = config_file(
        dir.path(),
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{metrics}\"\n[[allow]]\nname = \"ours\"\nproto = \"tcp\"\nport = {port}\ncomm = \"nosuchprogram\"\nseverity = \"critical\"\n"
        ),
    );
    let mut watcher = daemon(&config);
    let mut prometheus = Prometheus::start(dir.path(), metrics);
    let instance = format!("127.0.0.1:{metrics}");
    prometheus.until("target up", "/api/v1/targets", |a| {
        a["data"]["activeTargets"]
            .as_array()
            .is_some_and(|ts| ts.iter().any(|t| t["labels"]["instance"] == instance.as_str() && t["health"] == "up"))
    });
    let alerts = "watcher_alerts_total{rule=\"ours\",severity=\"critical\"}";
    let before = prometheus.query("the rule's alert counter", alerts, |s| !s.is_empty());
    assert_eq!(before.len(), 1, "{before:?}");
    assert_eq!(before[0].1, 0.0, "no alert yet: {before:?}");
    assert_eq!(before[0].0["job"], "watcher");
    assert_eq!(before[0].0["instance"], instance.as_str());

    let socat = KillOnDrop(
        Command::new("socat")
            .args([format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"), "STDOUT".into()])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ours = |e: &Value| e["pid"] == socat.0.id() && e["port"] == port;
    let alert = watcher.next_event(|e| e["event"] == "alert" && ours(e));
    assert_eq!((alert["rule"].as_str(), alert["severity"].as_str()), (Some("ours"), Some("critical")), "{alert}");
    let after = prometheus.query("the alert counted", alerts, |s| s.iter().any(|(_, v)| *v >= 1.0));
    assert_eq!(after[0].1, 1.0, "one listener, one alert: {after:?}");
    let live = prometheus.query("watcher_live_listeners", "watcher_live_listeners", |s| !s.is_empty());
    assert!(live[0].1 >= 1.0, "socat's listener is live: {live:?}");
    let ups = prometheus.query("listener_up counted", "watcher_events_total{event=\"listener_up\"}", |s| {
        s.iter().any(|(_, v)| *v >= 1.0)
    });
    assert_eq!(ups[0].0["instance"], instance.as_str(), "{ups:?}");
    let up = prometheus.query("up", &format!("up{{instance=\"{instance}\"}}"), |s| !s.is_empty());
    assert_eq!(up[0].1, 1.0, "{up:?}");
}
