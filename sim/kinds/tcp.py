"""TCP sockets (kind ``tcp``): listen, accept, connect, and newline-framed lines.

A socket has no name of its own, so the scenario gives one (``ctx.tcp_listen("echo", 7777)``);
it appears as ``prim`` in the log. TCP is a byte stream without message boundaries: the
newline at the end of each line is the framing, and ``recv_line`` reads up to it however the
bytes were split into segments. Payloads are logged as text (UTF-8, undecodable bytes
replaced). Every operation that raises logs ``fail`` with the error.
"""

from __future__ import annotations

import socket
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sim.history.facts import Operation
from sim.history.lines import Line

from ._base import Display, Kind, Logged, Model, Reading, item_key, turn

__all__ = ["Stream", "TcpListener", "TcpModel", "TcpStream", "tcp_connect", "tcp_listen"]


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class TcpStream(Logged):
    """A connected TCP socket that sends and receives newline-framed lines."""

    kind = "tcp"

    def __init__(self, name: str, sock: socket.socket, log: Any, clock: Any, peer: str) -> None:
        super().__init__(name, sock, log, clock)
        self.peer = peer
        self._sock = sock
        self._file = sock.makefile("rb")
        self._log = self._log.bind(peer=peer)

    def send_line(self, text: str) -> None:
        """Send ``text`` and a newline: TCP is a byte stream, the newline is the framing."""
        data = text.encode() + b"\n"
        self._log.info("op", op="send", phase="invoke", item=text, bytes=len(data))
        self._turn()
        try:
            self._sock.sendall(data)
        except OSError as exc:
            self._log.info("op", op="send", phase="fail", error=_error(exc))
            raise
        self._log.info("op", op="send", phase="ok", item=text, bytes=len(data))

    def recv_line(self) -> str | None:
        """The next line without its newline, or None once the peer has closed."""
        self._log.info("op", op="recv", phase="invoke")
        self._turn()
        try:
            data = self._file.readline()
        except OSError as exc:
            self._log.info("op", op="recv", phase="fail", error=_error(exc))
            raise
        if not data.endswith(b"\n"):
            # What came before the close, if anything, is on the line as "partial": a peer that
            # ends its lines with something else than a newline shows here.
            extra = {"partial": _text(data)} if data else {}
            self._log.info("op", op="recv", phase="fail", error="EOF", bytes=len(data), **extra)
            return None
        text = _text(data[:-1])
        self._log.info("op", op="recv", phase="ok", item=text, bytes=len(data))
        return text

    def close(self) -> None:
        self._log.info("op", op="close", phase="invoke")
        self._turn()
        self._file.close()
        self._sock.close()
        self._log.info("op", op="close", phase="ok")

    def __enter__(self) -> TcpStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TcpListener(Logged):
    """A listening TCP socket (the passive, server side)."""

    kind = "tcp"

    def __init__(self, name: str, sock: socket.socket, log: Any, clock: Any) -> None:
        super().__init__(name, sock, log, clock)
        self._sock = sock
        self._base = log
        self.port: int = sock.getsockname()[1]

    def accept(self) -> TcpStream:
        """Wait for the next client and return the connection to it."""
        self._log.info("op", op="accept", phase="invoke")
        self._turn()
        try:
            conn, address = self._sock.accept()
        except OSError as exc:
            self._log.info("op", op="accept", phase="fail", error=_error(exc))
            raise
        peer = f"{address[0]}:{address[1]}"
        self._log.info("op", op="accept", phase="ok", peer=peer)
        return TcpStream(self.name, conn, self._base, self._clock, peer)

    def close(self) -> None:
        self._log.info("op", op="close", phase="invoke")
        self._turn()
        self._sock.close()
        self._log.info("op", op="close", phase="ok")


def tcp_listen(name: str, log: Any, clock: Any, host: str, port: int, backlog: int) -> TcpListener:
    """Bind and listen on ``host:port`` (port 0: the OS picks a free one, see ``.port``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    bound = log.bind(prim=name, kind="tcp")
    bound.info("op", op="listen", phase="invoke", port=port)
    turn(clock)
    try:
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        bound.info("op", op="listen", phase="fail", error=_error(exc))
        raise
    listener = TcpListener(name, sock, log, clock)
    bound.info("op", op="listen", phase="ok", port=listener.port)
    return listener


def tcp_connect(name: str, log: Any, clock: Any, host: str, port: int,
                timeout: float | None) -> TcpStream:  # fmt: skip
    """Connect to ``host:port``; ``timeout`` in simulated minutes."""
    peer = f"{host}:{port}"
    bound = log.bind(prim=name, kind="tcp", peer=peer)
    bound.info("op", op="connect", phase="invoke", port=port)
    turn(clock)
    try:
        sock = socket.create_connection(
            (host, port), timeout=None if timeout is None else clock.seconds(timeout)
        )
    except OSError as exc:
        bound.info("op", op="connect", phase="fail", error=_error(exc))
        raise
    sock.settimeout(None)
    local = sock.getsockname()
    bound.info("op", op="connect", phase="ok", local=f"{local[0]}:{local[1]}")
    return TcpStream(name, sock, log, clock, peer)


@dataclass
class Stream:
    """One side of one connection: what it sent and received, in order."""

    actor: str
    peer: str
    sent: list[str] = field(default_factory=list)
    got: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)
    closed: bool = False


class TcpModel(Model):
    """Every connection on one named socket: who connected from where, who accepted whom, and
    what each side sent and received, in order; a send is matched to the peer's receive."""

    series: ClassVar[tuple[str, ...]] = ("in flight",)

    def __init__(self, name: str, info: Any, history: Any) -> None:
        super().__init__(name, info, history)
        #: By (actor, peer): one side of a connection.
        self.streams: dict[tuple[str, str], Stream] = {}
        #: Client actor -> its local address (from its connect ok).
        self.local: dict[str, str] = {}
        #: Peers accepted, by the accepting actor.
        self.accepted: dict[str, list[str]] = {}
        self.connections = 0
        self._sends: dict[Any, deque[Operation]] = {}
        self._in_flight = 0
        # For the virtual scheduler: each listener's port, the connections made to each port,
        # the actor that accepted each client's address, and each client's own stream.
        self._listening: dict[str, int] = {}
        self._connected: dict[int, int] = {}
        self._accepts: dict[str, int] = {}
        self._accepted_by: dict[str, str] = {}
        self._client: dict[str, tuple[str, str]] = {}

    def key(self, line: Line) -> Any:
        # A server thread per connection runs several operations at once, told apart by the
        # peer; an accept learns its peer only when it returns.
        return (line.actor, line.op, None if line.op == "accept" else line.peer)

    def ready(self, op: Operation) -> bool:
        line = op.invoke
        name, actor = line.op, line.actor
        if name == "accept":
            port = self._listening.get(actor)
            return port is not None and self._connected.get(port, 0) > self._accepts.get(actor, 0)
        if name != "recv":
            return True
        mine = self.streams.get((actor, str(line.peer)))
        got = len(mine.got) if mine is not None else 0
        other = self._counterpart(actor, str(line.peer))
        if other is None:
            return False
        return len(other.sent) > got or other.closed

    def _counterpart(self, actor: str, peer: str) -> Stream | None:
        """The other side of the connection ``actor`` knows as ``peer``."""
        client = self._client.get(peer)
        if client is not None:
            return self.streams.get(client)  # actor accepted this client's address
        local = self.local.get(actor)
        if local is None:
            return None
        server = self._accepted_by.get(local)
        return None if server is None else self.streams.get((server, local))

    def stream(self, actor: str, peer: str) -> Stream:
        found = self.streams.get((actor, peer))
        if found is None:
            found = self.streams[(actor, peer)] = Stream(actor, peer)
        return found

    def reading(self) -> Reading:
        self._peak = max(getattr(self, "_peak", 0), self._in_flight)
        return Reading(self._in_flight, max(self._peak, 1),
                       f"{self._in_flight} in transit (peak {self._peak})")  # fmt: skip

    def invoke(self, op: Operation) -> None:
        if op.invoke.op == "send":
            key = item_key(op.invoke.item)
            self._sends.setdefault(key, deque()).append(op)

    def complete(self, op: Operation) -> None:
        done = op.done
        assert done is not None
        line = op.invoke
        name, actor = line.op, line.actor
        if done.phase != "ok":
            if name == "send":
                sends = self._sends.get(item_key(line.item))
                if sends is not None and op in sends:
                    sends.remove(op)
            elif name == "recv" and done.get("partial"):
                self.stream(actor, str(line.peer)).partial.append(str(done.get("partial")))
            return
        if name == "listen":
            port = done.get("port")
            if isinstance(port, int):
                self._listening[actor] = port
        elif name == "accept":
            self.accepted.setdefault(actor, []).append(str(done.peer))
            self.connections += 1
            self._accepts[actor] = self._accepts.get(actor, 0) + 1
            self._accepted_by[str(done.peer)] = actor
        elif name == "connect":
            local = str(done.get("local", "?"))
            self.local[actor] = local
            port = line.get("port")
            if isinstance(port, int):
                self._connected[port] = self._connected.get(port, 0) + 1
            if line.peer is not None:
                self._client[local] = (actor, str(line.peer))
                self.stream(actor, str(line.peer))
        elif name == "close" and line.peer is not None:
            self.stream(actor, str(line.peer)).closed = True
        elif name == "send":
            self.stream(actor, str(line.peer)).sent.append(done.item)
            self._in_flight += 1
            self.set_gauge(**{"in flight": self._in_flight})
        elif name == "recv":
            self.stream(actor, str(line.peer)).got.append(done.item)
            self._received(op, done.item)

    def _received(self, op: Operation, item: Any) -> None:
        sends = self._sends.get(item_key(item))
        # A process never receives on a connection what it sent itself.
        src = None if not sends else next((s for s in sends if s.actor != op.actor), None)
        if src is None:
            return
        assert sends is not None
        sends.remove(src)
        self._in_flight -= 1
        self.set_gauge(**{"in flight": self._in_flight})
        self.history.transfer(src, op, "message")


_WAITING = {
    "accept": "accepting",
    "connect": "connecting",
    "recv": "receiving",
    "send": "sending",
}
KINDS = [
    Kind(
        "tcp",
        TcpModel,
        blocking=frozenset(_WAITING),
        waiting=_WAITING,
        flow=("send", "recv"),
        display=Display((("in flight", "fill"),),
                        "messages in transit (sent and not yet received)", "items", rank=0),
    )
]  # fmt: skip
