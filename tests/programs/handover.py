"""A TCP listener handed over SCM_RIGHTS from one process to another that
is not its child (issue 11): the holders must follow the socket.

    handover.py receive PATH [DELAY_MS]
                               binds a UNIX stream socket at PATH, says
                               "pid N" then "ready", takes one fd over it
                               (DELAY_MS after the sender connects: until
                               then the listener is in no process's fd
                               table, its sender gone),
                               says "got PORT", accepts one connection on it
                               ("accepted"), and holds the listener until it
                               reads a line ("closed"), then waits for EOF.
    handover.py send PATH      makes a listener on 127.0.0.1 (port from the
                               kernel), says "pid N" and "port PORT", sends
                               it to PATH, closes its own fd and exits.
"""
import os
import socket
import sys
import time


def say(*words):
    print(*words, flush=True)


def receive(path, delay_ms=0):
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    say("pid", os.getpid())
    say("ready")
    conn, _ = server.accept()
    time.sleep(delay_ms / 1000)
    _, fds, _, _ = socket.recv_fds(conn, 16, 1)
    conn.close()
    server.close()
    listener = socket.socket(fileno=fds[0])
    say("got", listener.getsockname()[1])
    client, _ = listener.accept()
    client.close()
    say("accepted")
    sys.stdin.readline()  # "close"
    listener.close()
    say("closed")
    sys.stdin.read()


def send(path):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    say("pid", os.getpid())
    say("port", listener.getsockname()[1])
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(path)
    socket.send_fds(conn, [b"x"], [listener.fileno()])
    conn.close()
    listener.close()


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "receive":
        receive(path, int(sys.argv[3]) if len(sys.argv) > 3 else 0)
    else:
        send(path)


if __name__ == "__main__":
    main()
