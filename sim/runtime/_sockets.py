"""Real TCP and UDP sockets whose every operation is logged as an ``op`` event.

A socket has no name of its own, so the scenario gives one (``ctx.tcp_listen("echo", 7777)``);
it appears as ``prim`` in the log, with ``kind`` ``tcp`` or ``udp``. Payloads are logged as
text (UTF-8, undecodable bytes replaced), which is what the scenarios send.
"""

from __future__ import annotations

import socket
from typing import Any

from .clock import Clock

__all__ = ["LoggedDatagram", "LoggedListener", "LoggedStream", "tcp_connect", "tcp_listen", "udp"]


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


class LoggedStream:
    """A connected TCP socket that sends and receives newline-framed lines."""

    def __init__(self, name: str, sock: socket.socket, log: Any, peer: str) -> None:
        self.name = name
        self.peer = peer
        self._sock = sock
        self._file = sock.makefile("rb")
        self._log = log.bind(prim=name, kind="tcp", peer=peer)

    def send_line(self, text: str) -> None:
        """Send ``text`` and a newline: TCP is a byte stream, the newline is the framing."""
        data = text.encode() + b"\n"
        self._log.info("op", op="send", phase="invoke", item=text, bytes=len(data))
        self._sock.sendall(data)
        self._log.info("op", op="send", phase="ok", item=text, bytes=len(data))

    def recv_line(self) -> str | None:
        """The next line without its newline, or None once the peer has closed."""
        self._log.info("op", op="recv", phase="invoke")
        data = self._file.readline()
        if not data.endswith(b"\n"):
            self._log.info("op", op="recv", phase="fail", error="EOF", bytes=len(data))
            return None
        text = _text(data[:-1])
        self._log.info("op", op="recv", phase="ok", item=text, bytes=len(data))
        return text

    def close(self) -> None:
        self._log.info("op", op="close", phase="invoke")
        self._file.close()
        self._sock.close()
        self._log.info("op", op="close", phase="ok")

    def __enter__(self) -> LoggedStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LoggedListener:
    """A listening TCP socket (the passive, server side)."""

    def __init__(self, name: str, sock: socket.socket, log: Any) -> None:
        self.name = name
        self._sock = sock
        self._log = log.bind(prim=name, kind="tcp")
        self.port: int = sock.getsockname()[1]

    def accept(self) -> LoggedStream:
        """Wait for the next client and return the connection to it."""
        self._log.info("op", op="accept", phase="invoke")
        conn, address = self._sock.accept()
        peer = f"{address[0]}:{address[1]}"
        self._log.info("op", op="accept", phase="ok", peer=peer)
        return LoggedStream(self.name, conn, self._log, peer)

    def close(self) -> None:
        self._log.info("op", op="close", phase="invoke")
        self._sock.close()
        self._log.info("op", op="close", phase="ok")


def tcp_listen(name: str, log: Any, host: str, port: int, backlog: int) -> LoggedListener:
    """Bind and listen on ``host:port`` (port 0: the OS picks a free one, see ``.port``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    log.info("op", prim=name, kind="tcp", op="listen", phase="invoke", port=port)
    sock.bind((host, port))
    sock.listen(backlog)
    listener = LoggedListener(name, sock, log)
    log.info("op", prim=name, kind="tcp", op="listen", phase="ok", port=listener.port)
    return listener


def tcp_connect(name: str, log: Any, clock: Clock, host: str, port: int,
                timeout: float | None) -> LoggedStream:  # fmt: skip
    """Connect to ``host:port``; ``timeout`` in simulated minutes."""
    bound = log.bind(prim=name, kind="tcp")
    bound.info("op", op="connect", phase="invoke", port=port)
    try:
        sock = socket.create_connection(
            (host, port), timeout=None if timeout is None else clock.seconds(timeout)
        )
    except OSError as exc:
        bound.info("op", op="connect", phase="fail", error=str(exc))
        raise
    sock.settimeout(None)
    local = sock.getsockname()
    bound.info("op", op="connect", phase="ok", local=f"{local[0]}:{local[1]}")
    return LoggedStream(name, sock, log, f"{host}:{port}")


class LoggedDatagram:
    """A UDP socket: each ``sendto`` is one datagram, each ``recvfrom`` returns one."""

    def __init__(self, name: str, sock: socket.socket, log: Any, clock: Clock) -> None:
        self.name = name
        self._sock = sock
        self._clock = clock
        self._log = log.bind(prim=name, kind="udp")
        self.port: int = sock.getsockname()[1]

    def sendto(self, text: str, port: int, host: str = "127.0.0.1") -> None:
        data = text.encode()
        self._log.info("op", op="sendto", phase="invoke", item=text, to=port)
        self._sock.sendto(data, (host, port))
        self._log.info("op", op="sendto", phase="ok", item=text, to=port)

    def recvfrom(self, timeout: float | None = None) -> tuple[str, int] | None:
        """One datagram as (text, sender port), or None if none came within ``timeout``."""
        if timeout is None:
            self._log.info("op", op="recvfrom", phase="invoke")
        else:
            self._log.info("op", op="recvfrom", phase="invoke", timeout=timeout)
        self._sock.settimeout(None if timeout is None else self._clock.seconds(timeout))
        try:
            data, address = self._sock.recvfrom(65536)
        except TimeoutError:
            self._log.info("op", op="recvfrom", phase="timeout")
            return None
        text = _text(data)
        self._log.info("op", op="recvfrom", phase="ok", item=text, sender=address[1])
        return text, address[1]

    def close(self) -> None:
        self._log.info("op", op="close", phase="invoke")
        self._sock.close()
        self._log.info("op", op="close", phase="ok")


def udp(name: str, log: Any, clock: Clock, host: str, port: int) -> LoggedDatagram:
    """A UDP socket bound to ``host:port`` (port 0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    log.info("op", prim=name, kind="udp", op="bind", phase="invoke", port=port)
    sock.bind((host, port))
    datagram = LoggedDatagram(name, sock, log, clock)
    log.info("op", prim=name, kind="udp", op="bind", phase="ok", port=datagram.port)
    return datagram
