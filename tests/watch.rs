//! End-to-end tests of `watcher watch` (issue 2): real eBPF programs in the
//! running kernel, real child processes opening real sockets.
mod common;

use std::{collections::HashSet, process::Command};

use common::{Decision, SocketChild, Watcher, decide, free_port, is, require_bpf};
use serde_json::Value;

const NOBODY: [&str; 4] = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];

/// One child opens one socket as user nobody; watcher must report its bind,
/// its listen (TCP) and its close, with every field right.
fn one_socket(family: &str, proto: &str, explicit_port: bool) {
    if !require_bpf(&format!("one_socket {proto}{family}")) {
        return;
    }
    let addr = if family == "4" { "127.0.0.1" } else { "::1" };
    let asked = if explicit_port { free_port(family, proto) } else { 0 };
    let mut watcher = Watcher::start_json(&[]);
    let mut child = SocketChild::spawn_with(&NOBODY, "hold", &[family, proto, addr, &asked.to_string()]);
    let (pid, exe, comm) = (child.pid, child.exe(), child.comm());
    child.go();
    let port: u16 = child.expect("ready")[0].parse().unwrap();
    if explicit_port {
        assert_eq!(port, asked);
    } else {
        assert_ne!(port, 0);
    }

    let check = |e: &Value, event: &str| {
        assert_eq!(e["event"], event, "{e}");
        assert_eq!(e["pid"], pid, "{e}");
        assert_eq!(e["tid"], pid, "single-threaded child: {e}");
        assert_eq!(e["ppid"], std::process::id(), "{e}");
        assert_eq!(e["comm"], comm.as_str(), "{e}");
        assert_eq!(e["exe"], exe.as_str(), "{e}");
        assert_eq!(e["uid"], 65534, "{e}");
        assert_eq!(e["user"], "nobody", "{e}");
        assert_eq!(e["proto"], proto, "{e}");
        assert_eq!(e["family"], if family == "4" { "ipv4" } else { "ipv6" }, "{e}");
        assert_eq!(e["addr"], addr, "{e}");
        assert_eq!(e["port"], port, "{e}");
        let argv = e["cmdline"].as_array().expect("cmdline is an array");
        assert!(argv.iter().any(|a| a == "hold"), "{e}");
        assert!(chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).is_ok(), "{e}");
        assert!(e["ktime_ns"].as_u64().unwrap() > 0, "{e}");
    };
    let ours = |event: &'static str| move |e: &Value| is(e, event, pid) && e["port"] == port;

    check(&watcher.next_event(ours("bind")), "bind");
    if proto == "tcp" {
        check(&watcher.next_event(ours("listen")), "listen");
    }
    child.say("close");
    child.expect("closed");
    check(&watcher.next_event(ours("close")), "close");
    child.finish();
}

#[test]
fn tcp4_explicit_port() {
    one_socket("4", "tcp", true);
}
#[test]
fn tcp4_port_zero() {
    one_socket("4", "tcp", false);
}
#[test]
fn tcp6_explicit_port() {
    one_socket("6", "tcp", true);
}
#[test]
fn tcp6_port_zero() {
    one_socket("6", "tcp", false);
}
#[test]
fn udp4_explicit_port() {
    one_socket("4", "udp", true);
}
#[test]
fn udp4_port_zero() {
    one_socket("4", "udp", false);
}
#[test]
fn udp6_explicit_port() {
    one_socket("6", "udp", true);
}
#[test]
fn udp6_port_zero() {
    one_socket("6", "udp", false);
}

/// Bind, listen and close at once: well under a millisecond, far below any
/// polling interval. Both the listen and the close must be reported.
#[test]
fn sub_millisecond_listener_is_seen() {
    if !require_bpf("sub_millisecond_listener_is_seen") {
        return;
    }
    let mut watcher = Watcher::start_json(&[]);
    for family in ["4", "6"] {
        let addr = if family == "4" { "127.0.0.1" } else { "::1" };
        let mut child = SocketChild::spawn("flash", &[family, addr]);
        let pid = child.pid;
        child.go();
        let said = child.expect("port");
        let port: u16 = said[0].parse().unwrap();
        let lived_ns: u64 = said[2].parse().unwrap();
        child.finish();
        eprintln!("listener on port {port} lived {lived_ns} ns");
        let listen = watcher.next_event(|e| is(e, "listen", pid) && e["port"] == port);
        let close = watcher.next_event(|e| is(e, "close", pid) && e["port"] == port);
        assert_eq!(listen["comm"], "python3");
        assert!(close["ktime_ns"].as_u64() >= listen["ktime_ns"].as_u64());
    }
}

/// 1,000 listeners opened as fast as a child can, while another process
/// churns sockets of its own: each reported exactly once, nothing lost.
#[test]
fn thousand_listeners_each_reported_once() {
    if !require_bpf("thousand_listeners_each_reported_once") {
        return;
    }
    let mut watcher = Watcher::start_json(&[]);
    let mut noise = SocketChild::spawn("noise", &[]);
    noise.go();
    noise.expect("noisy");
    let mut child = SocketChild::spawn("many", &["1000"]);
    let pid = child.pid;
    child.go();
    let ports: Vec<u16> = child.expect("ports").iter().map(|p| p.parse().unwrap()).collect();
    child.expect("closed");
    child.finish();
    assert_eq!(ports.len(), 1000);
    let expected: HashSet<u16> = ports.iter().copied().collect();
    assert_eq!(expected.len(), 1000, "the kernel gave 1000 distinct ports");

    // The child's closes come after its listens; once the last close is in,
    // every listen (and any duplicate of one) has been delivered.
    let last_port = *ports.last().unwrap();
    let events = watcher.events_until(|e| is(e, "close", pid) && e["port"] == last_port);
    let lost: Vec<&Value> = events.iter().filter(|e| e["event"] == "lost").collect();
    assert!(lost.is_empty(), "records lost: {lost:?}");
    let listens: Vec<u16> =
        events.iter().filter(|e| is(e, "listen", pid)).map(|e| e["port"].as_u64().unwrap() as u16).collect();
    assert_eq!(listens.len(), 1000, "one listen event per listener");
    assert_eq!(listens.iter().copied().collect::<HashSet<_>>(), expected);
    drop(noise);
}

/// Every documented field is present, of the documented type.
#[test]
fn json_lines_carry_every_field() {
    if !require_bpf("json_lines_carry_every_field") {
        return;
    }
    let mut watcher = Watcher::start_json(&[]);
    let mut child = SocketChild::spawn("hold", &["4", "tcp", "127.0.0.1", "0"]);
    let pid = child.pid;
    child.go();
    child.expect("ready");
    let event = watcher.next_event(|e| is(e, "listen", pid));
    let object = event.as_object().unwrap();
    let strings = ["time", "event", "proto", "family", "addr", "comm", "exe", "user"];
    let numbers = ["ktime_ns", "port", "pid", "tid", "ppid", "uid"];
    for key in strings {
        assert!(object.get(key).is_some_and(Value::is_string), "{key} in {event}");
    }
    for key in numbers {
        assert!(object.get(key).is_some_and(Value::is_u64), "{key} in {event}");
    }
    assert!(object.get("cmdline").is_some_and(Value::is_array), "{event}");
    child.say("close");
}

/// The table: a header, then rows whose columns start where the header's
/// do. Also checks that --pid, --proto and -6 each exclude what they should:
/// the child also opens TCP/IPv6 and UDP/IPv4 sockets, and another child a
/// UDP/IPv6 one.
#[test]
fn table_aligns_and_filters_apply() {
    if !require_bpf("table_aligns_and_filters_apply") {
        return;
    }
    let mut child =
        SocketChild::spawn("hold", &["6", "udp", "::1", "0", "6", "tcp", "::1", "0", "4", "udp", "127.0.0.1", "0"]);
    let mut other = SocketChild::spawn("hold", &["6", "udp", "::1", "0"]);
    let (pid, other_pid) = (child.pid.to_string(), other.pid);
    let mut watcher = Watcher::start(&["watch", "--pid", &pid, "--proto", "udp", "-6"]);
    let header = watcher.next_line(|l| l.starts_with("TIME"));
    other.go();
    other.expect("ready");
    child.go();
    let port = child.expect("ready")[0].clone();
    let bind = watcher.next_line(|l| l.contains(" bind "));
    child.say("close");
    child.expect("closed");
    let close = watcher.next_line(|l| l.contains(" close "));
    for row in [&bind, &close] {
        for column in ["EVENT", "USER", "COMMAND", "PID", "PROTO", "LOCAL-ADDRESS"] {
            let at = header.find(column).unwrap();
            assert_eq!(&row[at - 1..at], " ", "{column} in {row:?}");
            assert_ne!(&row[at..=at], " ", "{column} starts at the header's column in {row:?}");
        }
        assert!(row.contains(&format!(" {pid} ")), "{row}");
        assert!(row.contains(" udp6 "), "{row}");
        let address = format!("[::1]:{port}");
        // Then nothing, or the port's well-known name if it has one.
        assert!(row.ends_with(&address) || row.contains(&format!("{address} (")), "{row}");
    }
    other.say("close");
    other.expect("closed");
    child.finish();
    other.finish();
    let (status, rest) = watcher.stop();
    assert!(status.success(), "SIGTERM is a clean stop: {status}");
    // By then every other event of both children has been read: none passed.
    let other_pid = format!(" {other_pid} ");
    for line in &rest {
        assert!(!line.contains(&other_pid), "--pid let through {line}");
        assert!(!line.contains("tcp"), "--proto udp let through {line}");
        assert!(!line.contains("udp4"), "-6 let through {line}");
    }
}

/// Well-known ports carry their name from /etc/services, in JSON, in the
/// table, and in `watcher list`.
#[test]
fn well_known_ports_are_named() {
    if !require_bpf("well_known_ports_are_named") {
        return;
    }
    // finger (79/tcp) and tftp (69/udp): in Debian's /etc/services, and
    // nothing on a test host serves them.
    let mut child = SocketChild::spawn("hold", &["4", "tcp", "127.0.0.1", "79", "4", "udp", "127.0.0.1", "69"]);
    let pid = child.pid;
    let pid_text = pid.to_string();
    let mut json = Watcher::start_json(&["--pid", &pid_text]);
    let mut table = Watcher::start(&["watch", "--pid", &pid_text]);
    child.go();
    assert_eq!(child.expect("ready"), ["79", "69"]);
    let listen = json.next_event(|e| is(e, "listen", pid));
    assert_eq!((listen["port"].as_u64(), listen["service"].as_str()), (Some(79), Some("finger")), "{listen}");
    let bind = json.next_event(|e| is(e, "bind", pid) && e["proto"] == "udp");
    assert_eq!((bind["port"].as_u64(), bind["service"].as_str()), (Some(69), Some("tftp")), "{bind}");
    let row = table.next_line(|l| l.contains(" listen "));
    assert!(row.ends_with("127.0.0.1:79 (finger)"), "{row}");

    let out = std::process::Command::new(common::watcher_bin())
        .args(["list", "--json", "--pid", &pid_text])
        .output()
        .unwrap();
    let rows: Vec<serde_json::Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let services: Vec<_> = rows.iter().map(|r| (r["port"].as_u64(), r["service"].as_str())).collect();
    assert!(services.contains(&(Some(79), Some("finger"))) && services.contains(&(Some(69), Some("tftp"))), "{rows:?}");
    child.say("close");
    child.expect("closed");
    child.finish();
}

/// Without privileges: one clear line, exit code 1, no panic or backtrace.
#[test]
fn unprivileged_user_gets_a_clear_error() {
    if !require_bpf("unprivileged_user_gets_a_clear_error") {
        return; // dropping to nobody needs root too
    }
    let out = Command::new("setpriv")
        .args(NOBODY)
        .args(["--inh-caps=-all", common::watcher_bin(), "watch"])
        .output()
        .expect("running setpriv");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(stderr.contains("insufficient privileges"), "{stderr}");
    assert!(stderr.contains("root") && stderr.contains("CAP_BPF"), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn ci_without_bpf_fails_instead_of_skipping() {
    assert_eq!(decide(true, true), Decision::Run);
    assert!(matches!(decide(false, false), Decision::Skip(_)));
    let in_ci = std::panic::catch_unwind(|| decide(false, true));
    assert!(in_ci.is_err(), "CI=true without root must fail the test");
}

/// `watcher watch` with stdout on a pipe the test holds, once it is ready.
fn watch_on_a_pipe(args: &[&str]) -> (std::process::Child, std::process::ChildStdout) {
    use std::io::BufRead as _;
    let mut child = Command::new(common::watcher_bin())
        .arg("watch")
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (ready, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            eprintln!("[watcher stderr] {line}");
            if line.starts_with("watcher: ready:") || line.starts_with("watcher: error:") {
                let _ = ready.send(line);
            }
        }
    });
    let line = said.recv_timeout(common::TIMEOUT).expect("watcher said nothing");
    assert!(line.starts_with("watcher: ready:"), "{line}");
    let stdout = child.stdout.take().unwrap();
    (child, stdout)
}

/// Waits for the child to exit, at most `within`.
fn exit_within(child: &mut std::process::Child, within: std::time::Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// `watcher watch | head`: when the reader goes away, watch exits 0 at
/// once, even when it has nothing to write (a filter no event passes: it
/// would otherwise notice only at its next write, i.e. never).
#[test]
fn watch_exits_0_at_once_when_its_reader_goes() {
    if !require_bpf("watch_exits_0_at_once_when_its_reader_goes") {
        return;
    }
    let (mut child, stdout) = watch_on_a_pipe(&["--json", "--no-snapshot", "--port", "1"]);
    let closed = std::time::Instant::now();
    drop(stdout);
    let status = exit_within(&mut child, std::time::Duration::from_secs(5)).expect("watch went on with no reader");
    assert!(status.success(), "{status}");
    eprintln!("exited {:?} after its reader went", closed.elapsed());

    // The reader takes one line of the snapshot, then goes (`| head -1`).
    let (mut child, stdout) = watch_on_a_pipe(&["--json"]);
    let mut first = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut first).unwrap();
    assert!(first.contains("\"event\":\"existing\""), "{first}");
    let status = exit_within(&mut child, std::time::Duration::from_secs(5)).expect("watch went on with no reader");
    assert!(status.success(), "{status}");
}

#[test]
fn ring_buffer_sizes_that_cannot_be_are_refused() {
    for (asked, says) in [
        ("3", "3 MiB: the ring buffer must be a power of two from 1 to 256 MiB"),
        ("512", "512 MiB: the ring buffer must be a power of two from 1 to 256 MiB"),
        ("0", "0 MiB: the ring buffer must be a power of two from 1 to 256 MiB"),
        ("2M", "\"2M\" is not a number of MiB"),
    ] {
        for command in ["watch", "daemon"] {
            let mut args = vec![command, "--ring-buffer-mib", asked];
            if command == "daemon" {
                args.extend(["--config", "/nonexistent"]);
            }
            let out = Command::new(common::watcher_bin()).args(&args).output().expect("running watcher");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(stderr.contains(says), "{args:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        }
    }
}
