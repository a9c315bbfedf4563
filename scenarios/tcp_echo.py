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
from itertools import pairwise
from typing import Annotated, Any

import msgspec

from sim import (
    Actor,
    Analysis,
    Check,
    Ctx,
    Duration,
    Event,
    History,
    Metric,
    Operation,
    PrimSpec,
    RunConfig,
    Scenario,
    TcpStream,
    Value,
    Verdict,
    describe,
)
from sim import actors as numbered
from sim.kinds.tcp import Stream, TcpModel

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
    ctx.prim("port", Value).value = listener.port
    ctx.prim("ready", Event).set()
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

    def __init__(self, ctx: Ctx[Params], conn: TcpStream) -> None:
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
    ctx.prim("ready", Event).wait()
    port = ctx.prim("port", Value).value
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


def _primitives(p: Params) -> dict[str, PrimSpec[Any]]:
    # The port needs no lock of its own: it is written once, before "ready" is set, and read
    # only after "ready" has been seen, so the Event orders the write before every read.
    return {"port": Value("i", 0, lock=False), "ready": Event()}


def _actors(p: Params) -> list[Actor]:
    return [Actor("server", server), *numbered("client", p.clients, client)]


def _talk(history: History) -> TcpModel | None:
    model = history.model(_SOCKET)
    return model if isinstance(model, TcpModel) else None


def _client_stream(model: TcpModel, client: str) -> Stream | None:
    return next((st for (actor, _), st in model.streams.items() if actor == client), None)


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
    events = frozenset()

    def __init__(self, clients: list[str], lines: int) -> None:
        super().__init__()
        self._clients = clients
        self._lines = lines

    def verdict(self) -> Verdict:
        t = _talk(self.history)
        mine = {c: _client_stream(t, c) for c in self._clients} if t is not None else {}
        if t is None or not any(st is not None and st.sent for st in mine.values()):
            return self.skip("no line was sent")
        for c in self._clients:
            client = mine[c] or Stream(c, "?")
            peer = t.local.get(c, "?")
            server = t.streams.get(("server", peer)) or Stream("server", peer)
            hops = [
                ("sent", client.sent),
                ("server read", server.got),
                ("server wrote", server.sent),
                ("read back", client.got),
            ]
            if len(client.sent) != self._lines:
                self.problems.add(f"{c}: sent {len(client.sent)} of {self._lines} lines")
                continue
            for (_, before), (where, after) in pairwise(hops):
                if before != after:
                    self.problems.add(f"{c}: {where}: {_first_difference(before, after)}")
                    break
        total = sum(len(st.got) for st in mine.values() if st is not None)
        return self.result(f"{total} lines echoed on {len(self._clients)} connections")


class EveryConnectionAccepted(Check):
    """Each client's connection (its local address) was accepted by the server."""

    name = "every client's connection accepted"
    needs_completion = True
    events = frozenset()

    def __init__(self, clients: list[str]) -> None:
        super().__init__()
        self._clients = clients

    def verdict(self) -> Verdict:
        t = _talk(self.history)
        accepted = set(t.accepted.get("server", [])) if t is not None else set()
        if t is None or (not t.local and not accepted):
            return self.skip("nobody connected")
        for c in self._clients:
            if t.local.get(c) not in accepted:
                self.problems.add(f"{c}: " + (f"{t.local[c]} never accepted" if c in t.local
                                              else "never connected"))  # fmt: skip
        return self.result(f"{len(accepted)} connections accepted")


class EchoAnalysis(Analysis[Params]):
    """Round-trip times and connection counts, from the history of the sockets."""

    prims = frozenset({_SOCKET})

    def __init__(self, config: RunConfig[Params], history: History) -> None:
        super().__init__(config, history)
        clients = [a.name for a in _actors(self.params) if a.name != "server"]
        self._accepted = 0
        # Per client, the send invokes still waiting for their echo (FIFO: TCP keeps order).
        self._in_flight: dict[str, deque[float]] = defaultdict(deque)
        self._rtts: list[float] = []
        self._open = 0
        self._open_max = 0
        self._bytes = 0
        self._setup: list[float] = []
        self._checks: list[Check] = [
            EveryConnectionAccepted(clients),
            EchoedInOrder(clients, self.params.lines),
        ]

    def on_invoke(self, op: Operation) -> None:
        if op.actor != "server" and op.name == "send":
            self._in_flight[op.actor].append(op.start)

    def on_op(self, op: Operation) -> None:
        done = op.done
        if done is None or done.phase != "ok":
            return
        name, ts = op.name, done.ts
        if op.actor == "server":
            if name == "accept":
                self._accepted += 1
                self._open += 1
                self._open_max = max(self._open_max, self._open)
            elif name == "close" and op.invoke.peer is not None:
                self._open -= 1  # a connection; the listener's close has no peer
            return
        if name == "connect":
            self._setup.append((ts - op.start) * 1000)
        elif name == "recv":
            self._bytes += done.get("bytes", 0)
            if self._in_flight[op.actor]:
                self._rtts.append((ts - self._in_flight[op.actor].popleft()) * 1000)

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
        *Metric.stats("connect", "connect", "wall ms", show=("mean",)),
        *Metric.stats("rtt", "round trip", "wall ms", show=("mean", "p50", "p95", "max")),
    ),
)
