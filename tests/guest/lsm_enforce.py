"""Enforcement beyond bind on a kernel with BPF LSM (Debian 12's 6.1): run
from scenario.py once its other watchers have stopped (`run`), with the
same Results and readers.

`watcher daemon --enforce` runs with a configuration written to the guest's
tmpfs that allows one UNIX path, one TCP port, raw sockets to one comm and
packet sockets to another, confined to a cgroup of this test's own
(enforce_cgroup): the children that are judged are moved into it, and
everything else in the guest (this script, bpftool, the other tools) stays
outside, unjudged. The children are real processes (tests/programs/binder.py,
one command line in, one answer line out), and each check reads what the
call itself returned in the child, then the daemon's `denied` line field by
field, then what bpftool says the kernel has attached.

Nothing sleeps for readiness: the daemon says "watcher: ready:", the
children answer each command, and every wait is bounded.
"""
import json
import os
import queue
import socket
import subprocess
import threading

# scenario.py imports this file at its start: its names are used once it
# has run (inside the functions), never at import.
import scenario

BINDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "programs", "binder.py")
# The LSM hooks, by program name (what bpftool lists), and the bind hooks
# the daemon attaches to the enforced cgroup.
LSM_PROGRAMS = ["lsm_sock_listen", "lsm_sock_create"]
BIND_PROGRAMS = ["enforce_bind4", "enforce_bind6"]
# Comms the raw and packet rules allow.
RAW_COMM = "lsm-raw-ok"
PACKET_COMM = "lsm-packet-ok"


class Binder:
    """A tests/programs/binder.py child: one command, one answer, read by a
    thread so that every wait for an answer is bounded."""

    def __init__(self, cgroup=None):
        self.proc = subprocess.Popen(
            [scenario.PYTHON, BINDER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        words = self._next().split()
        if words[:1] != ["pid"]:
            raise RuntimeError(f"binder said {words}, expected its pid")
        self.pid = int(words[1])
        if cgroup:
            # Before its first socket: a socket is judged by its caller's cgroup.
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(self.pid))

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def _next(self):
        try:
            line = self.lines.get(timeout=scenario.EVENT_TIMEOUT)
        except queue.Empty:
            raise RuntimeError(f"binder {self.proc.pid} said nothing within {scenario.EVENT_TIMEOUT} s") from None
        if line is None:
            raise RuntimeError(f"binder {self.proc.pid} exited ({self.proc.poll()})")
        return line

    def ask(self, command):
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self._next()

    def finish(self):
        self.proc.stdin.close()
        return self.proc.wait(timeout=scenario.EVENT_TIMEOUT)


def said(results, name, answer, expected):
    return results.check(name, answer == expected, f"the call returned {answer!r}, not {expected!r}")


def fields_differ(event, want):
    return [f"{k} is {event.get(k)!r}, not {v!r}" for k, v in want.items() if event.get(k) != v]


def check_denied(results, daemon, name, pid, want, reason_starts=None):
    """The daemon's `denied` line for `pid` with want's call and target: every field of `want`."""
    keys = ("call", "family", "path", "port", "proto")

    def keep(e):
        return e.get("event") == "denied" and e.get("pid") == pid and all(e.get(k) == want[k] for k in keys if k in want)

    def problems(e):
        found = fields_differ(e, dict(want, errno="EPERM", comm=want.get("comm", "python3")))
        if reason_starts and not (e.get("reason") or "").startswith(reason_starts):
            found.append(f"reason {e.get('reason')!r} does not start with {reason_starts!r}")
        return found

    scenario.check_event(results, daemon, name, keep, problems)


def lsm_links(results, label, pid=None):
    """The LSM programs bpftool lists as linked: those of `pid`'s links, or
    (pid None) of any link on the host."""
    progs = scenario.bpftool("prog", "list")
    links = scenario.bpftool("link", "list")
    names = {p["id"]: p.get("name", "") for p in progs}
    if pid is not None:
        _, held_links = scenario.held_bpf_objects(pid)
        links = [l for l in links if l.get("id") in held_links]
    linked = {names.get(l.get("prog_id"), "") for l in links}
    types = sorted({f"{l.get('type')}/{l.get('attach_type')}" for l in links if names.get(l.get("prog_id")) in LSM_PROGRAMS})
    results.note(f"bpftool {label}: lsm links {types}")
    return linked


def cgroup2_mount():
    """Where cgroup v2 is mounted (/sys/fs/cgroup in the guest), from mountinfo."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            before, _, after = line.partition(" - ")
            if after.split()[:1] == ["cgroup2"]:
                return before.split()[4]
    raise RuntimeError("no cgroup2 mount in /proc/self/mountinfo")


def run(results, binary, log_dir, tmpfs):
    """Every check of this file; a failure in one part is a FAIL, never the scenario's end."""
    cgroup = os.path.join(cgroup2_mount(), f"watcher-lsm-enforce-{os.getpid()}")
    work = os.path.join(tmpfs, "lsm")
    os.makedirs(work, exist_ok=True)
    try:
        os.makedirs(cgroup, exist_ok=True)
        checks(results, binary, log_dir, work, cgroup)
    except Exception as e:  # one broken step must not hide the scenario's others
        results.check("lsm enforcement step", False, f"{type(e).__name__}: {e}")


def checks(results, binary, log_dir, work, cgroup):
    allowed_path = os.path.join(work, "allowed.sock")
    unexpected_path = os.path.join(work, "unexpected.sock")
    abstract = f"@watcher-lsm-unexpected-{os.getpid()}"
    allowed_port, unlisted_port = scenario.free_tcp_port(), scenario.free_tcp_port()
    config = os.path.join(work, "watcher.toml")
    with open(config, "w") as f:
        f.write(
            f'enforce_cgroup = "{cgroup}"\n'
            f'[[allow]]\nname = "allowed-unix"\nproto = "unix"\npath = "{allowed_path}"\n'
            f'[[allow]]\nname = "allowed-tcp"\nproto = "tcp"\nport = {allowed_port}\n'
            f'[[allow]]\nname = "pinger"\nproto = "raw"\ncomm = "{RAW_COMM}"\n'
            f'[[allow]]\nname = "sniffer"\nproto = "packet"\ncomm = "{PACKET_COMM}"\n'
        )
    # Bound before enforcement starts, so that only the listen hook can
    # refuse its listen(): a bind to that port would be refused now.
    early = Binder(cgroup)
    said(results, "lsm: a TCP socket bound before enforcing", early.ask(f"hold 4 127.0.0.1 {unlisted_port}"),
         f"held {unlisted_port}")

    daemon = scenario.Watcher(binary, log_dir, "--config", config, "--enforce", name="watcher-lsm",
                              command=("daemon",))
    ready, error = daemon.wait_ready(results)
    if not results.check("lsm: daemon --enforce ready", ready is not None, error or "no ready line (see watcher-lsm.stderr)"):
        daemon.proc.kill()
        return
    try:
        enforcing(results, daemon, ready, early, work, cgroup, allowed_path, unexpected_path, abstract,
                  allowed_port, unlisted_port)
    finally:
        code = daemon.stop()
        results.check("lsm: daemon exits 0 on SIGTERM", code == 0, f"exit {code}")
    after(results, early, cgroup, unexpected_path, abstract, unlisted_port)


def enforcing(results, daemon, ready, early, work, cgroup, allowed_path, unexpected_path, abstract,
              allowed_port, unlisted_port):
    for hook in ["lsm socket_listen", "lsm socket_create"]:
        results.check(f"lsm: ready line names {hook}", hook in ready, ready)
    unenforced = [l for l in daemon.stderr if "not enforced" in l]
    results.check("lsm: no warning of anything not enforced", not unenforced, " | ".join(unenforced))
    linked = lsm_links(results, "while enforcing", daemon.proc.pid)
    for name in LSM_PROGRAMS + BIND_PROGRAMS:
        results.check(f"lsm: program {name} attached (bpftool link list)", name in linked,
                      f"the daemon's links run {sorted(linked)}")

    child = Binder(cgroup)
    pid = child.pid
    # UNIX: an unexpected path and abstract name refused at listen(), the allowed path listens.
    said(results, "lsm: unexpected UNIX path: listen() fails with EPERM", child.ask(f"unix {unexpected_path}"),
         "refused EPERM listen")
    check_denied(results, daemon, "lsm: denied names the UNIX path", pid,
                 {"call": "listen", "proto": "unix", "family": "unix", "path": unexpected_path, "rule": None,
                  "sock_type": "SOCK_STREAM"},
                 reason_starts=f"no rule allows listen() on unix {unexpected_path} (")
    said(results, "lsm: unexpected abstract name: listen() fails with EPERM", child.ask(f"unix {abstract}"),
         "refused EPERM listen")
    check_denied(results, daemon, "lsm: denied names the abstract name", pid,
                 {"call": "listen", "proto": "unix", "family": "unix", "path": abstract, "rule": None})
    said(results, "lsm: the allowed UNIX path listens", child.ask(f"unix {allowed_path}"), f"listening {allowed_path}")
    scenario.check_event(results, daemon, "lsm: the allowed UNIX listener is reported",
                         scenario.ev("listen", pid, proto="unix", path=allowed_path))

    # TCP: the socket bound before enforcing, listen() without a rule; the allowed port; an ephemeral one.
    said(results, "lsm: TCP listen() on a port no rule covers fails with EPERM", early.ask("listen"), "refused EPERM")
    check_denied(results, daemon, "lsm: denied names the TCP listen", early.pid,
                 {"call": "listen", "proto": "tcp", "family": "ipv4", "addr": "127.0.0.1", "port": unlisted_port,
                  "rule": None},
                 reason_starts=f"no rule allows listen() on tcp port {unlisted_port} on 127.0.0.1 (")
    said(results, "lsm: the allowed TCP port binds and listens", child.ask(f"bind 4 tcp 127.0.0.1 {allowed_port}"),
         f"bound {allowed_port}")
    answer = child.ask("bind 4 tcp 127.0.0.1 0")
    results.check("lsm: an ephemeral TCP port binds and listens", answer.startswith("bound "), answer)

    # Raw and packet sockets by a program no rule allows, then by the comms the rules name.
    for family, label, fam in [("4", "SOCK_RAW (AF_INET)", "ipv4"), ("6", "SOCK_RAW (AF_INET6)", "ipv6")]:
        said(results, f"lsm: {label} by python3 fails with EPERM", child.ask(f"raw {family}"), "refused EPERM")
        check_denied(results, daemon, f"lsm: denied names the {label} socket", pid,
                     {"call": "socket", "proto": "raw", "family": fam, "sock_type": "SOCK_RAW", "rule": "pinger",
                      "protocol_name": "IPPROTO_ICMP" if family == "4" else "IPPROTO_ICMPV6"},
                     reason_starts=f'a raw socket is given to rule "pinger" (comm={RAW_COMM}), not to ')
    said(results, "lsm: AF_PACKET by python3 fails with EPERM", child.ask("packet"), "refused EPERM")
    check_denied(results, daemon, "lsm: denied names the packet socket", pid,
                 {"call": "socket", "proto": "packet", "family": "packet", "sock_type": "SOCK_RAW",
                  "protocol_name": "ETH_P_ALL", "rule": "sniffer"})
    pinger = Binder(cgroup)
    said(results, "lsm: a raw rule's comm", pinger.ask(f"comm {RAW_COMM}"), f"comm {RAW_COMM}")
    said(results, "lsm: SOCK_RAW by the comm a rule allows is made", pinger.ask("raw 4"), "made")
    said(results, "lsm: AF_PACKET is still refused to the raw rule's comm", pinger.ask("packet"), "refused EPERM")
    sniffer = Binder(cgroup)
    said(results, "lsm: a packet rule's comm", sniffer.ask(f"comm {PACKET_COMM}"), f"comm {PACKET_COMM}")
    said(results, "lsm: AF_PACKET by the comm a rule allows is made", sniffer.ask("packet"), "made")

    # Outside the enforced cgroup nothing is judged.
    outside = Binder()
    said(results, "lsm: outside enforce_cgroup SOCK_RAW is made", outside.ask("raw 4"), "made")
    outside_path = os.path.join(work, "outside.sock")
    said(results, "lsm: outside enforce_cgroup an unexpected UNIX path listens", outside.ask(f"unix {outside_path}"),
         f"listening {outside_path}")

    # Everything the daemon wrote before a listener of this script's own
    # (one ring buffer, read in order): no denial of what was allowed.
    with socket.socket() as marker:
        marker.bind(("127.0.0.1", 0))
        marker.listen()
        port = marker.getsockname()[1]
        daemon.wait_event(scenario.ev("listen", os.getpid(), port=port))
    denials = [e for e in daemon.events if e.get("event") == "denied"]
    wrong = [e for e in denials
             if e.get("pid") in (sniffer.pid, outside.pid)
             or e.get("path") == allowed_path
             or e.get("port") == allowed_port
             or (e.get("pid") == pinger.pid and e.get("proto") != "packet")]
    results.check("lsm: nothing allowed is denied", not wrong, json.dumps(wrong))
    for c in (child, pinger, sniffer, outside):
        c.finish()


def after(results, early, cgroup, unexpected_path, abstract, unlisted_port):
    """Once the daemon is gone its programs are too, and the same calls succeed."""
    linked = lsm_links(results, "after the daemon stopped")
    left = sorted(n for n in linked if n in LSM_PROGRAMS + BIND_PROGRAMS)
    results.check("lsm: no enforcement program linked after the daemon stopped", not left, f"still linked: {left}")
    said(results, "lsm: after the daemon, the same TCP socket listens", early.ask("listen"), f"listening {unlisted_port}")
    child = Binder(cgroup)
    os.unlink(unexpected_path)  # bound by the refused listener of the first child
    said(results, "lsm: after the daemon, the unexpected UNIX path listens", child.ask(f"unix {unexpected_path}"),
         f"listening {unexpected_path}")
    said(results, "lsm: after the daemon, the abstract name listens", child.ask(f"unix {abstract}"),
         f"listening {abstract}")
    said(results, "lsm: after the daemon, SOCK_RAW is made", child.ask("raw 4"), "made")
    said(results, "lsm: after the daemon, AF_PACKET is made", child.ask("packet"), "made")
    child.finish()
    early.finish()
    try:
        os.rmdir(cgroup)
    except OSError as e:
        results.note(f"removing {cgroup}: {e}")

