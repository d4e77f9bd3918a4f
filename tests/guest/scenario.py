"""End-to-end scenario run inside a guest kernel (see xtask/src/guest.rs).

    python3 scenario.py WATCHER OUT_DIR FLASH_LISTENER DAEMONIZING_LISTENER

Starts the real watcher, drives real sockets with the same child programs
as the host tests (tests/programs/*.py), and writes one line per check to
OUT_DIR/results.txt: "PASS name" or "FAIL name: why". The guest console
mangles long output, so everything xtask needs is in files: results.txt
(ending with "DONE" once every check ran), watcher's stderr and its events
(watcher.stderr, watcher.events.jsonl; watcher-accept.* for the --accept run;
getppid.txt, the cost of an unrelated syscall without watcher, with it, and
with it on its syscall tracepoints).

Nothing sleeps for readiness: watcher says "watcher: ready:" on stderr, the
children say what they opened on stdout, and every wait is bounded.
"""
import faulthandler
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import kill_unexpected
import lsm_enforce

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAMS = os.path.join(HERE, "..", "programs")
PYTHON = "/usr/bin/python3"
# Everything in the guest is emulated (TCG): loading and verifying every
# program takes minutes, an event a fraction of a second.
READY_TIMEOUT = 600
EVENT_TIMEOUT = 60
# A watcher not ready by then has its threads' kernel stacks and the
# guest's blocked tasks dumped (then it is waited for to READY_TIMEOUT).
STUCK_AFTER = 180
# The whole scenario's bound (xtask gives the guest 30 minutes in all):
# past it, every thread's stack goes to scenario.log and the scenario exits,
# so that a hang says where it is instead of eating CI's time.
WATCHDOG_SECS = 20 * 60
# watcher's logs in the guest: aya's own debug lines (one per relocation,
# thousands) are not needed; watcher's are (per-program load times, the
# kernel programs' log).
WATCHER_RUST_LOG = "debug,aya=info,aya_obj=info"
# What watcher's default mode attaches on Debian 12's kernel, by program
# name: checked against bpftool, not against watcher's own word. 6.1 lets
# tracing programs load, so the socket calls are seen by fentry/fexit on
# their kernel functions and no syscall tracepoint is attached (each one
# would slow every syscall on the host).
EXPECTED_PROGRAMS = [
    "fentry_bind",
    "fexit_bind",
    "fentry_listen",
    "fexit_listen",
    "fentry_close_fd",
    "fexit_socket",
    "fexit_sockopt",
    "sched_process_fork",
    "sched_process_exec",
    "sched_process_exit",
    "raw_tcp_state",
    "post_bind4",
    "post_bind6",
    "sock_release",
]


def to_console(line):
    """A line on the guest's kernel console too, which qemu writes to the
    host's vng.log without 9p: should the 9p share stall, the console still
    says how far the scenario got."""
    try:
        with open("/dev/kmsg", "w") as kmsg:
            kmsg.write(f"<5>scenario: {line[:800]}\n")
    except OSError:
        pass


class Results:
    def __init__(self, path):
        self.file = open(path, "w", buffering=1)
        self.failed = 0

    def _line(self, line):
        to_console(line)
        self.file.write(line + "\n")

    def check(self, name, ok, detail=""):
        if ok:
            self._line(f"PASS {name}")
        else:
            self.failed += 1
            self._line(f"FAIL {name}: {detail}")
        return ok

    def note(self, text):
        self._line(f"NOTE {text}")

    def step(self, name, started):
        """A timestamped marker: where the time went, and where a hang was."""
        self._line(f"NOTE t={time.monotonic() - started:.1f}s {name}")

    def done(self):
        self._line("DONE")
        self.file.close()


class LogShipper:
    """watcher's logs are written to a tmpfs in the guest and copied to the
    9p folder every few seconds and at the end: a slow or stalled 9p write
    then never blocks the threads that drain watcher's pipes (a full pipe
    would stop watcher itself)."""

    def __init__(self, log_dir, out_dir):
        self.log_dir, self.out_dir = log_dir, out_dir
        self.stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        while not self.stop.wait(15):
            self.copy()

    def copy(self):
        for name in os.listdir(self.log_dir):
            try:
                shutil.copyfile(os.path.join(self.log_dir, name), os.path.join(self.out_dir, name))
            except OSError as e:
                to_console(f"copying {name}: {e}")


class Watcher:
    """A running `watcher watch --json` (or another command that prints JSON
    lines and a ready line, `command=("daemon",)`), its events collected by
    a thread."""

    def __init__(self, binary, log_dir, *extra, name="watcher", env_extra=None, command=("watch", "--json")):
        env = dict(os.environ, RUST_LOG=WATCHER_RUST_LOG, **(env_extra or {}))
        self.stderr_file = open(os.path.join(log_dir, f"{name}.stderr"), "w", buffering=1)
        self.events_file = open(os.path.join(log_dir, f"{name}.events.jsonl"), "w", buffering=1)
        self.proc = subprocess.Popen(
            [binary, *command, *extra],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.cond = threading.Condition()
        self.events = []
        self.stderr = []
        self.ready_line = None
        self.error_line = None
        self.stderr_closed = False
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self):
        for line in self.proc.stdout:
            self.events_file.write(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.events.append(event)
                self.cond.notify_all()

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr_file.write(line)
            with self.cond:
                self.stderr.append(line.rstrip("\n"))
                if line.startswith("watcher: ready:") and self.ready_line is None:
                    self.ready_line = line.strip()
                if line.startswith("watcher: error:") and self.error_line is None:
                    self.error_line = line.strip()
                self.cond.notify_all()
        with self.cond:
            self.stderr_closed = True
            self.cond.notify_all()

    def wait_ready(self, results=None):
        settled = lambda: self.ready_line or self.error_line or self.stderr_closed  # noqa: E731
        with self.cond:
            if not self.cond.wait_for(settled, timeout=STUCK_AFTER) and results:
                # Quick (reads of /proc): the pipes' readers wait meanwhile.
                dump_stuck(results, self.proc.pid, f"watcher not ready after {STUCK_AFTER} s")
            self.cond.wait_for(settled, timeout=READY_TIMEOUT - STUCK_AFTER)
            return self.ready_line, self.error_line

    def wait_event(self, keep, timeout=EVENT_TIMEOUT):
        """The first event (already received or yet to come) that `keep` accepts."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for event in self.events:
                    if keep(event):
                        return event
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def wait_stderr(self, keep, timeout=EVENT_TIMEOUT):
        """The first stderr line (already read or yet to come) that `keep` accepts."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.stderr:
                    if keep(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self.stderr_closed:
                    return None
                self.cond.wait(left)

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


def dump_stuck(results, pid, why):
    """Where a process that should have moved on is: each thread's state,
    wait channel and kernel stack, as NOTE lines; and the guest's blocked
    tasks into the kernel log (the console, vng.log)."""
    results.note(f"{why}: pid {pid}")
    try:
        tids = sorted(os.listdir(f"/proc/{pid}/task"), key=int)
    except OSError as e:
        results.note(f"  /proc/{pid}/task: {e}")
        tids = []
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        facts = []
        for name in ("comm", "wchan", "stack"):
            try:
                with open(f"{base}/{name}") as f:
                    facts.append(f"{name}={f.read().strip()!r}")
            except OSError as e:
                facts.append(f"{name}: {e.strerror}")
        try:
            with open(f"{base}/stat") as f:
                facts.append("state=" + f.read().rsplit(")", 1)[1].split()[0])
        except (OSError, IndexError):
            pass
        results.note(f"  tid {tid}: " + " ".join(facts))
    try:
        with open("/proc/sysrq-trigger", "w") as f:
            f.write("w")
        results.note("  blocked tasks written to the kernel log (sysrq w, in vng.log)")
    except OSError as e:
        results.note(f"  sysrq: {e}")


class Child:
    """A tests/programs/*.py child: prints "pid N", waits for "go", then
    prints what it opened (same protocol as the host tests' SocketChild)."""

    def __init__(self, program, mode, *args):
        self.proc = subprocess.Popen(
            [PYTHON, os.path.join(PROGRAMS, program), mode, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        words = self.expect("pid")
        self.pid = int(words[0])

    def say(self, word):
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def expect(self, word):
        line = self.proc.stdout.readline()
        words = line.split()
        if not words or words[0] != word:
            raise RuntimeError(f"child said {line!r}, expected {word!r}")
        return words[1:]

    def finish(self):
        self.proc.stdin.close()
        return self.proc.wait(timeout=EVENT_TIMEOUT)


def free_tcp_port():
    """A TCP port free on 127.0.0.1 now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ev(kind, pid, **fields):
    """A predicate: event `kind` from `pid` with these field values."""

    def keep(e):
        return e.get("event") == kind and e.get("pid") == pid and all(e.get(k) == v for k, v in fields.items())

    return keep


def check_event(results, watcher, name, keep, also=None):
    """Waits for an event; `also(event)` returns a list of problems with it."""
    event = watcher.wait_event(keep)
    if event is None:
        return results.check(name, False, "no such event within the timeout")
    problems = also(event) if also else []
    return results.check(name, not problems, "; ".join(problems) + f" in {json.dumps(event)}")


def tcp_udp(results, watcher, binary):
    child = Child("sockets.py", "hold", "4", "tcp", "127.0.0.1", "0", "6", "tcp", "::1", "0",
                  "4", "udp", "127.0.0.1", "0", "6", "udp", "::1", "0")
    child.say("go")
    ports = [int(p) for p in child.expect("ready")]
    pid = child.pid
    for (label, family, addr, port) in [("tcp4", "ipv4", "127.0.0.1", ports[0]), ("tcp6", "ipv6", "::1", ports[1])]:
        for kind in ["bind", "listen"]:
            check_event(
                results, watcher, f"{label} {kind}", ev(kind, pid, proto="tcp", port=port),
                lambda e, family=family, addr=addr: [
                    f"{k} is {e.get(k)!r}, not {v!r}"
                    for k, v in [("family", family), ("addr", addr), ("comm", "python3")]
                    if e.get(k) != v
                ],
            )
    for (label, family, port) in [("udp4", "ipv4", ports[2]), ("udp6", "ipv6", ports[3])]:
        check_event(results, watcher, f"{label} bind", ev("bind", pid, proto="udp", port=port, family=family))
    list_agrees_with_ss(results, binary, ports)
    child.say("close")
    child.expect("closed")
    for (label, proto, port) in [("tcp4", "tcp", ports[0]), ("tcp6", "tcp", ports[1]),
                                 ("udp4", "udp", ports[2]), ("udp6", "udp", ports[3])]:
        check_event(results, watcher, f"{label} close", ev("close", pid, proto=proto, port=port))
    child.finish()


def ss_sockets():
    """(proto, addr, port) of every TCP listener and bound UDP socket, as ss sees them."""
    out = subprocess.run(["ss", "-Hlntu"], capture_output=True, text=True, check=True, timeout=EVENT_TIMEOUT).stdout
    found = set()
    for line in out.splitlines():
        cols = line.split()
        if len(cols) < 5:
            continue
        addr, _, port = cols[4].rpartition(":")
        addr = addr.strip("[]")
        if "%" in addr:  # an address bound to a device: addr%dev
            addr = addr.split("%")[0]
        if addr == "*":
            addr = "::"
        found.add((cols[0], addr, int(port)))
    return found


def list_agrees_with_ss(results, binary, ports):
    out = subprocess.run([binary, "list", "--json"], capture_output=True, text=True, timeout=READY_TIMEOUT)
    if not results.check("list --json runs", out.returncode == 0, f"exit {out.returncode}: {out.stderr.strip()}"):
        return
    listed = set()
    for line in out.stdout.splitlines():
        e = json.loads(line)
        if e.get("proto") in ("tcp", "udp"):
            listed.add((e["proto"], e["addr"], e["port"]))
    seen = ss_sockets()
    ours = {p for p in seen if p[2] in ports}
    results.check("ss sees the held sockets", len(ours) == 4, f"ss shows {sorted(seen)}")
    results.check(
        "list --json agrees with ss",
        listed == seen,
        f"only in list: {sorted(listed - seen)}; only in ss: {sorted(seen - listed)}",
    )


def unix_listeners(results, watcher, tmpfs):
    path = os.path.join(tmpfs, "listener.sock")
    abstract = f"watcher-guest-{os.getpid()}"
    child = Child("passive.py", "unix", path, abstract)
    child.say("go")
    fds = [int(f) for f in child.expect("ready")]
    pid = child.pid
    check_event(results, watcher, "unix listen (path on tmpfs)", ev("listen", pid, proto="unix", path=path, fd=fds[0]))
    check_event(results, watcher, "unix listen (abstract)", ev("listen", pid, proto="unix", path="@" + abstract, fd=fds[1]))
    child.say("close")
    child.expect("closed")
    check_event(results, watcher, "unix close by close()", ev("close", pid, proto="unix", path=path))
    child.finish()  # exits without closing the abstract listener
    check_event(results, watcher, "unix close by process exit", ev("close", pid, proto="unix", path="@" + abstract))


def flash_exec(results, watcher, flash):
    """A listener made by a program that execs, listens and exits while
    watcher is stopped: exe and argv must come from the kernel's records."""
    args = ["--first", "a b", "", "--last"]
    watcher.signal(signal.SIGSTOP)
    try:
        out = subprocess.run([flash, *args], capture_output=True, text=True, timeout=EVENT_TIMEOUT)
    finally:
        watcher.signal(signal.SIGCONT)
    if not results.check("flash listener ran", out.returncode == 0, out.stderr.strip()):
        return
    pid, port = (int(w) for w in out.stdout.split())
    results.check("flash listener gone before watcher read", not os.path.exists(f"/proc/{pid}"), f"/proc/{pid} exists")

    def problems(e):
        found = []
        if e.get("exe") != flash:
            found.append(f"exe {e.get('exe')!r}")
        if e.get("cmdline") != [flash, *args]:
            found.append(f"cmdline {e.get('cmdline')!r}")
        return found

    check_event(results, watcher, "short-lived exec: listen carries exe and argv", ev("listen", pid, port=port), problems)
    check_event(results, watcher, "short-lived exec: close carries exe", ev("close", pid, port=port),
                lambda e: [] if e.get("exe") == flash else [f"exe {e.get('exe')!r}"])


def forked_worker(results, watcher):
    """A worker forked without exec, gone before watcher reads: it is named
    after its parent (exe and argv), with the parent as ppid."""
    script = (
        "import os,socket\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "    print(os.getpid(), os.getppid(), s.getsockname()[1], flush=True); os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
    )
    watcher.signal(signal.SIGSTOP)
    try:
        out = subprocess.run([PYTHON, "-c", script, "worker-marker"], capture_output=True, text=True, timeout=EVENT_TIMEOUT)
    finally:
        watcher.signal(signal.SIGCONT)
    if not results.check("forked worker ran", out.returncode == 0, out.stderr.strip()):
        return
    pid, parent, port = (int(w) for w in out.stdout.split())

    def problems(e):
        found = []
        if not (e.get("exe") or "").startswith("/usr/bin/python3"):
            found.append(f"exe {e.get('exe')!r}")
        if not e.get("cmdline") or e["cmdline"][-1] != "worker-marker":
            found.append(f"cmdline {e.get('cmdline')!r}")
        if e.get("ppid") != parent:
            found.append(f"ppid {e.get('ppid')!r}, not {parent}")
        return found

    check_event(results, watcher, "forked worker named after its parent", ev("listen", pid, port=port), problems)


def udp_closed_by_exit(results, watcher):
    child = Child("sockets.py", "hold", "4", "udp", "127.0.0.1", "0")
    child.say("go")
    port = int(child.expect("ready")[0])
    pid = child.pid
    check_event(results, watcher, "udp bind (closed by exit)", ev("bind", pid, proto="udp", port=port))
    child.proc.kill()
    child.proc.wait(timeout=EVENT_TIMEOUT)
    check_event(results, watcher, "udp close by process exit", ev("close", pid, proto="udp", port=port))


def accepts(results, binary, log_dir):
    """With --accept (a second watcher): accept events with both ends, the
    peer asked for and not."""

    watcher = Watcher(binary, log_dir, "--accept", name="watcher-accept")
    ready, error = watcher.wait_ready(results)
    if not results.check("watcher --accept ready", ready is not None, error or "no ready line"):
        watcher.proc.kill()
        return
    try:
        programs_attached(results, watcher, EXPECTED_PROGRAMS + ["fexit_accept"], label=" (--accept)")
        child = Child("passive.py", "accept_server")
        child.say("go")
        listen_fd, port = (int(w) for w in child.expect("ready"))
        pid = child.pid
        clients = []
        for n in range(2):
            c = socket.create_connection(("127.0.0.1", port), timeout=EVENT_TIMEOUT)
            clients.append(c)
            fd = int(child.expect("accepted")[0])
            local_port = c.getsockname()[1]

            def problems(e, peer_requested=(n == 0), local_port=local_port):
                want = {"listen_fd": listen_fd, "addr": "127.0.0.1", "port": port, "peer_addr": "127.0.0.1",
                        "peer_port": local_port, "peer_requested": peer_requested}
                return [f"{k} is {e.get(k)!r}, not {v!r}" for k, v in want.items() if e.get(k) != v]

            name = "accept with both ends" + ("" if n == 0 else " (peer pointer NULL)")
            check_event(results, watcher, name, ev("accept", pid, fd=fd), problems)
        for c in clients:
            c.close()
        child.finish()
    finally:
        code = watcher.stop()
        results.check("watcher --accept exits 0 on SIGTERM", code == 0, f"exit {code}")


def bind_failed(results, watcher):
    holder = Child("sockets.py", "hold", "4", "tcp", "127.0.0.1", "0")
    holder.say("go")
    port = int(holder.expect("ready")[0])
    loser = Child("passive.py", "try_bind", "4", "127.0.0.1", str(port))
    loser.say("go")
    said = loser.expect("failed")
    results.check("second bind fails with EADDRINUSE", said[0] == "98", f"errno {said[0]}")
    check_event(results, watcher, "bind_failed EADDRINUSE",
                ev("bind_failed", loser.pid, errno="EADDRINUSE", port=port, fd=int(said[1])))
    loser.finish()
    holder.say("close")
    holder.expect("closed")
    holder.finish()


def kernel_log(results, watcher):
    """RUST_LOG=debug attaches the kernel programs' log (aya-log), and a
    failure in a program reaches it: a bind() given a pointer that cannot
    be read fails with EFAULT, and fentry_bind (sys_exit_bind on the
    tracepoint rung) counts (and logs) a read_user failure. The programs
    log once a second per kind and CPU, so
    another process's failure just before ours may take the line: we try
    again, each try after that second."""
    attached = watcher.wait_stderr(lambda l: "kernel programs' log attached" in l, timeout=1)
    if not results.check("kernel log attached under RUST_LOG=debug", attached is not None, "no line says so"):
        return
    import ctypes
    import socket as socketlib
    libc = ctypes.CDLL(None, use_errno=True)
    mine = f"tgid {os.getpid()}:"
    line, outcomes = None, set()
    for _ in range(5):
        with socketlib.socket() as s:
            ret = libc.bind(s.fileno(), ctypes.c_void_p(8), 16)
            outcomes.add((ret, ctypes.get_errno()))
        line = watcher.wait_stderr(lambda l: "read_user" in l and mine in l, timeout=1.5)
        if line:
            break
    results.check("bind() with a bad pointer fails with EFAULT", outcomes == {(-1, 14)}, f"(ret, errno): {outcomes}")
    results.check("a kernel program's failure reaches the log", line is not None, f"no read_user line with {mine}")
    if line:
        results.note(line)


def packet_socket(results, watcher):
    child = Child("passive.py", "packet_filter")
    child.say("go")
    fd, insns, _code = child.expect("ready")
    pid = child.pid
    check_event(results, watcher, "packet_socket", ev("packet_socket", pid, proto="packet", fd=int(fd), protocol_name="ETH_P_ALL"))
    check_event(results, watcher, "filter_attached (classic)",
                ev("filter_attached", pid, fd=int(fd), attach="SO_ATTACH_FILTER", filter="classic", instructions=int(insns)))
    child.finish()


def bpftool(*args):
    out = subprocess.run(["bpftool", "-j", *args], capture_output=True, text=True, timeout=EVENT_TIMEOUT)
    if out.returncode != 0:
        raise RuntimeError(f"bpftool {' '.join(args)}: {out.stderr.strip()}")
    return json.loads(out.stdout or "[]")


def held_bpf_objects(pid):
    """(program ids, {link id: program id}) of the BPF fds `pid` holds, from
    the kernel's /proc/PID/fdinfo (Debian's bpftool prints no pids)."""
    progs, links = set(), {}
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                info = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        except OSError:
            continue
        info = {k.strip(): v.strip() for k, v in info.items()}
        if target == "anon_inode:bpf-prog" and "prog_id" in info:
            progs.add(int(info["prog_id"]))
        elif target == "anon_inode:bpf_link" and "link_id" in info:
            links[int(info["link_id"])] = int(info.get("prog_id", "0"))
    return progs, links


def is_syscall_tracepoint(name):
    return name.startswith("sys_enter_") or name.startswith("sys_exit_")


def programs_attached(results, watcher, expected, label=""):
    """What the kernel says is loaded and linked for watcher, not what watcher says."""
    try:
        progs = bpftool("prog", "list")
        links = bpftool("link", "list")
    except (RuntimeError, ValueError) as e:
        results.check("bpftool lists programs and links", False, str(e))
        return
    held_progs, held_links = held_bpf_objects(watcher.proc.pid)
    names = {p["id"]: p.get("name", "") for p in progs}
    # A program counts as attached when bpftool lists a link of watcher's
    # that runs it.
    linked = {l.get("prog_id"): l.get("type") for l in links if l.get("id") in held_links}
    ours = {names.get(i, f"id {i}") for i in held_progs | set(held_links.values())}
    results.note(f"bpftool{label}: watcher holds {len(ours)} programs and {len(held_links)} links: {sorted(ours)}")
    results.note(f"bpftool{label}: link types {sorted({t for t in linked.values() if t})}")
    # The kernel keeps BPF_OBJ_NAME_LEN - 1 = 15 bytes of a program's name;
    # bpftool prints the whole name from the program's BTF when it has it.
    by_name = {names.get(i): i for i in held_progs | set(held_links.values())}
    for name in expected:
        prog = by_name.get(name, by_name.get(name[:15]))
        if not results.check(f"program {name} loaded{label}", prog is not None, "not among watcher's programs in bpftool prog list"):
            continue
        results.check(f"program {name} attached{label}", prog in linked, "no bpftool link of watcher's runs it")
    # Every syscall on the host would pay for one of these.
    syscall_linked = sorted(n for n in (names.get(i, "") for i in linked) if is_syscall_tracepoint(n))
    syscall_loaded = sorted(n for n in ours if is_syscall_tracepoint(n))
    results.check(f"no syscall tracepoint program linked{label} (bpftool link list)", not syscall_linked,
                  f"linked: {syscall_linked}")
    results.check(f"no syscall tracepoint program loaded{label} (bpftool prog list)", not syscall_loaded,
                  f"loaded: {syscall_loaded}")
    not_attached = [l for l in watcher.stderr if "not attached" in l]
    results.check(f"watcher warns of no missing hook{label}", not not_attached, " | ".join(not_attached))


def doctor(results, binary, ready_line):
    # RUST_LOG=info: the programs load with the kernel log off too (the
    # watchers above ran with it on).
    out = subprocess.run([binary, "doctor", "--json"], capture_output=True, text=True, timeout=READY_TIMEOUT,
                         env=dict(os.environ, RUST_LOG="info"))
    results.check("doctor exits 0", out.returncode == 0, f"exit {out.returncode}: {out.stderr.strip()[-500:]}")
    try:
        report = json.loads(out.stdout)
    except ValueError as e:
        results.check("doctor --json is JSON", False, str(e))
        return
    with open("/proc/sys/kernel/osrelease") as f:
        release = f.read().strip()
    results.check("doctor names this kernel", report.get("kernel") == release, f"{report.get('kernel')!r}")
    results.check("doctor: BTF readable", report.get("btf", {}).get("ok") is True, json.dumps(report.get("btf")))
    results.check("doctor: default set complete", report.get("complete") is True, json.dumps(report.get("facts")))
    # The ready line and doctor say the same: the same default hooks.
    hooks = {h for f in report.get("facts", []) if not f.get("optional") for h in f.get("hooks", [])}
    listed = ready_line.split("(", 1)[1].split(")")[0].split(", ") if "(" in ready_line else []
    results.check("doctor and the ready line name the same hooks", hooks == set(listed),
                  f"only doctor: {sorted(hooks - set(listed))}; only ready line: {sorted(set(listed) - hooks)}")
    results.note(f"doctor: lockdown {report.get('lockdown')}, BPF LSM {report.get('bpf_lsm')}, program types "
                 + ", ".join(f"{t['type']}={'yes' if t['loads'] else 'no'}" for t in report.get("program_types", [])))


class GetppidCost:
    """The cost of a syscall no hook is about (getppid, raw), with and
    without watcher attached: what every other syscall on the host pays.
    Under TCG on a shared host whole runs are 2-3x apart; the fastest of
    many short chunks (getppid_loop.c) is steady, and is the figure. The
    median chunk, and the median ratio of a chunk to user-space work timed
    next to it, are printed beside it."""

    RUNS = 3
    CHUNKS = 100

    def __init__(self, results, tmpfs, out_dir):
        self.results = results
        self.exe = os.path.join(tmpfs, "getppid_loop")
        self.log = open(os.path.join(out_dir, "getppid.txt"), "w", buffering=1)
        subprocess.run(["cc", "-O2", "-o", self.exe, os.path.join(HERE, "getppid_loop.c")], check=True)
        # Chunks of about 5 ms.
        per_call = min(self._once(5, 2000)[0] for _ in range(3))
        self.calls = max(1000, int(5e6 / per_call))
        self.runs = {}

    def _once(self, chunks, calls):
        out = subprocess.run([self.exe, str(chunks), str(calls)], capture_output=True, text=True, check=True,
                             timeout=300)
        _, best, median, ratio = out.stdout.split()
        return float(best), float(median), float(ratio)

    def measure(self, label):
        for _ in range(self.RUNS):
            best, median, ratio = self._once(self.CHUNKS, self.calls)
            self.runs.setdefault(label, []).append((best, median, ratio))
            self.log.write(f"{label}: {self.CHUNKS} chunks of {self.calls} calls: fastest {best:.0f} ns a call, "
                           f"median {median:.0f} ns, median ratio to user work {ratio:.3f}\n")

    def report(self):
        def median(xs):
            xs = sorted(xs)
            return xs[len(xs) // 2]

        base = self.runs.get("no watcher")
        if not base:
            return
        b_best, b_median, b_ratio = (min(r[i] for r in base) if i == 0 else median([r[i] for r in base])
                                     for i in range(3))
        parts = []
        for label, runs in self.runs.items():
            best = min(r[0] for r in runs)
            m = median([r[1] for r in runs])
            ratio = median([r[2] for r in runs])
            parts.append(f"{label} {best:.0f} ns ({best / b_best:.2f}x, +{best - b_best:.0f} ns; median chunk "
                         f"{m / b_median:.2f}x; ratio to user work {ratio / b_ratio:.2f}x)")
        line = (f"getppid in the guest (TCG), fastest chunk of {self.RUNS}x{self.CHUNKS} chunks of {self.calls} calls: "
                + ", ".join(parts))
        self.log.write(line + "\n")
        self.results.note(line)


def getppid_with_syscall_tracepoints(results, binary, log_dir, cost):
    """watcher made to use its syscall tracepoint rungs (as on a kernel that
    refuses tracing programs), for the comparison."""
    watcher = Watcher(binary, log_dir, name="watcher-tracepoints", env_extra={"WATCHER_SKIP_TRACING": "1"})
    ready, error = watcher.wait_ready(results)
    try:
        if not results.check("WATCHER_SKIP_TRACING=1: ready on the syscall tracepoints",
                             ready is not None and "tracepoint syscalls/sys_exit_bind" in ready,
                             error or ready or "no ready line"):
            return
        cost.measure("watcher on syscall tracepoints")
    finally:
        watcher.stop()


def main():
    binary, out_dir, flash, daemonizing = sys.argv[1:5]
    faulthandler.dump_traceback_later(WATCHDOG_SECS, exit=True)
    to_console("started")
    results = Results(os.path.join(out_dir, "results.txt"))
    with open("/proc/sys/kernel/osrelease") as f:
        results.note(f"kernel {f.read().strip()}")
    # UNIX sockets cannot be created on the 9p root: a tmpfs of our own.
    tmpfs = "/run/watcher-scenario"
    os.makedirs(tmpfs, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", tmpfs], check=True, timeout=EVENT_TIMEOUT)
    log_dir = os.path.join(tmpfs, "logs")
    os.makedirs(log_dir)
    shipper = LogShipper(log_dir, out_dir)

    def overdue():
        # A minute before faulthandler's exit: the logs and a FAIL are in.
        results.check("scenario within its watchdog", False, f"still running after {WATCHDOG_SECS - 60} s")
        shipper.copy()

    timer = threading.Timer(WATCHDOG_SECS - 60, overdue)
    timer.daemon = True  # the scenario's normal end does not wait for it
    timer.start()
    try:
        run_steps(results, binary, out_dir, log_dir, tmpfs, flash, daemonizing)
    except BaseException as e:
        results.check("scenario ran to its end", False, f"{type(e).__name__}: {e}")
        raise
    finally:
        shipper.stop.set()
        shipper.copy()
        results.done()


def run_steps(results, binary, out_dir, log_dir, tmpfs, flash, daemonizing):
    expected = EXPECTED_PROGRAMS

    cost = None
    try:
        cost = GetppidCost(results, tmpfs, out_dir)
        cost.measure("no watcher")
    except Exception as e:  # a measurement, not a check
        results.note(f"getppid measurement skipped: {type(e).__name__}: {e}")
        cost = None

    started = time.monotonic()
    watcher = Watcher(binary, log_dir)
    ready, error = watcher.wait_ready(results)
    results.note(f"watcher took {time.monotonic() - started:.1f} s to attach")
    if not results.check("watcher ready", ready is not None, error or "no ready line (see watcher.stderr)"):
        watcher.proc.kill()
        return
    results.note(ready)
    for name, step in [
        ("programs attached", lambda: programs_attached(results, watcher, expected)),
        ("tcp and udp", lambda: tcp_udp(results, watcher, binary)),
        ("unix listeners", lambda: unix_listeners(results, watcher, tmpfs)),
        ("flash exec", lambda: flash_exec(results, watcher, flash)),
        ("forked worker", lambda: forked_worker(results, watcher)),
        ("udp closed by exit", lambda: udp_closed_by_exit(results, watcher)),
        ("bind failed", lambda: bind_failed(results, watcher)),
        ("kernel log", lambda: kernel_log(results, watcher)),
        ("packet socket", lambda: packet_socket(results, watcher)),
        ("getppid with watcher", lambda: cost and cost.measure("watcher (default)")),
    ]:
        results.step(name, started)
        try:
            step()
        except Exception as e:  # one broken step must not hide the others
            results.check(f"{name} step", False, f"{type(e).__name__}: {e}")
    results.step("stopping watcher", started)
    code = watcher.stop()
    results.check("watcher exits 0 on SIGTERM", code == 0, f"exit {code}")
    results.step("accepts", started)
    try:
        accepts(results, binary, log_dir)
    except Exception as e:
        results.check("accept step", False, f"{type(e).__name__}: {e}")
    results.step("lsm enforcement", started)
    lsm_enforce.run(results, binary, log_dir, tmpfs)
    results.step("kill_unexpected", started)
    kill_unexpected.run(results, binary, log_dir, tmpfs, daemonizing)
    results.step("doctor", started)
    try:
        doctor(results, binary, ready)
    except Exception as e:
        results.check("doctor step", False, f"{type(e).__name__}: {e}")
    if cost:
        results.step("getppid", started)
        try:
            cost.measure("no watcher")
            getppid_with_syscall_tracepoints(results, binary, log_dir, cost)
            cost.measure("no watcher")
            cost.report()
        except Exception as e:
            results.check("getppid step", False, f"{type(e).__name__}: {e}")
    results.step("done", started)


if __name__ == "__main__":
    main()
