"""Real sockets for watcher's end-to-end tests, opened by a separate process.

Protocol on stdin/stdout, one line each way, so the test never sleeps:
the child prints "pid N" and waits for "go"; then it does its mode's work,
printing what it opened, and waits for "close" / end of input as described.
"""
import os
import resource
import socket
import sys
import time

FAMILIES = {"4": socket.AF_INET, "6": socket.AF_INET6}
TYPES = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}


def say(*words):
    print(*words, flush=True)


def wait_for(word):
    line = sys.stdin.readline()
    if line.strip() != word:
        sys.exit(f"expected {word!r}, got {line!r}")


def hold(*specs):
    """Open sockets, one per FAMILY PROTO ADDR PORT quadruple (listening if
    TCP), report their ports, close them all when told."""
    socks = []
    for i in range(0, len(specs), 4):
        family, proto, addr, port = specs[i : i + 4]
        s = socket.socket(FAMILIES[family], TYPES[proto])
        s.bind((addr, int(port)))
        if proto == "tcp":
            s.listen(16)
        socks.append(s)
    say("ready", *(s.getsockname()[1] for s in socks))
    wait_for("close")
    for s in socks:
        s.close()
    say("closed")
    sys.stdin.read()  # stay alive until the test has seen the close


def flash(family, addr):
    """A listener that lives well under a millisecond."""
    s = socket.socket(FAMILIES[family], socket.SOCK_STREAM)
    t0 = time.monotonic_ns()
    s.bind((addr, 0))
    s.listen(1)
    port = s.getsockname()[1]
    s.close()
    say("port", port, "lived_ns", time.monotonic_ns() - t0)


def many(count):
    """COUNT TCP listeners as fast as this process can open them."""
    count = int(count)
    resource.setrlimit(resource.RLIMIT_NOFILE, (count + 64, count + 64))
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        socks.append(s)
    say("ports", *(s.getsockname()[1] for s in socks))
    for s in socks:
        s.close()
    say("closed")


def noise():
    """Other sockets on the host: bind and close UDP sockets until killed
    (at most a minute, so a forgotten child stops by itself)."""
    say("noisy")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.close()


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    say("pid", os.getpid())
    wait_for("go")
    {"hold": hold, "flash": flash, "many": many, "noise": noise}[mode](*args)


if __name__ == "__main__":
    main()
