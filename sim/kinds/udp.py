"""UDP sockets (kind ``udp``): each ``sendto`` is one datagram, each ``recvfrom`` returns one.

UDP keeps message boundaries but promises nothing else: a datagram may be lost, or overtaken
by a later one. The model knows every socket of the run by its port (from its ``bind`` line),
so a datagram that arrives from a port no socket of the run has is *foreign*: it came from
outside the run.
"""

from __future__ import annotations

import socket
from collections import Counter, deque
from typing import Any, ClassVar

from sim.history.facts import Operation

from ._base import Display, Kind, Logged, Model, Reading, item_key, turn

__all__ = ["Arrival", "UdpModel", "UdpSocket", "udp"]


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _error(exc: BaseException) -> str:
    if not isinstance(exc, Exception):
        # The actor was stopped (SIGTERM) inside the call: it never returned.
        return "interrupted"
    return f"{type(exc).__name__}: {exc}"


class UdpSocket(Logged):
    """A UDP socket: each ``sendto`` is one datagram, each ``recvfrom`` returns one."""

    kind = "udp"

    def __init__(self, name: str, sock: socket.socket, log: Any, clock: Any) -> None:
        super().__init__(name, sock, log, clock)
        self._sock = sock
        self.port: int = sock.getsockname()[1]

    def sendto(self, text: str, port: int, host: str = "127.0.0.1") -> None:
        data = text.encode()
        self._log.info("op", op="sendto", phase="invoke", item=text, to=port)
        self._turn()
        try:
            self._sock.sendto(data, (host, port))
            _returned = True  # a stop from here on waits for the line below (see RETURNED)
        except BaseException as exc:
            _returned = True
            self._log.info("op", op="sendto", phase="fail", error=_error(exc))
            raise
        self._log.info("op", op="sendto", phase="ok", item=text, to=port)

    def recvfrom(self, timeout: float | None = None) -> tuple[str, int] | None:
        """One datagram as (text, sender port), or None if none came within ``timeout``."""
        if timeout is None:
            self._log.info("op", op="recvfrom", phase="invoke")
        else:
            self._log.info("op", op="recvfrom", phase="invoke", timeout=timeout)
        grant = self._turn(timeout)
        if grant is not None and grant.do != "go":
            _returned = True
            self._log.info("op", op="recvfrom", phase="timeout")
            return None
        wait = None if timeout is None else self._clock.seconds(timeout)
        self._sock.settimeout(wait if grant is None else None)
        try:
            data, address = self._sock.recvfrom(65536)
            _returned = True
        except TimeoutError:
            _returned = True
            self._log.info("op", op="recvfrom", phase="timeout")
            return None
        except BaseException as exc:
            _returned = True
            self._log.info("op", op="recvfrom", phase="fail", error=_error(exc))
            raise
        text = _text(data)
        self._log.info("op", op="recvfrom", phase="ok", item=text, sender=address[1],
                       host=address[0])  # fmt: skip
        return text, address[1]

    def close(self) -> None:
        self._log.info("op", op="close", phase="invoke")
        self._turn()
        self._sock.close()
        _returned = True
        self._log.info("op", op="close", phase="ok")


def udp(name: str, log: Any, clock: Any, host: str, port: int) -> UdpSocket:
    """A UDP socket bound to ``host:port`` (port 0: any free port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bound = log.bind(prim=name, kind="udp")
    bound.info("op", op="bind", phase="invoke", port=port)
    turn(clock)
    try:
        sock.bind((host, port))
        _returned = True
    except OSError as exc:
        _returned = True
        sock.close()
        bound.info("op", op="bind", phase="fail", error=_error(exc))
        raise
    datagram = UdpSocket(name, sock, log, clock)
    bound.info("op", op="bind", phase="ok", port=datagram.port)
    return datagram


class Arrival:
    """One datagram received: the receive, its text, the port it came from, and the send it
    was matched to (None for a foreign one or one that was never sent)."""

    __slots__ = ("op", "port", "sent", "text")

    def __init__(self, op: Operation, text: str, port: Any, sent: Operation | None) -> None:
        self.op = op
        self.text = text
        self.port = port
        self.sent = sent

    @property
    def ts(self) -> float:
        assert self.op.done is not None
        return self.op.done.ts


class UdpModel(Model):
    """Every datagram on one named socket kind: sockets by port, what was sent, what arrived."""

    series: ClassVar[tuple[str, ...]] = ("in flight",)

    def __init__(self, name: str, info: Any, history: Any) -> None:
        super().__init__(name, info, history)
        #: The run's own sockets: port -> actor (from each bind ok).
        self.port_of: dict[int, str] = {}
        #: Datagram text -> times sent (sendto ok).
        self.sent: Counter[str] = Counter()
        self.arrived: list[Arrival] = []
        self._sends: dict[Any, deque[Operation]] = {}
        self._in_flight = 0
        # For the virtual scheduler: datagrams sent to each port, and received by each actor.
        self._bound: dict[str, int] = {}
        self._to: dict[int, int] = {}
        self._got: dict[str, int] = {}

    def ready(self, op: Operation) -> bool:
        if op.invoke.op != "recvfrom":
            return True
        actor = op.invoke.actor
        port = self._bound.get(actor)
        return port is not None and self._to.get(port, 0) > self._got.get(actor, 0)

    def outside(self, op: Operation) -> str | None:
        if op.invoke.op != "recvfrom":
            return None
        # Any program may send a datagram to a bound port: the next may come from outside.
        return f"a datagram from anywhere (port {self._bound.get(op.invoke.actor, '?')})"

    def foreign(self) -> list[Arrival]:
        """Datagrams from a port none of the run's sockets had."""
        return [a for a in self.arrived if a.port not in self.port_of]

    def reading(self) -> Reading:
        self._peak = max(getattr(self, "_peak", 0), self._in_flight)
        return Reading(self._in_flight, max(self._peak, 1),
                       f"{self._in_flight} in transit (peak {self._peak})")  # fmt: skip

    def invoke(self, op: Operation) -> None:
        if op.invoke.op == "sendto":
            self._sends.setdefault(item_key(op.invoke.item), deque()).append(op)

    def complete(self, op: Operation) -> None:
        done = op.done
        assert done is not None
        line = op.invoke
        name = line.op
        if done.phase != "ok":
            if name == "sendto":
                sends = self._sends.get(item_key(line.item))
                if sends is not None and op in sends:
                    sends.remove(op)
            return
        if name == "bind":
            port = done.get("port")
            if isinstance(port, int):
                self.port_of[port] = op.actor
                self._bound[op.actor] = port
        elif name == "sendto":
            self.sent[str(done.item)] += 1
            to = done.get("to")
            if isinstance(to, int):
                self._to[to] = self._to.get(to, 0) + 1
            self._in_flight += 1
            self.set_gauge(**{"in flight": self._in_flight})
        elif name == "recvfrom":
            self._got[op.actor] = self._got.get(op.actor, 0) + 1
            port = done.get("sender")
            sends = self._sends.get(item_key(done.item))
            src = sends.popleft() if sends and port in self.port_of else None
            self.arrived.append(Arrival(op, str(done.item), port, src))
            if src is not None:
                self._in_flight -= 1
                self.set_gauge(**{"in flight": self._in_flight})
                self.history.transfer(src, op, "message")


KINDS = [
    Kind(
        "udp",
        UdpModel,
        blocking=frozenset({"recvfrom"}),
        waiting={"recvfrom": "receiving"},
        flow=("sendto", "recvfrom"),
        display=Display((("in flight", "fill"),),
                        "messages in transit (sent and not yet received)", "items", rank=0),
    )
]  # fmt: skip
