"""Tries binds (and the other calls enforcement judges) on command, for the
enforcement tests, and says how each went.

Protocol on stdin/stdout, one line each way, so the test never sleeps: the
child prints "pid N", then for each line:

    bind FAMILY PROTO ADDR PORT   bind (and listen, for TCP): "bound PORT" or
                                  "refused ERRNO" (EPERM, EADDRINUSE…)
    hold FAMILY ADDR PORT         bind a TCP socket without listening on it:
                                  "held PORT" or "refused ERRNO"
    listen                        listen() on the socket last held:
                                  "listening PORT" or "refused ERRNO"
    unix PATH                     bind a UNIX stream socket to PATH (@NAME: the
                                  abstract NAME) and listen: "listening PATH",
                                  "refused ERRNO bind" or "refused ERRNO listen"
    raw FAMILY                    socket(AF_INET(6), SOCK_RAW, ICMP): "made" or
                                  "refused ERRNO"
    packet                        socket(AF_PACKET, SOCK_RAW, ETH_P_ALL): "made"
                                  or "refused ERRNO"
    comm NAME                     the kernel's name for this process (what a
                                  rule's `comm` matches): "comm NAME"

The sockets stay open until stdin ends.
"""
import errno
import os
import socket
import sys

FAMILIES = {"4": socket.AF_INET, "6": socket.AF_INET6}
TYPES = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}
ICMP = {"4": socket.IPPROTO_ICMP, "6": socket.IPPROTO_ICMPV6}
ETH_P_ALL = 0x0003


def say(*words):
    print(*words, flush=True)


def name(e):
    return errno.errorcode.get(e.errno, str(e.errno))


def main():
    say("pid", os.getpid())
    socks = []
    held = None
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        command, args = words[0], words[1:]
        if command == "bind" and len(args) == 4:
            family, proto, addr, port = args
            s = socket.socket(FAMILIES[family], TYPES[proto])
            try:
                s.bind((addr, int(port)))
                if proto == "tcp":
                    s.listen(16)
            except OSError as e:
                s.close()
                say("refused", name(e))
                continue
            socks.append(s)
            say("bound", s.getsockname()[1])
        elif command == "hold" and len(args) == 3:
            family, addr, port = args
            s = socket.socket(FAMILIES[family], socket.SOCK_STREAM)
            try:
                s.bind((addr, int(port)))
            except OSError as e:
                s.close()
                say("refused", name(e))
                continue
            socks.append(s)
            held = s
            say("held", s.getsockname()[1])
        elif command == "listen" and not args and held is not None:
            try:
                held.listen(16)
            except OSError as e:
                say("refused", name(e))
                continue
            say("listening", held.getsockname()[1])
        elif command == "unix" and len(args) == 1:
            path = args[0]
            address = "\0" + path[1:] if path.startswith("@") else path
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            socks.append(s)
            try:
                s.bind(address)
            except OSError as e:
                say("refused", name(e), "bind")
                continue
            try:
                s.listen(16)
            except OSError as e:
                say("refused", name(e), "listen")
                continue
            say("listening", path)
        elif command in ("raw", "packet") and len(args) == (1 if command == "raw" else 0):
            try:
                if command == "raw":
                    s = socket.socket(FAMILIES[args[0]], socket.SOCK_RAW, ICMP[args[0]])
                else:
                    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
            except OSError as e:
                say("refused", name(e))
                continue
            socks.append(s)
            say("made")
        elif command == "comm" and len(args) == 1:
            with open("/proc/self/comm", "w") as f:
                f.write(args[0])
            say("comm", args[0])
        else:
            sys.exit(f"unknown command {line!r}")


if __name__ == "__main__":
    main()
