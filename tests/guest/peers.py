"""watcher and bcc's tools side by side on Debian 12's kernel (run inside the
guest by `cargo xtask bench guest-peers`, see xtask/src/bench/guest_peers.rs).

    python3 peers.py WATCHER OUT_DIR FLASH_LISTENER

bcc's bindsnoop, solisten and tcpaccept need kprobes, which this machine's
own kernel does not offer; Debian's kernel does. Each tool in turn is
started alone, proven to be attached (a canary socket of this script's own
must appear in its output), then the same workload runs: the guest
scenario's child programs (tests/programs) opening TCP and UDP, v4 and v6
listeners, UNIX listeners, a packet socket with a classic filter, a failed
bind, accepted connections, a listener exec'd and gone within a
millisecond, a forked worker, and their closes. What each tool printed about
the workload's pids is counted per case; the columns each tool prints come
from its own header line (watcher: the JSON keys it wrote). Then a getppid
loop is timed as the guest scenario times it (GetppidCost: the fastest of
many short chunks) with nothing attached and with each tool attached:
everything here is emulated (TCG), so compare counts and ratios, not times.

Everything goes to OUT_DIR/peers.json; the console mangles output.
"""
import json
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from scenario import PYTHON, Child, GetppidCost, Watcher  # noqa: E402

# bcc compiles its C with LLVM at start: slow under emulation.
START_TIMEOUT = 600
# A canary or a workload's lines: emulated, but an event is well under a second.
LINE_TIMEOUT = 60
# Output is judged complete once the closing canary is in and nothing more
# came for this long (bcc reads per-CPU perf buffers: no order across CPUs).
QUIET = 1.0

BCC = {
    "bindsnoop": ["/usr/sbin/bindsnoop-bpfcc", "-E", "-U", "-w"],
    "solisten": ["/usr/sbin/solisten-bpfcc", "--show-netns"],
    "tcpaccept": ["/usr/sbin/tcpaccept-bpfcc"],
}


class LineTool:
    """A bcc tool's stdout, line by line, with the header it printed."""

    def __init__(self, name, argv, out_dir):
        self.name = name
        self.raw = open(os.path.join(out_dir, f"peer-{name}.out"), "w", buffering=1)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=open(os.path.join(out_dir, f"peer-{name}.stderr"), "w"),
            env=dict(os.environ, PYTHONUNBUFFERED="1"),
            text=True,
        )
        self.cond = threading.Condition()
        self.lines = []
        self.header = None
        self.closed = False
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.raw.write(line)
            with self.cond:
                if self.header is None and line.split()[:1] in (["PID"], ["UID"], ["RC"]):
                    self.header = line.split()
                else:
                    self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def wait(self, pred, timeout):
        with self.cond:
            return self.cond.wait_for(lambda: pred() or self.closed, timeout=timeout) and not self.closed

    def records(self):
        with self.cond:
            return [r for r in (parse(self.name, line) for line in self.lines) if r]

    def stop(self):
        if self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def parse(tool, line):
    """One bcc output line as {pid, comm, words}: the columns are fixed-width
    up to COMM (which may hold spaces), split by blanks after it."""
    try:
        if tool == "bindsnoop":  # -U: "%6d ", -E -w: "%-25s ", then "%10d %-12.12s ..."
            uid, rc, pid, comm, rest = line[:7], line[7:33], line[33:43], line[44:56], line[56:]
            return {"uid": int(uid), "rc": rc.strip(), "pid": int(pid), "comm": comm.strip(), "words": rest.split()}
        pid, comm, rest = line[:8], line[8:20], line[20:]  # "%-7d %-12.12s ..."
        return {"pid": int(pid), "comm": comm.strip(), "words": rest.split()}
    except ValueError:
        return None


def canary(kind):
    """A socket of this script's own that the tool must report: proof that it
    is attached, and (at the end) that it has printed what came before."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    if kind == "tcpaccept":
        c = socket.create_connection(("127.0.0.1", port))
        a, _ = s.accept()
        a.close()
        c.close()
    s.close()
    return port


def bcc_sees_canary(tool, port, timeout=LINE_TIMEOUT):
    me = os.getpid()

    def seen():
        return any(r["pid"] == me and (str(port) in r["words"] or tool.name == "tcpaccept") for r in tool.records())

    return tool.wait(seen, timeout)


def workload(tmpfs, flash, tag):
    """Runs every case once; returns [(case, pid, port or None)]: what a tool's
    lines are matched on. `tag` keeps each run's UNIX names apart."""
    cases = []
    child = Child("sockets.py", "hold", "4", "tcp", "127.0.0.1", "0", "6", "tcp", "::1", "0",
                  "4", "udp", "127.0.0.1", "0", "6", "udp", "::1", "0")
    child.say("go")
    ports = [int(p) for p in child.expect("ready")]
    for case, port in zip(["TCP v4 listener", "TCP v6 listener", "UDP v4 bound", "UDP v6 bound"], ports):
        cases.append((case, child.pid, port))
    child.say("close")
    child.expect("closed")
    child.finish()

    path = os.path.join(tmpfs, f"peers-{tag}.sock")
    unix = Child("passive.py", "unix", path, f"peers-{tag}-{os.getpid()}")
    unix.say("go")
    unix.expect("ready")
    cases.append(("UNIX listener (path, abstract)", unix.pid, None))
    unix.say("close")
    unix.expect("closed")
    unix.finish()

    packet = Child("passive.py", "packet_filter")
    packet.say("go")
    packet.expect("ready")
    cases.append(("packet socket + classic filter", packet.pid, None))
    packet.finish()

    holder = Child("sockets.py", "hold", "4", "tcp", "127.0.0.1", "0")
    holder.say("go")
    port = int(holder.expect("ready")[0])
    loser = Child("passive.py", "try_bind", "4", "127.0.0.1", str(port))
    loser.say("go")
    loser.expect("failed")
    cases.append(("bind EADDRINUSE (failed)", loser.pid, port))
    loser.finish()
    holder.say("close")
    holder.expect("closed")
    holder.finish()

    server = Child("passive.py", "accept_server")
    server.say("go")
    _fd, port = (int(w) for w in server.expect("ready"))
    for _ in range(2):
        c = socket.create_connection(("127.0.0.1", port), timeout=LINE_TIMEOUT)
        server.expect("accepted")
        c.close()
    cases.append(("accept (2 connections)", server.pid, port))
    server.finish()

    out = subprocess.run([flash, "--first", "a b"], capture_output=True, text=True, timeout=LINE_TIMEOUT, check=True)
    pid, port = (int(w) for w in out.stdout.split())
    cases.append(("exec'd listener gone within 1 ms", pid, port))

    script = (
        "import os,socket\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "    print(os.getpid(), s.getsockname()[1], flush=True); os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
    )
    out = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=LINE_TIMEOUT, check=True)
    pid, port = (int(w) for w in out.stdout.split())
    cases.append(("forked worker", pid, port))
    return cases


def run_watcher(binary, out_dir, tmpfs, flash):
    watcher = Watcher(binary, out_dir, "--accept", name="peer-watcher")
    ready, error = watcher.wait_ready()
    if ready is None:
        watcher.proc.kill()
        return {"error": error or "no ready line"}
    started = time.monotonic()
    cases = workload(tmpfs, flash, "watcher")
    took = time.monotonic() - started
    # The last case's listen is the last record the workload made.
    last_pid, last_port = cases[-1][1], cases[-1][2]
    watcher.wait_event(lambda e: e.get("event") == "close" and e.get("pid") == last_pid and e.get("port") == last_port,
                       timeout=LINE_TIMEOUT)
    watcher.stop()
    result = {"cases": {}, "fields": set(), "workload_s": round(took, 1)}
    for case, pid, port in cases:
        events = [e for e in watcher.events if e.get("pid") == pid and (port is None or e.get("port") == port)]
        result["cases"][case] = {
            "lines": len(events),
            "kinds": sorted({e.get("event") for e in events}),
            "exe_and_argv": any(e.get("exe") and e.get("cmdline") for e in events),
        }
        for e in events:
            result["fields"].update(e.keys())
    result["fields"] = sorted(result["fields"])
    return result


def run_bcc(name, out_dir, tmpfs, flash):
    tool = LineTool(name, BCC[name], out_dir)
    try:
        return measure_bcc(tool, tmpfs, flash)
    finally:
        tool.stop()


def attach_bcc(tool):
    """Whether the tool reported one of our canaries within START_TIMEOUT: a
    new canary every LINE_TIMEOUT, since bcc prints its header before its
    probes are all attached and may miss the first."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline and not tool.closed:
        if tool.header is None:
            tool.wait(lambda: tool.header is not None, 5)
            continue
        if bcc_sees_canary(tool, canary(tool.name)):
            return True
    return False


def measure_bcc(tool, tmpfs, flash):
    name = tool.name
    if not attach_bcc(tool):
        return {"error": f"not attached within {START_TIMEOUT} s (see peer-{name}.stderr)"}
    started = time.monotonic()
    cases = workload(tmpfs, flash, name)
    took = time.monotonic() - started
    # bcc's Python reads its perf buffers slowly under emulation: the
    # closing canary may come minutes after the workload.
    complete = bcc_sees_canary(tool, canary(name), timeout=START_TIMEOUT)
    # Then quiet: the other CPU's buffer may still hold earlier lines.
    while True:
        count = len(tool.lines)
        if not tool.wait(lambda: len(tool.lines) > count, QUIET):
            break
    tool.stop()  # what it printed is now all there is
    records = tool.records()
    result = {
        "cases": {},
        "fields": [c.lower() for c in (tool.header or [])],
        "workload_s": round(took, 1),
        "complete": complete,
    }
    for case, pid, port in cases:
        lines = [r for r in records if r["pid"] == pid and (port is None or str(port) in r["words"])]
        result["cases"][case] = {
            "lines": len(lines),
            "errors": sorted({r["rc"] for r in lines if r.get("rc") not in (None, "", "Success")}),
            "exe_and_argv": False,  # comm (12 bytes) only: no column holds more
        }
    return result


class Notes:
    """GetppidCost's results sink: its summary line goes into the report."""

    def __init__(self):
        self.lines = []

    def note(self, text):
        self.lines.append(text)


def getppid_costs(binary, out_dir, tmpfs):
    """The fastest getppid chunk (ns per call) with nothing attached and with
    each tool attached once (bcc compiles for minutes under emulation)."""
    notes = Notes()
    cost = GetppidCost(notes, tmpfs, out_dir)
    for name in ["watcher", "watcher on syscall tracepoints", *BCC]:
        cost.measure("no watcher")
        if name.startswith("watcher"):
            # The second: watcher made to use its syscall tracepoint rungs,
            # as on a kernel that refuses tracing programs.
            env = {"WATCHER_SKIP_TRACING": "1"} if name != "watcher" else {}
            tool = Watcher(binary, out_dir, name=f"peer-{name.replace(' ', '-')}", env_extra=env)
            attached = tool.wait_ready()[0] is not None
        else:
            tool = LineTool(name, BCC[name], out_dir)
            attached = attach_bcc(tool)
        try:
            if attached:
                cost.measure(name)
        finally:
            tool.stop()
    cost.measure("no watcher")
    cost.report()
    best = {label: min(r[0] for r in runs) for label, runs in cost.runs.items()}
    best["off"] = best.pop("no watcher")
    return best, notes.lines


def main():
    binary, out_dir, flash = sys.argv[1:4]
    tmpfs = "/run/watcher-peers"
    os.makedirs(tmpfs, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", tmpfs], check=True)
    with open("/proc/sys/kernel/osrelease") as f:
        report = {"kernel": f.read().strip(), "tools": {}}
    report["tools"]["watcher"] = run_watcher(binary, out_dir, tmpfs, flash)
    for name in BCC:
        try:
            report["tools"][name] = run_bcc(name, out_dir, tmpfs, flash)
        except Exception as e:  # one tool's failure must not hide the others
            report["tools"][name] = {"error": f"{type(e).__name__}: {e}"}
    try:
        report["getppid_ns"], report["getppid_notes"] = getppid_costs(binary, out_dir, tmpfs)
    except Exception as e:
        report["getppid_error"] = f"{type(e).__name__}: {e}"
    with open(os.path.join(out_dir, "peers.json"), "w") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
