//! End-to-end tests of process attribution (issue 3): events name their
//! process fully even when it is gone before watcher could read /proc.
mod common;

use std::process::Command;

use common::{Watcher, is, require_bpf};

/// Compiles tests/programs/flash_listener.c into a temporary folder.
fn flash_listener() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("flash listener"); // a space, to check exe
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/programs/flash_listener.c");
    let status = Command::new("cc").arg("-O2").arg("-o").arg(&bin).arg(&src).status().expect("running cc");
    assert!(status.success(), "compiling {}", src.display());
    (dir, bin)
}

/// A program that execs, binds, listens and exits while watcher is stopped
/// (SIGSTOP), so its /proc entry is gone long before watcher reads a single
/// record: the exe and full argv must come from the kernel's exec records.
#[test]
fn short_lived_exec_keeps_exe_and_argv() {
    if !require_bpf("short_lived_exec_keeps_exe_and_argv") {
        return;
    }
    let (_dir, bin) = flash_listener();
    let mut watcher = Watcher::start_json(&[]);
    watcher.signal(libc::SIGSTOP);
    let out = Command::new(&bin).args(["--first", "a b", "", "--last"]).output().expect("running flash_listener");
    watcher.signal(libc::SIGCONT);
    assert!(out.status.success());
    let said = String::from_utf8(out.stdout).unwrap();
    let mut words = said.split_whitespace();
    let pid: u32 = words.next().unwrap().parse().unwrap();
    let port: u16 = words.next().unwrap().parse().unwrap();
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "the child is gone");

    let listen = watcher.next_event(|e| is(e, "listen", pid) && e["port"] == port);
    assert_eq!(listen["exe"], bin.display().to_string(), "{listen}");
    let argv: Vec<&str> =
        listen["cmdline"].as_array().expect("argv known").iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(argv, [bin.to_str().unwrap(), "--first", "a b", "", "--last"], "{listen}");
    assert_eq!(listen["ppid"], std::process::id(), "{listen}");
    assert_eq!(listen["comm"], "flash listener", "{listen}");
    // Its close, at exit, is named too.
    let close = watcher.next_event(|e| is(e, "close", pid) && e["port"] == port);
    assert_eq!(close["exe"], listen["exe"]);
}

/// A worker forked without exec runs its parent's program: its events name
/// the parent's exe and argv even after both are gone.
#[test]
fn forked_worker_is_named_after_its_parent() {
    if !require_bpf("forked_worker_is_named_after_its_parent") {
        return;
    }
    let mut watcher = Watcher::start_json(&[]);
    watcher.signal(libc::SIGSTOP);
    let script = "import os,socket\n\
                  pid = os.fork()\n\
                  if pid == 0:\n\
                  \x20   s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n\
                  \x20   print(os.getpid(), s.getsockname()[1], flush=True); os._exit(0)\n\
                  os.waitpid(pid, 0)\n";
    let out = Command::new(common::PYTHON).args(["-c", script, "worker-marker"]).output().expect("running python");
    watcher.signal(libc::SIGCONT);
    let said = String::from_utf8(out.stdout).unwrap();
    let mut words = said.split_whitespace();
    let pid: u32 = words.next().unwrap().parse().unwrap();
    let port: u16 = words.next().unwrap().parse().unwrap();
    let listen = watcher.next_event(|e| is(e, "listen", pid) && e["port"] == port);
    // The path given to execve, its links resolved as /proc/PID/exe would
    // name it (/usr/bin/python3 is a link): one name for one program.
    let canonical = std::fs::canonicalize(common::PYTHON).unwrap();
    assert_eq!(listen["exe"].as_str(), canonical.to_str(), "the path given to execve, made canonical: {listen}");
    let argv = listen["cmdline"].as_array().expect("argv known");
    assert_eq!(argv.last().unwrap(), "worker-marker", "{listen}");
    assert_ne!(listen["ppid"], std::process::id(), "the worker's parent is python: {listen}");
}

/// Removes the test's cgroups (deepest first) even when the test fails.
struct CgroupDirs(Vec<std::path::PathBuf>);

impl Drop for CgroupDirs {
    fn drop(&mut self) {
        for dir in self.0.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A process in a cgroup that a container runtime would make: its events
/// carry the cgroup's path and the container id in it.
#[test]
fn events_name_cgroup_and_container() {
    if !require_bpf("events_name_cgroup_and_container") {
        return;
    }
    let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let mount = watcher::kernel::loader::cgroup2_mount().unwrap();
    let parent = mount.join(format!("watcher-test-{}", std::process::id()));
    let scope = parent.join(format!("docker-{id}.scope"));
    let dirs = CgroupDirs(vec![parent.clone(), scope.clone()]);
    std::fs::create_dir(&parent).unwrap();
    std::fs::create_dir(&scope).unwrap();

    let mut watcher = Watcher::start_json(&[]);
    let mut child = common::SocketChild::spawn("hold", &["4", "udp", "127.0.0.1", "0"]);
    let pid = child.pid;
    std::fs::write(scope.join("cgroup.procs"), pid.to_string()).unwrap();
    child.go();
    child.expect("ready");
    let bind = watcher.next_event(|e| is(e, "bind", pid));
    let expected = format!("/watcher-test-{}/docker-{id}.scope", std::process::id());
    assert_eq!(bind["cgroup"], expected.as_str(), "{bind}");
    assert_eq!(bind["container_id"], id, "{bind}");
    child.say("close");
    child.expect("closed");
    child.finish();
    drop(dirs);
    assert!(!parent.exists());
}
