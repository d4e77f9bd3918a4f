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
