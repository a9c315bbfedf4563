"""Programs outside a run, for the tests: plain Python socket servers and clients, each started
as its own OS process (``python -m tests.outside_peers ROLE ...``), never part of sim.

Each prints one line once it is ready (``port N`` for a server, ``connected HOST:PORT`` for a
client, its local address) and then what it did, so that a test can read both.
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import threading
import time


def _say(*words: object) -> None:
    print(*words, flush=True)


def _listen(port: int) -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", port))
    server.listen()
    _say("port", server.getsockname()[1])
    return server


def echo_server(args: argparse.Namespace) -> None:
    """Echo every line of every client, each in a thread, as ``line + suffix``: a newline
    normally; ``/n`` like the server in the study notes (two characters, no newline)."""
    suffix = args.suffix.encode().decode("unicode_escape").encode()

    def serve(conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            for line in lines:
                time.sleep(args.delay)
                conn.sendall(line.rstrip(b"\n") + suffix)

    server = _listen(args.port)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def reset_server(args: argparse.Namespace) -> None:
    """Reset connections: the first at once, every later one after reading its first line."""
    server = _listen(args.port)
    for n in range(1_000_000):
        conn, _ = server.accept()
        if n > 0:
            conn.makefile("rb").readline()
        # SO_LINGER 0: close sends RST instead of FIN, so the client's next call raises.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        _say("reset", n)


def _connect(port: int) -> socket.socket:
    # The run under test may not listen yet: try again until it does (or the test kills us).
    while True:
        try:
            conn = socket.create_connection(("127.0.0.1", port))
        except ConnectionRefusedError:
            time.sleep(0.01)
            continue
        host, local = conn.getsockname()[:2]
        _say("connected", f"{host}:{local}")
        return conn


def lines_client(args: argparse.Namespace) -> None:
    """Send ``count`` lines, read the echo of each, print it, close."""
    with _connect(args.port) as conn, conn.makefile("rb") as replies:
        for i in range(args.count):
            conn.sendall(f"outside line {i}\n".encode())
            _say("echo", replies.readline().decode().rstrip("\n"))


def idle_client(args: argparse.Namespace) -> None:
    """Connect and send nothing; wait until the other side closes."""
    with _connect(args.port) as conn:
        _say("closed" if conn.recv(1) == b"" else "data")


def _udp_bound(port: int) -> bool:
    """Whether a UDP socket on this host is bound to ``port`` (read, not probed by binding:
    a probe could take the port from the receiver for a moment)."""
    with open("/proc/net/udp", encoding="ascii") as table:
        next(table)
        return any(int(row.split()[1].split(":")[1], 16) == port for row in table)


def udp_sender(args: argparse.Namespace) -> None:
    """Once the port is bound (by the run's receiver), send each datagram given."""
    while not _udp_bound(args.port):
        time.sleep(0.01)
    out = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for text in args.datagrams:
        out.sendto(text.encode(), ("127.0.0.1", args.port))
        _say("sent", out.getsockname()[1], text)


def udp_receiver(args: argparse.Namespace) -> None:
    """Print every datagram that arrives."""
    inbox = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    inbox.bind(("127.0.0.1", args.port))
    _say("port", inbox.getsockname()[1])
    while True:
        data, _ = inbox.recvfrom(65536)
        _say("got", data.decode())


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.outside_peers")
    roles = parser.add_subparsers(required=True)
    for name, role in (("echo-server", echo_server), ("reset-server", reset_server),
                       ("udp-receiver", udp_receiver)):  # fmt: skip
        sub = roles.add_parser(name)
        sub.add_argument("--port", type=int, default=0)
        sub.set_defaults(role=role)
        if role is echo_server:
            sub.add_argument("--suffix", default="\\n")
            sub.add_argument("--delay", type=float, default=0.0)
    for name, role in (("lines-client", lines_client), ("idle-client", idle_client)):
        sub = roles.add_parser(name)
        sub.add_argument("port", type=int)
        sub.add_argument("--count", type=int, default=5)
        sub.set_defaults(role=role)
    sub = roles.add_parser("udp-sender")
    sub.add_argument("port", type=int)
    sub.add_argument("datagrams", nargs="*")
    sub.set_defaults(role=udp_sender)
    args = parser.parse_args(argv)
    args.role(args)


if __name__ == "__main__":
    main(sys.argv[1:])
