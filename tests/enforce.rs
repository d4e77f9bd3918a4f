//! End-to-end tests of enforcement in `watcher daemon` (issue 4): binds
//! refused in the kernel with EPERM and reported as `denied`, binds the
//! rules allow left alone, nothing changed with enforcement off, and rules
//! refilled on SIGHUP; on a kernel that refuses BPF LSM programs (this
//! host's), listen(), raw and packet sockets left alone and said to be.
//! Real kernel, real python3 children. Where the kernel has BPF LSM the
//! guest scenario tests its refusals (tests/guest/lsm_enforce.py).
//!
//! Enforcement is always confined with `enforce_cgroup` to a cgroup v2
//! directory each test makes for its own children, so that no other
//! process on the host (other tests, daemons) ever sees a refused bind.
mod common;

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use common::{SocketChild, Watcher, free_port, program, require_bpf};
use serde_json::Value;

/// A cgroup v2 directory of this test's own, removed when dropped (declare
/// it before the children it holds: they are dropped, killed and reaped
/// first, and an empty cgroup can be removed).
struct TestCgroup {
    path: PathBuf,
}

impl TestCgroup {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        // Where the watcher finds it: /proc/self/mountinfo.
        let root = watcher::kernel::loader::cgroup2_mount().expect("a cgroup v2 mount");
        let name = format!("watcher-enforce-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let path = root.join(name);
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
        Self { path }
    }

    /// Moves `pid` into this cgroup; its sockets made from now on are judged here.
    fn add(&self, pid: u32) {
        std::fs::write(self.path.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", self.path.display()));
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.path) {
            eprintln!("removing {}: {e}", self.path.display());
        }
    }
}

/// A python3 child in `cgroup` that binds on command (tests/programs/binder.py).
fn binder(cgroup: &TestCgroup, wrapper: &[&str]) -> SocketChild {
    let child = SocketChild::spawn_program(wrapper, &program("binder.py"), "binder", &[]);
    cgroup.add(child.pid);
    child
}

/// Asks the child to bind and returns its answer: `bound PORT` or `refused ERRNO`.
fn try_bind(child: &mut SocketChild, family: &str, proto: &str, port: u16) -> String {
    let addr = if family == "4" { "127.0.0.1" } else { "::1" };
    child.say(&format!("bind {family} {proto} {addr} {port}"));
    child.read_line()
}

/// `count` different free ports of this protocol.
fn free_ports(proto: &str, count: usize) -> Vec<u16> {
    let mut ports: Vec<u16> = Vec::new();
    while ports.len() < count {
        let port = free_port("4", proto);
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    ports
}

fn config_file(dir: &tempfile::TempDir, body: &str) -> String {
    let path = dir.path().join("watcher.toml");
    std::fs::write(&path, body).unwrap();
    path.display().to_string()
}

fn enforce_header(enforce: bool, cgroup: &Path) -> String {
    format!("enforce = {enforce}\nenforce_cgroup = \"{}\"\n", cgroup.display())
}

/// /usr/bin/python3 is a link: a rule names the file it points to, as
/// /proc/PID/exe (and the allowlist's alerts) do.
fn python_exe() -> String {
    std::fs::canonicalize(common::PYTHON).unwrap().display().to_string()
}

fn is_denied(e: &Value, pid: u32, port: u16) -> bool {
    e["event"] == "denied" && e["pid"] == pid && e["port"] == port
}

/// Enforcement on: an unlisted port is refused with EPERM and reported
/// (`denied`, with the pid, port and reason); a port a rule gives to this
/// executable and user is bound, and one given to this comm on loopback; a
/// port a rule gives to another user is refused for root and bound by that
/// user; one given to another executable (socat) is refused; UDP over IPv6
/// too; port 0 is always bound; and a process outside the enforced cgroup
/// binds the unlisted port freely.
#[test]
fn enforcement_refuses_what_the_rules_do_not_allow() {
    if !require_bpf("enforcement_refuses_what_the_rules_do_not_allow") {
        return;
    }
    let cgroup = TestCgroup::new();
    let [mine, nobodys, socats, by_comm, unlisted] = free_ports("tcp", 5)[..] else { unreachable!() };
    let udp_unlisted = free_port("6", "udp");
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        &format!(
            "{}[[allow]]\nname = \"mine\"\nproto = \"tcp\"\nport = {mine}\nexe = \"{}\"\nuser = \"root\"\n\
             [[allow]]\nname = \"nobodys\"\nproto = \"tcp\"\nport = {nobodys}\nuser = \"nobody\"\n\
             [[allow]]\nname = \"socats\"\nproto = \"tcp\"\nport = {socats}\nexe = \"/usr/bin/socat\"\n\
             [[allow]]\nname = \"by-comm\"\nproto = \"tcp\"\nport = {by_comm}\ncomm = \"python3\"\nscope = \"loopback\"\n",
            enforce_header(true, &cgroup.path),
            python_exe()
        ),
    );
    let mut watcher = Watcher::start(&["daemon", "--config", &config]);
    let mut child = binder(&cgroup, &[]);
    let pid = child.pid;

    assert_eq!(try_bind(&mut child, "4", "tcp", unlisted), "refused EPERM");
    let denied = watcher.next_event(|e| is_denied(e, pid, unlisted));
    assert_eq!((denied["proto"].as_str(), denied["family"].as_str()), (Some("tcp"), Some("ipv4")), "{denied}");
    assert_eq!((denied["addr"].as_str(), denied["errno"].as_str()), (Some("127.0.0.1"), Some("EPERM")), "{denied}");
    assert_eq!((denied["comm"].as_str(), denied["user"].as_str()), (Some("python3"), Some("root")), "{denied}");
    assert_eq!(denied["exe"].as_str(), Some(python_exe().as_str()), "{denied}");
    assert_eq!(denied["rule"], Value::Null, "{denied}");
    let reason = denied["reason"].as_str().unwrap();
    assert!(reason.starts_with(&format!("no rule allows tcp port {unlisted} on 127.0.0.1")), "{denied}");

    assert_eq!(try_bind(&mut child, "4", "tcp", mine), format!("bound {mine}"));

    assert_eq!(try_bind(&mut child, "4", "tcp", nobodys), "refused EPERM");
    let denied = watcher.next_event(|e| is_denied(e, pid, nobodys));
    assert_eq!(denied["rule"], "nobodys", "{denied}");
    let reason = denied["reason"].as_str().unwrap();
    assert!(reason.contains("given to rule \"nobodys\" (user=nobody)") && reason.contains("user=root"), "{denied}");

    // Another program's port; a port for this comm on loopback.
    assert_eq!(try_bind(&mut child, "4", "tcp", socats), "refused EPERM");
    let denied = watcher.next_event(|e| is_denied(e, pid, socats));
    assert_eq!(denied["rule"], "socats", "{denied}");
    assert!(denied["reason"].as_str().unwrap().contains("(exe=/usr/bin/socat"), "{denied}");
    assert_eq!(try_bind(&mut child, "4", "tcp", by_comm), format!("bound {by_comm}"));

    // IPv6 and UDP go through cgroup/bind6 and the UDP half of the ports.
    assert_eq!(try_bind(&mut child, "6", "udp", udp_unlisted), "refused EPERM");
    let denied = watcher.next_event(|e| is_denied(e, pid, udp_unlisted));
    assert_eq!((denied["proto"].as_str(), denied["family"].as_str()), (Some("udp"), Some("ipv6")), "{denied}");
    assert_eq!(denied["addr"], "::1", "{denied}");

    // The kernel picks the port: never refused.
    assert!(try_bind(&mut child, "4", "tcp", 0).starts_with("bound "));

    // The user the rule names binds its port, in the same cgroup.
    let mut nobody = binder(&cgroup, &["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]);
    assert_eq!(try_bind(&mut nobody, "4", "tcp", nobodys), format!("bound {nobodys}"));

    // Outside the enforced cgroup nothing is refused.
    let outside = std::net::TcpListener::bind(("127.0.0.1", unlisted));
    assert!(outside.is_ok(), "a bind outside the cgroup: {outside:?}");
    drop(outside);

    drop(child);
    drop(nobody);
    let (status, rest) = watcher.stop();
    assert!(status.success(), "{status}");
    let denials: Vec<&String> = rest.iter().filter(|l| l.contains("\"event\":\"denied\"")).collect();
    assert!(denials.is_empty(), "only the refused binds are denied: {denials:?}");
}

/// The same configuration with enforcement off: the bind succeeds and
/// nothing is denied (the allowlist still alerts).
#[test]
fn enforcement_off_changes_nothing() {
    if !require_bpf("enforcement_off_changes_nothing") {
        return;
    }
    let cgroup = TestCgroup::new();
    let [allowed, unlisted] = free_ports("tcp", 2)[..] else { unreachable!() };
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(
        &dir,
        &format!(
            "{}[[allow]]\nproto = \"tcp\"\nport = {allowed}\nuser = \"nobody\"\n",
            enforce_header(false, &cgroup.path)
        ),
    );
    let mut watcher = Watcher::start(&["daemon", "--config", &config]);
    let mut child = binder(&cgroup, &[]);
    let pid = child.pid;
    assert_eq!(try_bind(&mut child, "4", "tcp", unlisted), format!("bound {unlisted}"));
    assert_eq!(try_bind(&mut child, "4", "tcp", allowed), format!("bound {allowed}"));
    let events = watcher.events_until(|e| e["event"] == "alert" && e["pid"] == pid && e["port"] == allowed);
    assert!(events.iter().any(|e| e["event"] == "alert" && e["port"] == unlisted), "the allowlist still alerts");
    assert!(!events.iter().any(|e| e["event"] == "denied"), "{events:?}");
}

/// SIGHUP refills the kernel's rules: a broken file, and one the kernel's
/// maps cannot hold, are rejected and the port stays refused; a file that
/// allows the port lets the bind through. Enforcement from `--enforce`.
#[test]
fn reload_refills_the_kernel_rules() {
    if !require_bpf("reload_refills_the_kernel_rules") {
        return;
    }
    let cgroup = TestCgroup::new();
    let port = free_port("4", "udp");
    let dir = tempfile::tempdir().unwrap();
    let header = enforce_header(false, &cgroup.path);
    let config = config_file(&dir, &format!("{header}[[allow]]\nproto = \"udp\"\nport = 53\n"));
    let mut watcher = Watcher::start(&["daemon", "--config", &config, "--enforce"]);
    let mut child = binder(&cgroup, &[]);
    let pid = child.pid;
    assert_eq!(try_bind(&mut child, "4", "udp", port), "refused EPERM");
    watcher.next_event(|e| is_denied(e, pid, port));

    std::fs::write(&config, format!("{header}[[allow]]\nproto = \"udp\"\nport = \"{port}\n")).unwrap();
    watcher.signal(libc::SIGHUP);
    watcher.next_event(|e| e["event"] == "config_rejected");
    assert_eq!(try_bind(&mut child, "4", "udp", port), "refused EPERM", "a broken file keeps the old rules");
    watcher.next_event(|e| is_denied(e, pid, port));

    // Seventeen different users on one port: more than the kernel side checks.
    let crowded: String = (0..17)
        .map(|uid| format!("[[allow]]\nproto = \"udp\"\nport = {port}\nuser = \"{}\"\n", 20_000 + uid))
        .collect();
    std::fs::write(&config, format!("{header}{crowded}")).unwrap();
    watcher.signal(libc::SIGHUP);
    let rejected = watcher.next_event(|e| e["event"] == "config_rejected");
    assert!(rejected["reason"].as_str().unwrap().contains("at most 16"), "{rejected}");
    assert_eq!(try_bind(&mut child, "4", "udp", port), "refused EPERM", "the old rules stay in the kernel");
    watcher.next_event(|e| is_denied(e, pid, port));

    std::fs::write(&config, format!("{header}[[allow]]\nproto = \"udp\"\nport = {port}\nuser = \"root\"\n")).unwrap();
    watcher.signal(libc::SIGHUP);
    let reloaded = watcher.next_event(|e| e["event"] == "config_reloaded");
    assert_eq!(reloaded["rules"], 1, "{reloaded}");
    assert_eq!(try_bind(&mut child, "4", "udp", port), format!("bound {port}"));
}

/// An `enforce_cgroup` that is not a cgroup v2 directory is a bad
/// configuration: one line that says why, exit 2. (No BPF needed: the
/// daemon stops before loading anything.)
#[test]
fn enforce_cgroup_outside_cgroup2_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(&dir, &format!("enforce = true\nenforce_cgroup = \"{}\"\n", dir.path().display()));
    let out = Command::new(common::watcher_bin()).args(["daemon", "--config", &config]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a directory of the cgroup v2 file system"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// `kill_unexpected` stops a listen in the kernel when its maps allow it
/// to no one, and the daemon lets it go on (SIGCONT) when its own
/// allowlist allows it after all. Here the rule names an executable by
/// path, and the file is replaced after the daemon loaded the rules (a new
/// inode, as a package upgrade writes): the kernel, matching by inode,
/// stops the listen; the allowlist, matching by path, allows it. The
/// listener runs on past listen(), and nothing is killed.
#[test]
fn a_listen_stopped_in_the_kernel_that_the_allowlist_allows_goes_on() {
    if !require_bpf("a_listen_stopped_in_the_kernel_that_the_allowlist_allows_goes_on") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("python3");
    std::fs::copy(python_exe(), &exe).unwrap();
    let port = free_port("4", "tcp");
    let rule = format!("[[allow]]\nname = \"by path\"\nproto = \"tcp\"\nport = {port}\nexe = \"{}\"\n", exe.display());
    let config = config_file(&dir, &format!("kill_unexpected = true\n\n{rule}\n{}", common::allow_all_but(&[port])));
    let mut watcher = Watcher::start(&["daemon", "--config", &config]);
    let replacement = dir.path().join("python3.new");
    std::fs::copy(python_exe(), &replacement).unwrap();
    std::fs::rename(&replacement, &exe).unwrap();

    let script = format!(
        "import socket, sys\ns = socket.socket()\ns.bind(('127.0.0.1', {port}))\ns.listen()\n\
         print('listening', flush=True)\nsys.stdin.read()\n"
    );
    let mut child = Command::new(&exe)
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let (tx, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        let _ = tx.send(line);
    });
    let up = watcher.next_event(|e| e["event"] == "listener_up" && e["pid"] == pid && e["port"] == port);
    let line = said.recv_timeout(std::time::Duration::from_secs(10));
    // Everything the daemon wrote before a listener of the test's own (one
    // ring buffer, read in order): the alert and kill, had there been any.
    let marker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (me, marker_port) = (std::process::id(), marker.local_addr().unwrap().port());
    let events = watcher.events_until(|e| e["event"] == "listen" && e["pid"] == me && e["port"] == marker_port);
    let stderr = watcher.stderr_lines();
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(line.as_deref().map(str::trim), Ok("listening"), "the listener did not run on past listen(): {up}");
    let continued = format!("pid {pid} was stopped at its listen and is allowed: SIGCONT");
    assert!(stderr.iter().any(|l| l.contains(&continued)), "not stopped in the kernel, or not let go: {stderr:#?}");
    let bad: Vec<&Value> =
        events.iter().filter(|e| e["pid"] == pid && matches!(e["event"].as_str(), Some("alert" | "killed"))).collect();
    assert!(bad.is_empty(), "{bad:?}");
}

/// On a kernel that refuses BPF LSM programs (this host's 6.18), `enforce`
/// starts all the same and says once, in one warning, what it cannot
/// enforce there: listen() (TCP and UNIX), raw and packet sockets. Nothing
/// else changes: a raw socket, a packet socket, a UNIX listener and a TCP
/// listen no rule allows are made as they were, while a bind no rule
/// allows is still refused.
#[test]
fn without_bpf_lsm_enforce_says_what_it_leaves_alone() {
    if !require_bpf("without_bpf_lsm_enforce_says_what_it_leaves_alone") {
        return;
    }
    let cgroup = TestCgroup::new();
    let [held, unlisted] = free_ports("tcp", 2)[..] else { unreachable!() };
    let dir = tempfile::tempdir().unwrap();
    let config =
        config_file(&dir, &format!("{}[[allow]]\nproto = \"udp\"\nport = 53\n", enforce_header(true, &cgroup.path)));
    // Bound before enforcement starts: only an LSM hook could refuse its listen.
    let mut child = binder(&cgroup, &[]);
    let pid = child.pid;
    child.say(&format!("hold 4 127.0.0.1 {held}"));
    assert_eq!(child.read_line(), format!("held {held}"));

    let mut watcher = Watcher::start(&["daemon", "--config", &config]);
    let stderr = watcher.stderr_lines();
    let ready = stderr.iter().find(|l| l.starts_with("watcher: ready:")).unwrap();
    if ready.contains("lsm socket_") {
        eprintln!("skipped: this kernel runs BPF LSM programs (tests/guest/lsm_enforce.py tests them)");
        return;
    }
    let warned: Vec<&String> = stderr.iter().filter(|l| l.contains("not enforced on this kernel")).collect();
    assert_eq!(warned.len(), 1, "one warning: {stderr:#?}");
    for what in
        ["listen() on TCP ports and UNIX names", "the creation of raw and packet sockets", "binds are still refused"]
    {
        assert!(warned[0].contains(what), "{what:?} not in {}", warned[0]);
    }
    // Not a hook missing for the reports: the ready line says nothing is.
    assert!(!ready.contains("NOT attached"), "{ready}");

    child.say("raw 4");
    assert_eq!(child.read_line(), "made", "a raw socket");
    child.say("packet");
    assert_eq!(child.read_line(), "made", "a packet socket");
    let path = dir.path().join("unlisted.sock").display().to_string();
    child.say(&format!("unix {path}"));
    assert_eq!(child.read_line(), format!("listening {path}"));
    child.say("listen");
    assert_eq!(child.read_line(), format!("listening {held}"));
    assert_eq!(try_bind(&mut child, "4", "tcp", unlisted), "refused EPERM");
    let denied = watcher.next_event(|e| is_denied(e, pid, unlisted));
    assert_eq!(denied["call"], "bind", "{denied}");

    drop(child);
    let (status, rest) = watcher.stop();
    assert!(status.success(), "{status}");
    let denials: Vec<&String> = rest.iter().filter(|l| l.contains("\"event\":\"denied\"")).collect();
    assert!(denials.is_empty(), "only the bind is denied: {denials:?}");
}
