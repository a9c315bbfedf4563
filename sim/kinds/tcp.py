"""TCP sockets (kind ``tcp``): listen, accept, connect, and newline-framed lines.

A socket has no name of its own, so the scenario gives one (``ctx.tcp_listen("echo", 7777)``);
it appears as ``prim`` in the log. TCP is a byte stream without message boundaries: the
newline at the end of each line is the framing, and ``recv_line`` reads up to it however the
bytes were split into segments. Payloads are logged as text (UTF-8, undecodable bytes
replaced). Every operation that raises logs ``fail`` with the error.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, ClassVar

from sim.history.facts import Operation
from sim.history.lines import Line

from ._base import Display, Kind, Logged, Model, Reading, item_key, limit, turn

__all__ = ["Stream", "TcpListener", "TcpModel", "TcpStream", "tcp_connect", "tcp_listen"]


def _text(data: bytes | bytearray) -> str:
    return data.decode("utf-8", errors="replace")


def _error(exc: BaseException) -> str:
    if not isinstance(exc, Exception):
        # The actor was stopped (SIGTERM) inside the call: it never returned.
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"


# How an operation can fail that says nothing about the peer: this side shut the connection
# down or closed the listener, or the actor was stopped.
_NOT_THEIRS = ("shut down", "closed", "interrupted")
# One receive's most: a line longer than this arrives in several pieces, as over a network.
_CHUNK = 65536


class TcpStream(Logged):
    """A connected TCP socket that sends and receives newline-framed lines."""

    kind = "tcp"

    def __init__(self, name: str, sock: socket.socket, log: Any, clock: Any, peer: str,
                 local: str = "") -> None:  # fmt: skip
        super().__init__(name, sock, log, clock)
        #: The other end's address (``host:port``), and this end's own.
        self.peer = peer
        self.local = local
        #: True once the peer has closed its side (a ``recv`` returned None at EOF).
        self.eof = False
        self._sock = sock
        # Bytes received after the last whole line: TCP delivers segments, not lines.
        self._buffer = bytearray()
        self._shut = False
        self._log = self._log.bind(peer=peer)

    def send_line(self, text: str) -> None:
        """Send ``text`` and a newline: TCP is a byte stream, the newline is the framing."""
        data = text.encode() + b"\n"
        self._log.info("op", op="send", phase="invoke", item=text, bytes=len(data))
        self._turn()
        try:
            self._sock.sendall(data)
            _returned = True  # a stop from here on waits for the line below (see RETURNED)
        except BaseException as exc:
            _returned = True
            self._log.info("op", op="send", phase="fail", error=_error(exc))
            raise
        self._log.info("op", op="send", phase="ok", item=text, bytes=len(data))

    def recv_line(self, timeout: float | None = None) -> str | None:
        """The next line without its newline; None once the peer has closed (``eof``), or
        when ``timeout`` simulated minutes pass without a whole line.

        Bytes that come without a newline are logged as they arrive (a ``partial`` event),
        so that the log shows what was on the wire even if the line never ends.
        """
        self._log.info("op", op="recv", phase="invoke", **limit(timeout))
        grant = self._turn(timeout)
        if grant is not None and grant.do != "go":
            _returned = True
            self._no_line("timeout")
            return None
        deadline = None
        if timeout is not None and grant is None:
            deadline = time.monotonic() + self._clock.seconds(timeout)
        while (end := self._buffer.find(b"\n")) < 0:
            try:
                if deadline is not None:
                    self._sock.settimeout(max(deadline - time.monotonic(), 1e-6))
                chunk = self._sock.recv(_CHUNK)
            except TimeoutError:
                _returned = True
                self._no_line("timeout")
                _returned = False  # the line is queued (the finally below still calls)
                return None
            except BaseException as exc:
                _returned = True
                self._log.info("op", op="recv", phase="fail", error=_error(exc),
                               **self._partial())  # fmt: skip
                _returned = False
                raise
            finally:
                if deadline is not None:
                    self._sock.settimeout(None)
            if not chunk:
                _returned = True
                self.eof = not self._shut
                self._no_line("shut down" if self._shut else "EOF")
                return None
            self._buffer += chunk
            if b"\n" in chunk:
                _returned = True  # a whole line has come: no more receiving
            else:
                self._log.info("partial", bytes=len(self._buffer), partial=_text(self._buffer))
        _returned = True  # a stop from here on waits for the ok line (see RETURNED)
        data = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        text = _text(data[:-1])
        self._log.info("op", op="recv", phase="ok", item=text, bytes=len(data))
        return text

    def _partial(self) -> dict[str, Any]:
        return {"bytes": len(self._buffer), "partial": _text(self._buffer)} if self._buffer else {}

    def _no_line(self, why: str) -> None:
        # What came without a newline, if anything, is on the line as "partial": a peer that
        # ends its lines with something else than a newline shows here.
        if why == "timeout":
            self._log.info("op", op="recv", phase="timeout", **self._partial())
        else:
            self._log.info("op", op="recv", phase="fail", error=why,
                           **(self._partial() or {"bytes": 0}))  # fmt: skip

    def shutdown(self) -> None:
        """End the connection in both directions now, even while another thread of this
        process waits in ``recv_line`` on it (that receive then fails with ``shut down``)."""
        self._log.info("op", op="shutdown", phase="invoke")
        self._turn()
        self._shut = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
            _returned = True
        except OSError as exc:
            _returned = True
            # The peer has already gone (ENOTCONN): there is nothing left to end.
            self._log.info("op", op="shutdown", phase="fail", error=_error(exc))
            return
        self._log.info("op", op="shutdown", phase="ok")

    def close(self) -> None:
        self._log.info("op", op="close", phase="invoke")
        self._turn()
        self._sock.close()
        _returned = True
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
        self._closed = False
        self._closing = threading.Lock()
        self.port: int = sock.getsockname()[1]

    def accept(self) -> TcpStream | None:
        """Wait for the next client and return the connection to it; None once the listener
        has been closed (by another thread: that is how a server stops accepting)."""
        self._log.info("op", op="accept", phase="invoke")
        self._turn()
        try:
            conn, address = self._sock.accept()
            _returned = True  # a stop from here on waits for the line below (see RETURNED)
        except BaseException as exc:
            _returned = True
            if self._closed and isinstance(exc, OSError):
                self._log.info("op", op="accept", phase="fail", error="closed")
                return None
            self._log.info("op", op="accept", phase="fail", error=_error(exc))
            raise
        peer = f"{address[0]}:{address[1]}"
        self._log.info("op", op="accept", phase="ok", peer=peer)
        _returned = False  # the line is queued: a stop strikes where it lands again
        local = conn.getsockname()
        return TcpStream(self.name, conn, self._base, self._clock, peer, f"{local[0]}:{local[1]}")

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop listening; an ``accept`` waiting in another thread returns None. Closing a
        closed listener does nothing (two threads of a server may both end it)."""
        with self._closing:
            if self._closed:
                return
            self._closed = True
        self._log.info("op", op="close", phase="invoke")
        self._turn()
        with contextlib.suppress(OSError):
            # Closing alone does not wake a thread blocked in accept(); a shutdown does.
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        _returned = True
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
        _returned = True
    except OSError as exc:
        _returned = True
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
        _returned = True
    except BaseException as exc:
        _returned = True
        bound.info("op", op="connect", phase="fail", error=_error(exc))
        raise
    sock.settimeout(None)
    address = sock.getsockname()
    local = f"{address[0]}:{address[1]}"
    bound.info("op", op="connect", phase="ok", local=local)
    _returned = False  # the line is queued: a stop strikes where it lands again
    return TcpStream(name, sock, log, clock, peer, local)


@dataclass
class Stream:
    """One side of one connection: what it sent and received, in order, and how it ended
    if it did not end well."""

    actor: str
    peer: str
    sent: list[str] = field(default_factory=list)
    got: list[str] = field(default_factory=list)
    #: What a receive had without a newline when it gave up (EOF, timeout, an error).
    partial: list[str] = field(default_factory=list)
    #: (operation, error) of each operation that failed, or ``("recv", "timeout")``; a
    #: receive at the peer's EOF is not an error (``eof``).
    errors: list[tuple[str, str]] = field(default_factory=list)
    eof: bool = False
    closed: bool = False
    #: This side shut the connection down (``shutdown``).
    shut: bool = False


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
        self._closed: set[str] = set()
        # (client actor, address it connected to) -> that address's port.
        self._dialled: dict[tuple[str, str], int] = {}

    def key(self, line: Line) -> Any:
        # A server thread per connection runs several operations at once, told apart by the
        # peer; an accept learns its peer only when it returns.
        return (line.actor, line.op, None if line.op == "accept" else line.peer)

    def ready(self, op: Operation) -> bool:
        line = op.invoke
        name, actor = line.op, line.actor
        if name == "accept":
            if actor in self._closed:
                return True  # the accept returns None at once
            port = self._listening.get(actor)
            return port is not None and self._connected.get(port, 0) > self._accepts.get(actor, 0)
        if name != "recv":
            return True
        mine = self.streams.get((actor, str(line.peer)))
        if mine is not None and mine.shut:
            return True
        got = len(mine.got) if mine is not None else 0
        other = self._counterpart(actor, str(line.peer))
        if other is None:
            return False
        return len(other.sent) > got or other.closed or other.shut

    def outside(self, op: Operation) -> str | None:
        line = op.invoke
        if line.op == "accept":
            # Anybody may connect to a listening socket: whoever comes next may well be a
            # client from outside the run.
            port = self._listening.get(line.actor)
            return f"a client from anywhere (port {port})"
        peer = line.peer
        if peer is None:
            return None
        dialled = self._dialled.get((line.actor, str(peer)))
        if dialled is not None:
            listening = set(self._listening.values())
            return None if dialled in listening else f"the server {peer}, outside the run"
        if str(peer) in self.local.values():
            return None  # this end accepted a client of the run
        return f"the client {peer}, outside the run"

    def outside_clients(self) -> list[str]:
        """Addresses accepted by the run that no client of the run connected from."""
        own = set(self.local.values())
        return [peer for peers in self.accepted.values() for peer in peers if peer not in own]

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
        line = op.invoke
        if line.op == "send":
            key = item_key(line.item)
            self._sends.setdefault(key, deque()).append(op)
        elif line.op == "connect" and line.peer is not None:
            port = line.get("port")
            if isinstance(port, int):
                self._dialled[(line.actor, str(line.peer))] = port
        elif line.op == "shutdown" and line.peer is not None:
            # In effect from here: a receive waiting on this connection may return.
            self.stream(line.actor, str(line.peer)).shut = True

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
            if line.peer is None:
                return
            mine = self.stream(actor, str(line.peer))
            if name == "recv" and done.get("partial"):
                mine.partial.append(str(done.get("partial")))
            if name == "recv" and done.get("error") == "EOF":
                mine.eof = True
            elif name != "shutdown" and done.get("error") not in _NOT_THEIRS:
                mine.errors.append((name, str(done.get("error", done.phase))))
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
        elif name == "close" and actor in self._listening:
            self._closed.add(actor)
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
