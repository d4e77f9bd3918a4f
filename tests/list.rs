//! End-to-end tests of `watcher list` (issue 3): real child processes hold
//! real sockets; what watcher lists must be what `ss` lists for them, on the
//! same host at the same time. The host has sockets of its own, so every
//! comparison is restricted to the pids of this test's children.
mod common;

use std::{
    collections::{BTreeSet, HashSet},
    process::{Command, Output},
};

use common::{SocketChild, program, require_bpf};
use serde_json::Value;

/// A row as both tools can give it: (kind, local address or path, pid, fd, inode).
type Row = (String, String, u32, i32, u64);

fn watcher(args: &[&str]) -> Output {
    Command::new(common::watcher_bin()).arg("list").args(args).output().expect("running watcher list")
}

/// `watcher list --json ARGS`, one JSON object per line.
fn list_json(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = watcher(&all);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "watcher list failed: {stderr}");
    String::from_utf8(out.stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// ss's name for a kind of socket.
fn netid(e: &Value) -> String {
    match (e["proto"].as_str().unwrap(), e["sock_type"].as_str().unwrap()) {
        ("unix", "SOCK_STREAM") => "u_str",
        ("unix", "SOCK_SEQPACKET") => "u_seq",
        ("unix", "SOCK_DGRAM") => "u_dgr",
        ("packet", "SOCK_RAW") => "p_raw",
        ("packet", "SOCK_DGRAM") => "p_dgr",
        (proto, _) => proto,
    }
    .to_owned()
}

/// watcher's rows, as ss would write their local address.
fn watcher_rows(events: &[Value], pids: &HashSet<u32>) -> BTreeSet<Row> {
    events
        .iter()
        .filter(|e| e["pid"].as_u64().is_some_and(|p| pids.contains(&(p as u32))))
        .map(|e| {
            let local = match (e["family"].as_str().unwrap(), e["proto"].as_str().unwrap()) {
                ("unix", _) => e["path"].as_str().unwrap().to_owned(),
                ("packet", _) => "*".to_owned(),
                ("ipv4", "raw") => format!("{}:{}", e["addr"].as_str().unwrap(), e["protocol"]),
                ("ipv6", "raw") => format!("[{}]:{}", e["addr"].as_str().unwrap(), e["protocol"]),
                ("ipv4", _) => format!("{}:{}", e["addr"].as_str().unwrap(), e["port"]),
                _ => format!("[{}]:{}", e["addr"].as_str().unwrap(), e["port"]),
            };
            let pid = e["pid"].as_u64().unwrap() as u32;
            let fd = e["fd"].as_i64().unwrap() as i32;
            (netid(e), local, pid, fd, e["inode"].as_u64().unwrap())
        })
        .collect()
}

/// Runs `ss` with these options and `-H -n -p -e`, and returns one row per
/// (socket, holder) whose holder is one of `pids`. Local addresses are as
/// ss prints them: `127.0.0.1:80`, `[::1]:80`, `/path`, `@abstract`; a
/// packet socket's is `*`; a raw socket's port is its protocol.
fn ss_rows(options: &str, pids: &HashSet<u32>) -> BTreeSet<Row> {
    let out = Command::new("ss").args(["-H", "-n", "-p", "-e", options]).output().expect("running ss (iproute2)");
    assert!(out.status.success(), "ss failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut rows = BTreeSet::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let netid = words[0];
        let (local, inode) = if netid.starts_with("u_") {
            // NETID STATE RECV-Q SEND-Q PATH INODE PEER PEER-INODE ...
            (words[4].to_owned(), words[5].parse().unwrap())
        } else {
            let inode = words.iter().find_map(|w| w.strip_prefix("ino:")).map_or(0, |n| n.parse().unwrap());
            let local = if netid.starts_with("p_") { "*".to_owned() } else { words[4].to_owned() };
            (local, inode)
        };
        for (pid, fd) in holders_in(line) {
            if pids.contains(&pid) {
                rows.insert((netid.to_owned(), local.clone(), pid, fd, inode));
            }
        }
    }
    rows
}

/// The (pid, fd) pairs of ss's `users:(("comm",pid=N,fd=M),...)`.
fn holders_in(line: &str) -> Vec<(u32, i32)> {
    line.match_indices("pid=")
        .map(|(i, _)| {
            let rest = &line[i + 4..];
            let (pid, rest) = rest.split_once(",fd=").unwrap();
            let fd: String = rest.chars().take_while(char::is_ascii_digit).collect();
            (pid.parse().unwrap(), fd.parse().unwrap())
        })
        .collect()
}

fn netns() -> u64 {
    let link = std::fs::read_link("/proc/self/ns/net").unwrap();
    let text = link.to_str().unwrap();
    text.trim_start_matches("net:[").trim_end_matches(']').parse().unwrap()
}

/// TCP and UDP on both families, UNIX sockets of every kind (path and
/// abstract), and a listener shared by a pre-forking parent and its two
/// workers: `watcher list --json` and `ss -lntupx -p` list the same rows
/// for them (kind, address or path, pid, fd, inode).
#[test]
fn list_matches_ss() {
    if !require_bpf("list_matches_ss") {
        return;
    }
    let mut hold = SocketChild::spawn(
        "hold",
        &["4", "tcp", "127.0.0.1", "0", "4", "udp", "127.0.0.1", "0", "6", "tcp", "::1", "0", "6", "udp", "::1", "0"],
    );
    hold.go();
    let ports = hold.expect("ready");
    let mut prefork = SocketChild::spawn("prefork", &["4", "tcp", "127.0.0.1", "0", "6", "udp", "::1", "0"]);
    prefork.go();
    let shared_ports: Vec<u64> = prefork.expect("ready").iter().map(|p| p.parse().unwrap()).collect();
    let workers: Vec<u32> = prefork.expect("workers").iter().map(|p| p.parse().unwrap()).collect();
    let dir = tempfile::tempdir().unwrap();
    let abstract_name = format!("watcher-list-test-{}", std::process::id());
    let mut unix = SocketChild::spawn("unix", &[dir.path().to_str().unwrap(), &abstract_name]);
    unix.go();
    let unix_fds = unix.expect("ready");

    let mut pids: HashSet<u32> = HashSet::from([hold.pid, prefork.pid, unix.pid]);
    pids.extend(&workers);
    let events = list_json(&[]);
    let ours = watcher_rows(&events, &pids);
    let theirs = ss_rows("-lntupx", &pids);
    assert_eq!(ours, theirs, "watcher list vs ss -lntupx -p");

    // Every socket the children said they opened is there.
    let rows_of = |pid: u32| ours.iter().filter(|r| r.2 == pid).collect::<Vec<_>>();
    let held = rows_of(hold.pid);
    assert_eq!(held.len(), 4, "{held:?}");
    for (port, kind) in ports.iter().zip(["tcp", "udp", "tcp", "udp"]) {
        assert!(held.iter().any(|r| r.0 == kind && r.1.ends_with(&format!(":{port}"))), "{kind} {port}: {held:?}");
    }
    let paths: Vec<String> = ["stream.sock", "seqpacket.sock", "dgram.sock"]
        .iter()
        .map(|f| dir.path().join(f).display().to_string())
        .chain([format!("@{abstract_name}")])
        .collect();
    let unix_rows = rows_of(unix.pid);
    for ((path, kind), fd) in paths.iter().zip(["u_str", "u_seq", "u_dgr", "u_str"]).zip(&unix_fds) {
        assert!(
            unix_rows.iter().any(|r| r.0 == kind && &r.1 == path && r.3.to_string() == *fd),
            "{kind} {path} fd {fd}: {unix_rows:?}"
        );
    }

    // The shared sockets: one row for each of the three holders, one inode.
    for port in &shared_ports {
        let rows: Vec<&Value> = events
            .iter()
            .filter(|e| e["port"] == *port && e["pid"].as_u64().is_some_and(|p| pids.contains(&(p as u32))))
            .collect();
        let holders: HashSet<u64> = rows.iter().map(|e| e["pid"].as_u64().unwrap()).collect();
        let expected: HashSet<u64> = [prefork.pid, workers[0], workers[1]].map(u64::from).into();
        assert_eq!(holders, expected, "port {port}: {rows:?}");
        assert_eq!(rows.iter().map(|e| &e["inode"]).collect::<HashSet<_>>().len(), 1, "{rows:?}");
        assert_eq!(rows.iter().map(|e| &e["fd"]).collect::<HashSet<_>>().len(), 1, "fork keeps fd numbers");
    }

    // The fields ss has no column for.
    let exe = hold.exe();
    let ns = netns();
    for e in events.iter().filter(|e| e["pid"] == hold.pid) {
        assert_eq!(e["event"], "existing", "{e}");
        assert_eq!(e["comm"], hold.comm().as_str(), "{e}");
        assert_eq!(e["exe"], exe.as_str(), "{e}");
        assert_eq!((e["uid"].as_u64(), e["user"].as_str()), (Some(0), Some("root")), "{e}");
        assert_eq!(e["netns"], ns, "{e}");
        let argv: Vec<&str> = e["cmdline"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(argv[2], "hold", "{e}");
        assert!(e["path"].is_null(), "{e}");
    }
    for e in events.iter().filter(|e| e["pid"] == unix.pid) {
        assert!(e["addr"].is_null() && e["port"].is_null(), "{e}");
        assert_eq!(e["family"], "unix", "{e}");
    }

    prefork.say("close");
    prefork.expect("closed");
    prefork.finish();
    hold.say("close");
    hold.expect("closed");
    hold.finish();
    unix.finish();
}

/// Raw and packet sockets (the latter with a BPFDoor-style filter): the
/// same rows as `ss -lwp0`, with their protocol named.
#[test]
fn raw_and_packet_sockets_match_ss() {
    if !require_bpf("raw_and_packet_sockets_match_ss") {
        return;
    }
    let passive = program("passive.py");
    let mut raw = SocketChild::spawn_program(&[], &passive, "raw_icmp", &[]);
    raw.go();
    let raw_fd: i64 = raw.expect("ready")[0].parse().unwrap();
    let mut packet = SocketChild::spawn_program(&[], &passive, "packet_filter", &[]);
    packet.go();
    let packet_fd: i64 = packet.expect("ready")[0].parse().unwrap();
    let pids = HashSet::from([raw.pid, packet.pid]);

    let (raw_pid, packet_pid) = (raw.pid.to_string(), packet.pid.to_string());
    let events = list_json(&["--pid", &raw_pid, "--pid", &packet_pid]);
    assert_eq!(events.len(), 2, "{events:?}");
    // ss gives no inode for raw or packet sockets: compare without it.
    let strip = |rows: BTreeSet<Row>| rows.into_iter().map(|(k, l, p, f, _)| (k, l, p, f)).collect::<BTreeSet<_>>();
    assert_eq!(strip(watcher_rows(&events, &pids)), strip(ss_rows("-lw0", &pids)), "watcher list vs ss -lw0 -p");

    let r = events.iter().find(|e| e["pid"] == raw.pid).unwrap();
    assert_eq!((r["proto"].as_str(), r["family"].as_str()), (Some("raw"), Some("ipv4")), "{r}");
    assert_eq!((r["protocol"].as_u64(), r["protocol_name"].as_str()), (Some(1), Some("IPPROTO_ICMP")), "{r}");
    assert_eq!((r["fd"].as_i64(), r["addr"].as_str()), (Some(raw_fd), Some("0.0.0.0")), "{r}");
    let p = events.iter().find(|e| e["pid"] == packet.pid).unwrap();
    assert_eq!((p["proto"].as_str(), p["family"].as_str()), (Some("packet"), Some("packet")), "{p}");
    assert_eq!((p["protocol_name"].as_str(), p["sock_type"].as_str()), (Some("ETH_P_ALL"), Some("SOCK_RAW")), "{p}");
    assert_eq!(p["fd"].as_i64(), Some(packet_fd), "{p}");
    assert!(p["interface"].is_null() && p["port"].is_null(), "{p}");

    // --proto picks one kind.
    let only_raw = list_json(&["--pid", &raw_pid, "--pid", &packet_pid, "--proto", "raw"]);
    assert_eq!(only_raw.len(), 1);
    assert_eq!(only_raw[0]["pid"], raw.pid);
    raw.finish();
    packet.finish();
}

/// --pid, --comm, --port, --proto, -4 and -6 keep what they say; the table
/// has a header and one row per socket.
#[test]
fn filters_and_table() {
    if !require_bpf("filters_and_table") {
        return;
    }
    let mut child = SocketChild::spawn(
        "hold",
        &["4", "tcp", "127.0.0.1", "0", "4", "udp", "127.0.0.1", "0", "6", "tcp", "::1", "0"],
    );
    child.go();
    let ports: Vec<u64> = child.expect("ready").iter().map(|p| p.parse().unwrap()).collect();
    let pid = child.pid.to_string();
    // "PROTO FAMILY PORT" of each row, in watcher's order.
    let kinds = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["--pid", &pid];
        all.extend_from_slice(args);
        list_json(&all)
            .iter()
            .map(|e| {
                assert_eq!(e["pid"], child.pid, "{e}");
                format!("{} {} {}", e["proto"].as_str().unwrap(), e["family"].as_str().unwrap(), e["port"])
            })
            .collect()
    };
    let tcp4 = format!("tcp ipv4 {}", ports[0]);
    let udp4 = format!("udp ipv4 {}", ports[1]);
    let tcp6 = format!("tcp ipv6 {}", ports[2]);
    assert_eq!(kinds(&[]), [tcp4.as_str(), &tcp6, &udp4]);
    assert_eq!(kinds(&["--proto", "udp"]), [udp4.as_str()]);
    assert_eq!(kinds(&["--proto", "tcp", "-6"]), [tcp6.as_str()]);
    assert_eq!(kinds(&["-4"]), [tcp4.as_str(), &udp4]);
    assert_eq!(kinds(&["--port", &ports[2].to_string()]), [tcp6.as_str()]);
    assert_eq!(kinds(&["--comm", &child.comm()]).len(), 3);
    assert!(kinds(&["--comm", "no-such-comm"]).is_empty());
    assert!(kinds(&["--proto", "unix"]).is_empty());

    // Without --pid, --port still finds it among the host's sockets.
    let by_port = list_json(&["--port", &ports[1].to_string(), "--proto", "udp"]);
    assert!(by_port.iter().any(|e| e["pid"] == child.pid), "{by_port:?}");

    let out = watcher(&["--pid", &pid]);
    assert!(out.status.success());
    let table = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("USER") && lines[0].ends_with("LOCAL-ADDRESS"), "{table}");
    assert!(
        lines[1].contains(&pid)
            && lines[1].contains(" tcp4 ")
            && lines[1].ends_with(&format!("127.0.0.1:{}", ports[0])),
        "{table}"
    );
    assert!(lines[2].contains(" tcp6 ") && lines[2].ends_with(&format!("[::1]:{}", ports[2])), "{table}");
    assert!(lines[3].contains(" udp4 ") && lines[3].ends_with(&format!("127.0.0.1:{}", ports[1])), "{table}");
    child.say("close");
    child.expect("closed");
    child.finish();
}

/// A process whose comm and UNIX path hold a newline and terminal escapes
/// gets exactly one row, its bytes escaped, in the table and in JSON.
#[test]
fn hostile_names_are_escaped() {
    if !require_bpf("hostile_names_are_escaped") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut child = SocketChild::spawn("hostile", &[dir.path().to_str().unwrap()]);
    child.go();
    child.expect("ready");
    let pid = child.pid.to_string();

    let events = list_json(&["--pid", &pid]);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["comm"], "x\\nfake\\x1b[2J", "{e}");
    let path = format!("{}/a\\nroot 1 tcp4\\x1b[31m.sock", dir.path().display());
    assert_eq!(e["path"], path.as_str(), "{e}");

    let out = watcher(&["--pid", &pid]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(table.lines().count(), 2, "{table:?}");
    assert!(!table.contains('\x1b'), "{table:?}");
    assert!(table.lines().nth(1).unwrap().ends_with(&path), "{table:?}");
    child.finish();
}

/// A listener no process holds (its only fd is in flight in an SCM_RIGHTS
/// message) is still listed, once, with null process fields, as ss lists
/// it without users.
#[test]
fn socket_held_by_no_process() {
    if !require_bpf("socket_held_by_no_process") {
        return;
    }
    let mut child = SocketChild::spawn("inflight", &["127.0.0.1"]);
    child.go();
    let port = child.expect("ready")[0].clone();
    let events = list_json(&["--port", &port, "--proto", "tcp"]);
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    for field in ["pid", "comm", "exe", "cmdline", "uid", "user", "fd"] {
        assert!(e[field].is_null(), "{field}: {e}");
    }
    assert_eq!((e["addr"].as_str(), e["port"].as_u64()), (Some("127.0.0.1"), port.parse().ok()), "{e}");
    assert!(e["inode"].as_u64().unwrap() > 0, "{e}");

    let out = Command::new("ss").args(["-H", "-n", "-p", "-l", "-t", "-e"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains(&format!("127.0.0.1:{port} ")))
        .unwrap_or_else(|| panic!("ss lists the listener: {text}"));
    assert!(!line.contains("users:"), "{line}");
    assert!(line.contains(&format!("ino:{} ", e["inode"])), "{line}");
    child.finish();
}

/// Without the privileges to read other processes' fds: one clear line on
/// stderr, exit status 1, nothing on stdout.
#[test]
fn without_privileges_fails_cleanly() {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut command = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", common::watcher_bin()]);
        c
    } else {
        Command::new(common::watcher_bin())
    };
    let out = command.args(["list", "--json"]).output().expect("running watcher list");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("watcher: error: insufficient privileges"), "{stderr}");
    assert!(stderr.contains("CAP_SYS_PTRACE"), "{stderr}");
}
