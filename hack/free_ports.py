#!/usr/bin/env python3
"""`free_ports.py N` prints N distinct TCP ports of 127.0.0.1, free a moment ago, on one line;
`free_ports(n)` returns them. The one port finder of the scripts (the Rust tests and benchmarks
have `testenv::process::free_addr`)."""
import socket
import sys


def free_ports(count):
    """`count` distinct ports: each socket stays bound until all are picked."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit("usage: free_ports.py N")
    print(*free_ports(int(sys.argv[1])))
