"""Opens and closes COUNT TCP/IPv4 listeners as fast as it can (bind,
listen, close: three records each). Same protocol as sockets.py: "pid N",
wait for "go"; after the flood it says "flooded". Then, on "markers", it
opens IPv6 listeners (bind, listen: two records each, kept open) until told
"stop", and says how many: the first marker the watcher reports shows it
has caught up, and every marker made is accounted for."""
import os
import select
import socket
import sys


def main():
    count = int(sys.argv[1])
    print("pid", os.getpid(), flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit("expected go")
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        s.close()
    print("flooded", flush=True)
    if sys.stdin.readline().strip() != "markers":
        sys.exit("expected markers")
    markers = []
    while not select.select([sys.stdin], [], [], 0.001)[0]:
        s = socket.socket(socket.AF_INET6)
        s.bind(("::1", 0))
        s.listen(1)
        markers.append(s)
    if sys.stdin.readline().strip() != "stop":
        sys.exit("expected stop")
    print("markers", len(markers), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
