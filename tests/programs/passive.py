"""Passive listeners, failed binds and listener options, opened by a separate
process for watcher's end-to-end tests. Same protocol as sockets.py: print
"pid N", wait for "go", act, print what was done, stay alive until stdin ends.
"""
import ctypes
import os
import socket
import struct
import sys

ETH_P_ALL = 0x0003
SO_ATTACH_FILTER = 26

# A BPFDoor-style classic filter: accept only UDP packets whose payload
# starts with a magic word, drop everything else (tcpdump -d style listing).
MAGIC_FILTER = [
    (0x28, 0, 0, 0x0000000C),  # ldh [12]          ethertype
    (0x15, 0, 6, 0x00000800),  # jeq #IPv4
    (0x30, 0, 0, 0x00000017),  # ldb [23]          ip proto
    (0x15, 0, 4, 0x00000011),  # jeq #UDP
    (0x20, 0, 0, 0x0000002A),  # ld [42]           first payload word
    (0x15, 0, 2, 0x7255ABCD),  # jeq #magic
    (0x06, 0, 0, 0x0000FFFF),  # ret #65535
    (0x06, 0, 0, 0x00000000),  # ret #0
    (0x06, 0, 0, 0x00000000),  # ret #0
]


def say(*words):
    print(*words, flush=True)


def packet_filter():
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    code = b"".join(struct.pack("HBBI", *insn) for insn in MAGIC_FILTER)
    buf = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(MAGIC_FILTER), ctypes.addressof(buf))
    s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)
    say("ready", s.fileno(), len(MAGIC_FILTER), code.hex())
    return s


def raw_icmp():
    # A netlink socket first: also SOCK_RAW, but it hears the kernel, not
    # the wire, and must not be reported as a raw socket.
    netlink = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    say("ready", s.fileno(), netlink.fileno())
    return [s, netlink]


def try_bind(family, addr, port):
    fam = socket.AF_INET if family == "4" else socket.AF_INET6
    s = socket.socket(fam, socket.SOCK_STREAM)
    try:
        s.bind((addr, int(port)))
        s.listen(1)
        say("bound", s.fileno())
    except OSError as e:
        say("failed", e.errno, s.fileno())
    return s


def options():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"lo\0")
    s.bind(("127.0.0.1", 0))
    s.listen(7)
    say("ready", s.fileno(), s.getsockname()[1])
    return s


def unix(path, abstract):
    """A filesystem-path and an abstract UNIX listener; on "close" the path one
    is closed, then the process exits without closing the other (the kernel
    closes it at exit)."""
    a = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    a.bind(path)
    a.listen(3)
    b = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    b.bind("\0" + abstract)
    b.listen(4)
    say("ready", a.fileno(), b.fileno())
    if sys.stdin.readline().strip() != "close":
        sys.exit("expected close")
    a.close()
    say("closed")
    sys.stdin.read()
    os._exit(0)


def unix_dgram(path, abstract):
    """UNIX datagram sockets, which never listen: one bound to a filesystem
    path, one to an abstract name, and first a client's autobound one (the
    kernel names it; nothing to report). On "close" the path one is closed;
    then the process exits holding the abstract one (a forked child that
    held it too has exited first, so the exit is its last holder's)."""
    client = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    client.bind("")
    a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.bind(path)
    b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    b.bind("\0" + abstract)
    child = os.fork()
    if child == 0:
        os._exit(0)
    os.waitpid(child, 0)
    say("ready", a.fileno(), b.fileno())
    if sys.stdin.readline().strip() != "close":
        sys.exit("expected close")
    a.close()
    say("closed")
    sys.stdin.read()
    os._exit(0)


def accept_server():
    """Accepts one connection asking for the peer's address, then one
    passing NULL for it (libc accept(fd, NULL, NULL))."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(4)
    say("ready", s.fileno(), s.getsockname()[1])
    first, _ = s.accept()
    say("accepted", first.fileno())
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.accept(s.fileno(), None, None)
    if fd < 0:
        sys.exit(f"accept: errno {ctypes.get_errno()}")
    say("accepted", fd)
    return s


def trickle():
    """Opens TCP listeners one after another, kept open, until "stop"; then
    names their ports and opens one IPv6 marker listener."""
    import resource
    import select

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    socks = []
    say("trickling")
    while len(socks) < hard - 100 and not select.select([sys.stdin], [], [], 0.0005)[0]:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        socks.append(s)
    if sys.stdin.readline().strip() != "stop":
        sys.exit("expected stop")
    say("ports", *(s.getsockname()[1] for s in socks))
    marker = socket.socket(socket.AF_INET6)
    marker.bind(("::1", 0))
    marker.listen(1)
    socks.append(marker)
    say("marker")
    return socks


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    say("pid", os.getpid())
    if sys.stdin.readline().strip() != "go":
        sys.exit("expected go")
    modes = {
        "packet_filter": packet_filter,
        "raw_icmp": raw_icmp,
        "try_bind": try_bind,
        "options": options,
        "unix": unix,
        "unix_dgram": unix_dgram,
        "accept_server": accept_server,
        "trickle": trickle,
    }
    keep = modes[mode](*args)
    sys.stdin.read()
    for s in keep if isinstance(keep, list) else [keep]:
        s.close()


if __name__ == "__main__":
    main()
