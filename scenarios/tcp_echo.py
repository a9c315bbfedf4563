"""A TCP echo server and K clients: connection set-up, line framing, round-trip time.

The server listens on ``port`` (the notes use 7777; port 0 lets the OS pick a free one), writes
the port it really got into the shared Value ``port`` and sets the Event ``ready``. It accepts
``clients`` connections and serves each one in its own thread, as a server typically is
multi-threaded: one slow client does not hold up the others. Each client connects, sends
``lines`` lines (``pipeline`` of them at a time before reading their echoes) and checks that every
echo comes back. TCP is a byte stream without message boundaries: the newline at the end of each
line is the framing, and ``recv_line`` reads up to it however the bytes were split into segments.

The server ends once every client has closed its connection, so the run ends by itself.
"""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Mapping
from itertools import pairwise
from typing import TYPE_CHECKING, Annotated, Any

import msgspec

from sim import Actor, Analysis, Check, Ctx, Duration, Event, Metric, RunConfig, Scenario
from sim import actors as numbered
from sim.checks import Verdict
from sim.primitives import PrimSpec, Value
from sim.stats import describe

if TYPE_CHECKING:
    from sim.runtime._sockets import LoggedStream

_SOCKET = "echo"  # the name both ends' socket operations carry as ``prim`` in the log


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The echo run's parameters; ``think`` is in simulated minutes."""

    # The server's port. 0 lets the OS choose a free one (what tests use, so that parallel runs
    # never collide); the clients learn the real port from the shared Value ``port``.
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 7777
    clients: Annotated[int, msgspec.Meta(ge=1, le=60)] = 4
    lines: Annotated[int, msgspec.Meta(ge=1)] = 25
    # Lines a client sends before it reads their echoes: 1 is strict request/reply; more puts
    # several lines into the stream at once, and the newline framing still keeps them apart.
    pipeline: Annotated[int, msgspec.Meta(ge=1)] = 1
    # Pause before each batch of lines, so that the clients' messages interleave at the server.
    think: Duration = Duration(dist="exponential", mean=0.8)


def server(ctx: Ctx[Params]) -> None:
    """Listen, publish the port, accept every client, echo each one's lines in a thread."""
    p = ctx.params
    listener = ctx.tcp_listen(_SOCKET, p.port)
    ctx.prim("port").value = listener.port
    ctx.prim("ready").set()
    handlers: list[_Handler] = []
    # The server knows how many clients the run has: it accepts exactly that many connections
    # and stops when all of them are closed, so the run ends without a shutdown message.
    for _ in range(p.clients):
        handler = _Handler(ctx, listener.accept())
        handler.start()
        handlers.append(handler)
    listener.close()
    for handler in handlers:
        handler.join()
    for handler in handlers:
        if handler.error is not None:
            # A thread's exception would otherwise vanish; re-raised here, it marks the actor
            # as crashed in the log.
            raise handler.error
    ctx.log.info("all_served", connections=len(handlers))


class _Handler(threading.Thread):
    """One client's connection on the server: echo each line until the client closes."""

    def __init__(self, ctx: Ctx[Params], conn: LoggedStream) -> None:
        # A daemon thread: if the engine stops the server, its threads must not keep it alive.
        super().__init__(name=f"echo {conn.peer}", daemon=True)
        self._ctx = ctx
        self._conn = conn
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self._conn as conn:
                echoed = 0
                while (line := conn.recv_line()) is not None:
                    conn.send_line(line)
                    echoed += 1
                self._ctx.log.info("client_gone", peer=conn.peer, echoed=echoed)
        except BaseException as exc:  # handed to the main thread, which raises it
            self.error = exc


def client(ctx: Ctx[Params]) -> None:
    """Wait for the server, connect, send every line and read its echo back."""
    p = ctx.params
    ctx.prim("ready").wait()
    port = ctx.prim("port").value
    with ctx.tcp_connect(_SOCKET, port) as conn:
        sent = 0
        while sent < p.lines:
            ctx.sleep(ctx.draw(p.think))
            batch = [_line(ctx.name, i) for i in range(sent, min(sent + p.pipeline, p.lines))]
            for text in batch:
                conn.send_line(text)
            for text in batch:
                echo = conn.recv_line()
                if echo != text:
                    # Not a crash: the log shows it and the check reports it.
                    ctx.log.info("bad_echo", sent=text, got=echo)
            sent += len(batch)


def _line(actor: str, i: int) -> str:
    return f"{actor} says hello #{i}"


def _primitives(p: Params) -> dict[str, PrimSpec]:
    # The port needs no lock of its own: it is written once, before "ready" is set, and read
    # only after "ready" has been seen, so the Event orders the write before every read.
    return {"port": Value("i", 0, lock=False), "ready": Event()}


def _actors(p: Params) -> list[Actor]:
    return [Actor("server", server), *numbered("client", p.clients, client)]


class _Conversations:
    """Who said what on which connection, read from the ``op`` events on the socket."""

    def __init__(self) -> None:
        # Client actor -> its local address (from connect ok), the server's peer name for it.
        self.local: dict[str, str] = {}
        self.accepted: set[str] = set()
        # Keyed by client actor (client side) or by peer address (server side).
        self.client_sent: dict[str, list[str]] = defaultdict(list)
        self.client_got: dict[str, list[str]] = defaultdict(list)
        self.server_got: dict[str, list[str]] = defaultdict(list)
        self.server_sent: dict[str, list[str]] = defaultdict(list)

    def feed(self, event: Mapping[str, Any]) -> None:
        if event.get("event") != "op" or event.get("kind") != "tcp" or event.get("phase") != "ok":
            return
        actor, op = event["actor"], event.get("op")
        if actor == "server":
            peer = event.get("peer", "?")
            if op == "accept":
                self.accepted.add(peer)
            elif op == "recv":
                self.server_got[peer].append(event["item"])
            elif op == "send":
                self.server_sent[peer].append(event["item"])
        elif op == "connect":
            self.local[actor] = event["local"]
        elif op == "send":
            self.client_sent[actor].append(event["item"])
        elif op == "recv":
            self.client_got[actor].append(event["item"])


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"line {i}: {x!r} became {y!r}"
    return f"{len(a)} lines became {len(b)}"


class EchoedInOrder(Check):
    """Every line a client sent came back to it identically and in order, through the server.

    Four sequences per connection must be equal: what the client sent, what the server read,
    what the server wrote back, what the client read. TCP guarantees this (no loss, no
    duplication, no reordering in one stream); the check confirms it from the log.
    """

    name = "every line echoed identically, in order"
    needs_completion = True
    prims = frozenset({_SOCKET})

    def __init__(self, clients: list[str], lines: int) -> None:
        self._clients = clients
        self._lines = lines
        self._talk = _Conversations()

    def feed(self, event: Mapping[str, Any]) -> None:
        self._talk.feed(event)

    def verdict(self) -> Verdict:
        t = self._talk
        if not any(t.client_sent.values()):
            return Verdict(self.name, "skip", "no line was sent")
        wrong = []
        for c in self._clients:
            peer = t.local.get(c, "?")
            hops = [
                ("sent", t.client_sent[c]),
                ("server read", t.server_got[peer]),
                ("server wrote", t.server_sent[peer]),
                ("read back", t.client_got[c]),
            ]
            if len(hops[0][1]) != self._lines:
                wrong.append(f"{c}: sent {len(hops[0][1])} of {self._lines} lines")
                continue
            for (_, before), (where, after) in pairwise(hops):
                if before != after:
                    wrong.append(f"{c}: {where}: {_first_difference(before, after)}")
                    break
        total = sum(len(v) for v in t.client_got.values())
        return self._result(wrong[:3], len(wrong), f"{total} lines echoed on "
                            f"{len(self._clients)} connections")  # fmt: skip


class EveryConnectionAccepted(Check):
    """Each client's connection (its local address) was accepted by the server."""

    name = "every client's connection accepted"
    needs_completion = True
    prims = frozenset({_SOCKET})

    def __init__(self, clients: list[str]) -> None:
        self._clients = clients
        self._talk = _Conversations()

    def feed(self, event: Mapping[str, Any]) -> None:
        self._talk.feed(event)

    def verdict(self) -> Verdict:
        t = self._talk
        if not t.local and not t.accepted:
            return Verdict(self.name, "skip", "nobody connected")
        missing = [
            f"{c}: " + (f"{t.local[c]} never accepted" if c in t.local else "never connected")
            for c in self._clients
            if t.local.get(c) not in t.accepted
        ]
        return self._result(missing[:3], len(missing), f"{len(t.accepted)} connections accepted")


class EchoAnalysis(Analysis):
    """Round-trip times and connection counts, from the ``op`` events on the sockets."""

    def __init__(self, config: RunConfig) -> None:
        p: Params = config.params
        clients = [a.name for a in _actors(p) if a.name != "server"]
        self._accepted = 0
        # Per client, the send invokes still waiting for their echo (FIFO: TCP keeps order).
        self._in_flight: dict[str, deque[tuple[str, float]]] = defaultdict(deque)
        self._rtts: list[float] = []
        self._open = 0
        self._open_max = 0
        self._bytes = 0
        self._setup: list[float] = []
        self._connecting: dict[str, float] = {}
        self._checks: list[Check] = [
            EveryConnectionAccepted(clients),
            EchoedInOrder(clients, p.lines),
        ]

    def feed(self, event: Mapping[str, Any]) -> None:
        if event.get("event") != "op" or event.get("kind") != "tcp":
            return
        actor, op, phase, ts = event["actor"], event.get("op"), event.get("phase"), event["ts"]
        if actor == "server":
            if op == "accept" and phase == "ok":
                self._accepted += 1
                self._open += 1
                self._open_max = max(self._open_max, self._open)
            elif op == "close" and phase == "ok" and "peer" in event:
                self._open -= 1  # a connection; the listener's close has no peer
            return
        if op == "connect":
            if phase == "invoke":
                self._connecting[actor] = ts
            elif phase == "ok":
                self._setup.append((ts - self._connecting.pop(actor, ts)) * 1000)
        elif op == "send" and phase == "invoke":
            self._in_flight[actor].append((event["item"], ts))
        elif op == "recv" and phase == "ok":
            self._bytes += event.get("bytes", 0)
            if self._in_flight[actor]:
                _, sent = self._in_flight[actor].popleft()
                self._rtts.append((ts - sent) * 1000)

    def metrics(self) -> dict[str, Any]:
        return {
            "connections": self._accepted,
            "open_max": self._open_max,
            "echoed": len(self._rtts),
            "bytes_echoed": self._bytes,
            **describe(self._setup, "connect"),
            **describe(self._rtts, "rtt"),
        }

    def checks(self) -> list[Check]:
        return list(self._checks)


scenario = Scenario(
    name="tcp_echo",
    description="TCP echo server (a thread per client) and K clients: set-up, framing, RTT",
    params=Params,
    primitives=_primitives,
    actors=_actors,
    analysis=EchoAnalysis,
    metrics=(
        Metric("connections", "connections accepted"),
        Metric("open_max", "connections open at once, max"),
        Metric("echoed", "lines echoed"),
        Metric("bytes_echoed", "bytes echoed", "B"),
        Metric("connect_mean", "connect, mean", "wall ms"),
        Metric("rtt_mean", "round trip, mean", "wall ms"),
        Metric("rtt_p50", "round trip, p50", "wall ms"),
        Metric("rtt_p95", "round trip, p95", "wall ms"),
        Metric("rtt_max", "round trip, max", "wall ms"),
    ),
)
