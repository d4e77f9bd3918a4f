"""Tries binds on command, for the enforcement tests, and says how each went.

Protocol on stdin/stdout, one line each way, so the test never sleeps: the
child prints "pid N", then for each line "bind FAMILY PROTO ADDR PORT" it
tries the bind (and listen, for TCP) and prints "bound PORT" or
"refused ERRNO" (EPERM, EADDRINUSE…). The sockets stay open until stdin ends.
"""
import errno
import os
import socket
import sys

FAMILIES = {"4": socket.AF_INET, "6": socket.AF_INET6}
TYPES = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}


def say(*words):
    print(*words, flush=True)


def main():
    say("pid", os.getpid())
    socks = []
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] != "bind" or len(words) != 5:
            sys.exit(f"unknown command {line!r}")
        family, proto, addr, port = words[1:]
        s = socket.socket(FAMILIES[family], TYPES[proto])
        try:
            s.bind((addr, int(port)))
            if proto == "tcp":
                s.listen(16)
        except OSError as e:
            s.close()
            say("refused", errno.errorcode.get(e.errno, str(e.errno)))
            continue
        socks.append(s)
        say("bound", s.getsockname()[1])


if __name__ == "__main__":
    main()
