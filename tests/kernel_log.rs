//! The kernel programs' own log (aya-log, issue 14 item 5), with the real
//! kernel: under `RUST_LOG=watcher=debug` watcher attaches it, and a
//! failure inside a program reaches stderr; when RUST_LOG does not enable
//! debug for `watcher::ebpf` it is not attached and nothing is said.
//!
//! The failure is honest: a bind() given an address pointer that cannot
//! be read fails with EFAULT for the caller, and the program that copies
//! that address for the `bind_failed` record (`sys_exit_bind`, or
//! `sys_enter_bind` where the arguments are not read from the saved
//! registers) counts a read_user failure (and logs it).
mod common;

use std::{
    os::fd::AsRawFd as _,
    process::Command,
    time::{Duration, Instant},
};

use common::{Watcher, is, require_bpf};

/// Calls bind() on a fresh TCP socket with an address at 8, a page no
/// process maps: the kernel's errno (EFAULT).
fn bind_bad_pointer() -> i32 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("a socket to bind again");
    // SAFETY: the kernel checks the pointer and fails with EFAULT; nothing
    // here reads or writes through it.
    let ret = unsafe { libc::bind(socket.as_raw_fd(), 8 as *const libc::sockaddr, 16) };
    assert_eq!(ret, -1, "a bind() from address 8 cannot succeed");
    std::io::Error::last_os_error().raw_os_error().unwrap()
}

/// A `watch --json` of this process only, under this RUST_LOG.
fn watcher(rust_log: &str) -> Watcher {
    let pid = std::process::id().to_string();
    let mut command = Command::new(common::watcher_bin());
    command.args(["watch", "--json", "--no-snapshot", "--pid", &pid]).env("RUST_LOG", rust_log);
    Watcher::start_command(command)
}

/// The first stderr line `keep` accepts within `wait`, if one comes.
fn stderr_line(watcher: &Watcher, wait: Duration, keep: impl Fn(&str) -> bool) -> Option<String> {
    let deadline = Instant::now() + wait;
    loop {
        if let Some(line) = watcher.stderr_lines().into_iter().find(|l| keep(l)) {
            return Some(line);
        }
        if Instant::now() >= deadline {
            return None;
        }
        // The lines come from a reader thread: look again shortly.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The failed bind as watcher reported it: the kernel side has run.
fn wait_bind_failed(watcher: &mut Watcher) {
    let pid = std::process::id();
    let event = watcher.next_event(|e| is(e, "bind_failed", pid) && e["errno"] == "EFAULT");
    assert_eq!(event["errno_code"], libc::EFAULT, "{event}");
}

#[test]
fn a_kernel_programs_failure_reaches_the_log_under_rust_log_debug() {
    if !require_bpf("a_kernel_programs_failure_reaches_the_log_under_rust_log_debug") {
        return;
    }
    let mut watcher = watcher("watcher=debug");
    assert!(
        watcher.stderr_lines().iter().any(|l| l.contains("kernel programs' log attached")),
        "no line says the kernel log is attached: {:?}",
        watcher.stderr_lines()
    );
    // One line a second per kind and CPU: a read_user failure of this
    // process's other threads (the other test) in that second may have
    // taken it, so try again after it, a few times.
    let mine = format!("tgid {}:", std::process::id());
    let mut line = None;
    for _ in 0..5 {
        assert_eq!(bind_bad_pointer(), libc::EFAULT);
        wait_bind_failed(&mut watcher);
        line = stderr_line(&watcher, Duration::from_millis(1500), |l| {
            l.contains("kernel program failure read_user") && l.contains(&mine)
        });
        if line.is_some() {
            break;
        }
    }
    let line = line.unwrap_or_else(|| panic!("no read_user line naming {mine} on stderr after 5 tries"));
    assert!(line.contains("DEBUG"), "said at debug level: {line}");
}

#[test]
fn no_kernel_log_unless_rust_log_enables_debug_for_it() {
    if !require_bpf("no_kernel_log_unless_rust_log_enables_debug_for_it") {
        return;
    }
    // watcher's own debug lines, not the kernel's: the reader stays off.
    let mut watcher = watcher("watcher=debug,watcher::ebpf=info");
    assert!(
        watcher.stderr_lines().iter().any(|l| l.contains("kernel programs' log not attached")),
        "no line says the kernel log is not attached: {:?}",
        watcher.stderr_lines()
    );
    assert_eq!(bind_bad_pointer(), libc::EFAULT);
    wait_bind_failed(&mut watcher);
    let said: Vec<String> =
        watcher.stderr_lines().into_iter().filter(|l| l.contains("kernel program failure")).collect();
    assert!(said.is_empty(), "the kernel log spoke without its reader: {said:?}");
    let (status, _) = watcher.stop();
    assert!(status.success(), "{status}");
}
