"""A process whose name and argv are built to break or forge output lines:
newlines, ANSI escapes, invalid UTF-8. Same protocol as sockets.py."""
import ctypes
import os
import socket
import sys

PR_SET_NAME = 15


def main():
    print("pid", os.getpid(), flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit("expected go")
    libc = ctypes.CDLL(None)
    # At most 15 bytes; the kernel keeps them as they are.
    libc.prctl(PR_SET_NAME, b"ev\nil\x1b[31m\xff", 0, 0, 0)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    print("ready", s.getsockname()[1], flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
