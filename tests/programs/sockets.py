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


def open_specs(specs):
    """Sockets per FAMILY PROTO ADDR PORT quadruple, listening if TCP."""
    socks = []
    for i in range(0, len(specs), 4):
        family, proto, addr, port = specs[i : i + 4]
        s = socket.socket(FAMILIES[family], TYPES[proto])
        s.bind((addr, int(port)))
        if proto == "tcp":
            s.listen(16)
        socks.append(s)
    return socks


def prefork(*specs):
    """A pre-forking server (apache2-style): open sockets as `hold` does,
    then fork two workers that inherit them. Prints "ready PORTS..." and
    "workers PID PID" (the workers already hold every socket: fork copied
    the fd table before it returned). On "close" the workers are told to
    exit and are waited for; they also exit if this process dies, when the
    pipe they wait on loses its last writer."""
    socks = open_specs(specs)
    r, w = os.pipe()
    workers = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            os.close(w)
            os.read(r, 1)
            os._exit(0)
        workers.append(pid)
    os.close(r)
    say("ready", *(s.getsockname()[1] for s in socks))
    say("workers", *workers)
    wait_for("close")
    os.close(w)
    for pid in workers:
        os.waitpid(pid, 0)
    say("closed")
    sys.stdin.read()


def unix_sockets(directory, abstract):
    """UNIX sockets of every listed kind: a stream listener at
    DIRECTORY/stream.sock, a seqpacket listener at DIRECTORY/seqpacket.sock,
    a bound datagram socket at DIRECTORY/dgram.sock and a stream listener on
    the abstract name ABSTRACT. Prints "ready" and their fds in that order,
    then holds them until stdin ends."""
    socks = []
    for kind, name in [
        (socket.SOCK_STREAM, os.path.join(directory, "stream.sock")),
        (socket.SOCK_SEQPACKET, os.path.join(directory, "seqpacket.sock")),
        (socket.SOCK_DGRAM, os.path.join(directory, "dgram.sock")),
        (socket.SOCK_STREAM, "\0" + abstract),
    ]:
        s = socket.socket(socket.AF_UNIX, kind)
        s.bind(name)
        if kind != socket.SOCK_DGRAM:
            s.listen(5)
        socks.append(s)
    say("ready", *(s.fileno() for s in socks))
    sys.stdin.read()


def hostile(directory):
    """A process that tries to forge lines of watcher's output: its comm and
    its UNIX listener's path hold a newline and a terminal escape."""
    with open("/proc/self/comm", "wb") as comm:
        comm.write(b"x\nfake\x1b[2J")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(os.path.join(directory, "a\nroot 1 tcp4\x1b[31m.sock"))
    s.listen(1)
    say("ready", s.fileno())
    sys.stdin.read()


def inflight(addr):
    """A TCP listener that no process holds: its only fd is sent over a UNIX
    socketpair (SCM_RIGHTS) and closed, so it lives on in the message queue.
    Prints "ready PORT" and keeps the message unread until stdin ends."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind((addr, 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    a, b = socket.socketpair()
    socket.send_fds(a, [b"x"], [listener.fileno()])
    listener.close()
    say("ready", port)
    sys.stdin.read()


def reuse(proto, port):
    """A PROTO (udp, or tcp listening) socket on 127.0.0.1:PORT with
    SO_REUSEADDR and SO_REUSEPORT, so that another process can bind the
    same address beside it (a restarted daemon whose old instance is still
    there). Prints "ready PORT"; on "close" closes it and prints "closed";
    exits at the end of input."""
    s = socket.socket(socket.AF_INET, TYPES[proto])
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind(("127.0.0.1", int(port)))
    if proto == "tcp":
        s.listen(4)
    say("ready", s.getsockname()[1])
    wait_for("close")
    s.close()
    say("closed")
    sys.stdin.read()


def before_start(directory):
    """Sockets meant to exist before watcher starts: a bound UDP socket on
    127.0.0.1, a UNIX stream listener at DIRECTORY/stream.sock and a UNIX
    datagram socket bound to DIRECTORY/dgram.sock, all inherited by a
    forked child. Prints "ready UDP_PORT STREAM_FD DGRAM_FD" and "child
    PID". On "close" the child exits (and is waited for), then this process
    closes the UDP and the stream sockets and prints "closed"; at the end of
    input it exits still holding the datagram one (the kernel closes it)."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stream.bind(os.path.join(directory, "stream.sock"))
    stream.listen(4)
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dgram.bind(os.path.join(directory, "dgram.sock"))
    r, w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    os.close(r)
    say("ready", udp.getsockname()[1], stream.fileno(), dgram.fileno())
    say("child", child)
    wait_for("close")
    os.close(w)
    os.waitpid(child, 0)
    udp.close()
    stream.close()
    say("closed")
    sys.stdin.read()
    os._exit(0)


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    say("pid", os.getpid())
    wait_for("go")
    {
        "hold": hold,
        "flash": flash,
        "many": many,
        "noise": noise,
        "prefork": prefork,
        "unix": unix_sockets,
        "hostile": hostile,
        "inflight": inflight,
        "before_start": before_start,
        "reuse": reuse,
    }[mode](*args)


if __name__ == "__main__":
    main()
