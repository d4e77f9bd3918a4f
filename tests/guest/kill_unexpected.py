"""kill_unexpected on Debian 12's kernel (6.1): run from scenario.py once its
other watchers have stopped (`run`), with the same Results and readers.

The host's tests/debian_daemons.rs checks the same on this machine's kernel:
`watcher daemon` with `kill_unexpected = true` and every port allowed but
one; tests/programs/daemonizing_listener.c (built by xtask, passed to the
scenario) binds and listens on that one, forks, lets its parent exit at
once, calls setsid and forks again. The kernel side stops the parent inside
listen() (SIGSTOP from `sock/inet_sock_set_state`), so it forks nothing;
the daemon kills it and writes `killed` once nothing holds the socket.

Every wait is bounded; the only poll is of `ss`, which has nothing to wait on.
"""
import os
import subprocess
import time

# scenario.py imports this file at its start: its names are used once it
# has run (inside the functions), never at import.
import scenario


def allow_all_but(port):
    """Rules allowing every listener but TCP `port` (tests/common's allow_all_but)."""
    rules = [f'[[allow]]\nproto = "tcp"\nport = "1-{port - 1}"\n', f'[[allow]]\nproto = "tcp"\nport = "{port + 1}-65535"\n']
    rules += [f'[[allow]]\nname = "any {proto}"\nproto = "{proto}"\n' for proto in ["udp", "unix", "raw", "packet"]]
    return "\n".join(rules)


def listening(port):
    out = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True,
                         timeout=scenario.EVENT_TIMEOUT)
    return out.stdout.strip()


def run(results, binary, log_dir, tmpfs, program):
    """Every check of this file; a failure in one part is a FAIL, never the scenario's end."""
    try:
        checks(results, binary, log_dir, tmpfs, program)
    except Exception as e:  # one broken step must not hide the scenario's others
        results.check("kill_unexpected step", False, f"{type(e).__name__}: {e}")


def checks(results, binary, log_dir, tmpfs, program):
    work = os.path.join(tmpfs, "kill")
    os.makedirs(work, exist_ok=True)
    port = scenario.free_tcp_port()
    config = os.path.join(work, "watcher.toml")
    with open(config, "w") as f:
        f.write("kill_unexpected = true\n\n" + allow_all_but(port))
    daemon = scenario.Watcher(binary, log_dir, "--config", config, name="watcher-kill", command=("daemon",))
    ready, error = daemon.wait_ready(results)
    if not results.check("kill: daemon with kill_unexpected ready", ready is not None,
                         error or "no ready line (see watcher-kill.stderr)"):
        daemon.proc.kill()
        return
    try:
        killing(results, daemon, work, program, port)
    finally:
        code = daemon.stop()
        results.check("kill: daemon exits 0 on SIGTERM", code == 0, f"exit {code}")


def killing(results, daemon, work, program, port):
    pidfile = os.path.join(work, "pids")
    # The parent is stopped inside listen(), then SIGKILLed: run() returns at its death.
    status = subprocess.run([program, str(port), pidfile], timeout=scenario.EVENT_TIMEOUT).returncode
    results.check("kill: the daemonizing listener ends by SIGKILL", status == -9, f"exit status {status}")
    with open(pidfile) as f:
        pids = [line.split() for line in f]
    results.check("kill: stopped inside listen(), it forked nothing", [role for role, _ in pids] == ["parent"],
                  f"its pidfile: {pids}")
    parent = int(pids[0][1])
    deadline = time.monotonic() + scenario.EVENT_TIMEOUT
    while listening(port) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = listening(port)
    results.check("kill: nothing listens on the port", not left, left)
    listen = daemon.wait_event(scenario.ev("listen", parent, port=port))
    results.check("kill: the listen is reported, naming the parent", listen is not None, f"no listen by {parent}")
    outcome = daemon.wait_event(lambda e: e.get("event") in ("killed", "kill_failed") and e.get("port") == port)
    if results.check("kill: `killed` for the port", outcome is not None and outcome["event"] == "killed",
                     repr(outcome)):
        results.check("kill: `killed` lists the parent, and only it", outcome.get("killed") == [parent],
                      f"killed {outcome.get('killed')}, the parent is {parent}")
    failed = [e for e in daemon.events if e.get("event") == "kill_failed"]
    results.check("kill: no kill_failed", not failed, repr(failed))
