"""UNIX datagram sockets bound to a name, as syslog's /dev/log and exim4's
@/var/spool/exim4/exim_daemon_notify are (issue 11).

    unix_dgram.py PATH ABSTRACT   says "pid N", waits for "go", binds a
                                  datagram socket at PATH and one on the
                                  abstract name ABSTRACT, says "bound", waits
                                  for a line, closes both, says "closed" and
                                  waits for EOF.
"""
import os
import socket
import sys


def say(*words):
    print(*words, flush=True)


def main():
    path, abstract = sys.argv[1], sys.argv[2]
    say("pid", os.getpid())
    sys.stdin.readline()  # "go"
    socks = []
    for name in [path, "\0" + abstract]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(name)
        socks.append(s)
    say("bound", *(s.fileno() for s in socks))
    sys.stdin.readline()  # "close"
    for s in socks:
        s.close()
    say("closed")
    sys.stdin.read()


if __name__ == "__main__":
    main()
