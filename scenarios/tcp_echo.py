"""A TCP echo server and K clients: connection set-up, line framing, round-trip time.

The server listens on ``port`` (the notes use 7777; port 0 lets the OS pick a free one), writes
the port it really got into the shared Value ``port`` and sets the Event ``ready``. It accepts
every connection and serves each one in its own thread, as a server typically is
multi-threaded: one slow client does not hold up the others. Each client connects, sends
``lines`` lines (``pipeline`` of them at a time before reading their echoes) and checks that every
echo comes back. TCP is a byte stream without message boundaries: the newline at the end of each
line is the framing, and ``recv_line`` reads up to it however the bytes were split into segments.

The server tells its own clients by their first line (``client-000 says hello #0``: each client
of the run begins so). It ends once each of them has closed its connection, so the run ends by
itself; a client from outside the run (``nc``, ``socat``, a program of your own) is served and
logged like the others, and its connection is shut down when the server ends.

Outside peers: ``server = "HOST:PORT"`` starts no server, and the clients check the server
there; ``clients = 0`` runs the server alone, for outside clients only, until ``serve``
simulated minutes have passed or the run is stopped.
"""

from __future__ import annotations

import errno
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
    Line,
    Metric,
    Operation,
    PrimSpec,
    RunConfig,
    Scenario,
    TcpListener,
    TcpStream,
    Value,
    Verdict,
    describe,
)
from sim import actors as numbered
from sim.kinds.tcp import Stream, TcpModel

_SOCKET = "echo"  # the name both ends' socket operations carry as ``prim`` in the log

Minutes = Annotated[float, msgspec.Meta(gt=0)]


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """The echo run's parameters; ``think``, ``reply`` and ``serve`` are in simulated minutes."""

    # The server's port. 0 lets the OS choose a free one (what tests use, so that parallel runs
    # never collide); the clients learn the real port from the shared Value ``port``.
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 7777
    # The address the server listens on: "0.0.0.0" lets clients on other machines in too.
    host: str = "127.0.0.1"
    # "HOST:PORT" of a server outside the run: no server actor starts, the clients check it.
    server: str | None = None
    # 0: the server alone, for clients from outside the run.
    clients: Annotated[int, msgspec.Meta(ge=0, le=60)] = 4
    lines: Annotated[int, msgspec.Meta(ge=1)] = 25
    # Lines a client sends before it reads their echoes: 1 is strict request/reply; more puts
    # several lines into the stream at once, and the newline framing still keeps them apart.
    pipeline: Annotated[int, msgspec.Meta(ge=1)] = 1
    # Pause before each batch of lines, so that the clients' messages interleave at the server.
    think: Duration = Duration(dist="exponential", mean=0.8)
    # How long a client waits for each echo before it gives up on the server (none: as long as
    # it takes; only engine.timeout ends the wait).
    reply: Minutes | None = None
    # The server alone (clients = 0) serves this long, then ends (none: until the run is
    # stopped, by Ctrl-C or engine.timeout).
    serve: Minutes | None = None

    def __post_init__(self) -> None:
        if self.server is not None:
            _address(self.server)
            if self.clients == 0:
                raise ValueError("clients = 0 with an outside server: nobody would run")
        if self.serve is not None and self.clients > 0:
            raise ValueError("serve is for the server alone (clients = 0); its own clients end it")


def _address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` as (host, port), or ValueError naming what is wrong."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"server = {text!r}: expected HOST:PORT, e.g. 127.0.0.1:7777")
    return host, int(port)


def server(ctx: Ctx[Params]) -> None:
    """Listen, publish the port, accept every client, echo each one's lines in a thread."""
    p = ctx.params
    try:
        listener = ctx.tcp_listen(_SOCKET, p.port, host=p.host)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        # Most often another server (the student's own) already has the port: say how to test
        # that one instead.
        raise OSError(exc.errno, f"{exc.strerror}: port {p.port} is taken; to check the server "
                      f"there, run only the clients (-s params.server=127.0.0.1:{p.port}), or "
                      "let the OS pick a free port (-s params.port=0)") from None  # fmt: skip
    ctx.prim("port", Value).value = listener.port
    ctx.prim("ready", Event).set()
    served = _Served(ctx, listener, [a.name for a in _clients(p)])
    if p.serve is not None:
        timer = threading.Thread(target=served.stop_after, args=(p.serve,), daemon=True)
        timer.start()
    cut = True
    try:
        # Until the last client of the run has gone (or the serving time is over): then the
        # listener is closed and accept returns None.
        while (conn := listener.accept()) is not None:
            served.start(conn)
        cut = False
    finally:
        # Also when the run is stopped: every thread ends (outside clients' connections are
        # shut down) before the server does, so that its end is its last line.
        served.finish(cut)
    served.raise_errors()
    outside = [h for h in served.handlers if h.own is None]
    ctx.log.info("all_served", connections=len(served.handlers), outside=len(outside))


class _Served:
    """The server's connections, one thread each, and the count of the run's clients gone."""

    def __init__(self, ctx: Ctx[Params], listener: TcpListener, clients: list[str]) -> None:
        self.ctx = ctx
        self.listener = listener
        self.handlers: list[_Handler] = []
        # Each client of the run begins with this line: how the server knows its own.
        self.first = {_line(name, 0): name for name in clients}
        self._gone: set[str] = set()
        self._lock = threading.Lock()

    def start(self, conn: TcpStream) -> None:
        handler = _Handler(self, conn)
        handler.start()
        self.handlers.append(handler)

    def client_gone(self, name: str) -> None:
        with self._lock:
            self._gone.add(name)
            last = len(self._gone) == len(self.first)
        if last:
            self.listener.close()

    def stop_after(self, minutes: float) -> None:
        self.ctx.sleep(minutes)
        self.listener.close()

    def finish(self, cut_all: bool) -> None:
        """Close the listener if still open; shut down the connections of outside clients
        (all of them if ``cut_all``); wait for every thread."""
        if not self.listener.closed:
            self.listener.close()
        for handler in self.handlers:
            if cut_all or handler.own is None:
                handler.cut()
        for handler in self.handlers:
            handler.join()

    def raise_errors(self) -> None:
        for handler in self.handlers:
            if handler.error is not None:
                # A thread's exception would otherwise vanish; re-raised here, it marks the
                # actor as crashed in the log.
                raise handler.error


class _Handler(threading.Thread):
    """One client's connection on the server: echo each line until the client closes."""

    def __init__(self, served: _Served, conn: TcpStream) -> None:
        # A daemon thread: if the engine stops the server, its threads must not keep it alive.
        super().__init__(name=f"echo {conn.peer}", daemon=True)
        self._served = served
        self._conn = conn
        #: The run's client on this connection, None for a client from outside the run.
        self.own: str | None = None
        self.error: BaseException | None = None
        self._cut = threading.Lock()
        self._ended = False

    def run(self) -> None:
        conn, echoed, how = self._conn, 0, "closed"
        try:
            with conn:
                while (line := conn.recv_line()) is not None:
                    if echoed == 0:
                        self.own = self._served.first.get(line)
                    conn.send_line(line)
                    echoed += 1
                if not conn.eof:
                    how = "cut"
                with self._cut:
                    self._ended = True
        except OSError as exc:
            # The client reset the connection (the socket logged it): a finding about that
            # client, not a reason for the server to crash.
            how = f"{type(exc).__name__}: {exc}"
        except BaseException as exc:  # handed to the main thread, which raises it
            self.error = exc
            return
        self._served.ctx.log.info("client_gone", peer=conn.peer, echoed=echoed, how=how)
        if self.own is not None and conn.eof:
            self._served.client_gone(self.own)

    def cut(self) -> None:
        """Shut the connection down, so that the thread's receive returns and it ends."""
        with self._cut:
            if not self._ended and self.is_alive():
                self._conn.shutdown()


def client(ctx: Ctx[Params]) -> None:
    """Connect to the server, send every line and read its echo back.

    A failing socket operation (the server refused, reset or closed the connection) ends the
    client, not the run: the socket logged it, and the checks report it.
    """
    p = ctx.params
    if p.server is not None:
        host, port = _address(p.server)
    else:
        ctx.prim("ready", Event).wait()
        host, port = "127.0.0.1", ctx.prim("port", Value).value
    try:
        with ctx.tcp_connect(_SOCKET, port, host=host) as conn:
            _talk(ctx, conn)
    except OSError:
        pass


def _talk(ctx: Ctx[Params], conn: TcpStream) -> None:
    p = ctx.params
    sent = 0
    while sent < p.lines:
        ctx.sleep(ctx.draw(p.think))
        batch = [_line(ctx.name, i) for i in range(sent, min(sent + p.pipeline, p.lines))]
        for text in batch:
            conn.send_line(text)
        for text in batch:
            echo = conn.recv_line(timeout=p.reply)
            if echo is None:
                return  # the server closed, or no whole line came in time: the log says which
            if echo != text:
                # Not a crash: the log shows it and the check reports it.
                ctx.log.info("bad_echo", sent=text, got=echo)
        sent += len(batch)


def _line(actor: str, i: int) -> str:
    return f"{actor} says hello #{i}"


def _primitives(p: Params) -> dict[str, PrimSpec[Any]]:
    if p.server is not None:
        return {}  # the clients know the server's address from the config
    # The port needs no lock of its own: it is written once, before "ready" is set, and read
    # only after "ready" has been seen, so the Event orders the write before every read.
    return {"port": Value("i", 0, lock=False), "ready": Event()}


def _clients(p: Params) -> list[Actor]:
    return numbered("client", p.clients, client) if p.clients else []


def _actors(p: Params) -> list[Actor]:
    own_server = [] if p.server is not None else [Actor("server", server)]
    return [*own_server, *_clients(p)]


def _uncontrolled(p: Params) -> str | None:
    if p.server is not None:
        return "params.server: the server is outside the run"
    if p.clients == 0:
        return "params.clients: 0 clients, the clients are outside the run"
    return None


def _talk_model(history: History) -> TcpModel | None:
    model = history.model(_SOCKET)
    return model if isinstance(model, TcpModel) else None


def _client_stream(model: TcpModel, client: str) -> Stream | None:
    return next((st for (actor, _), st in model.streams.items() if actor == client), None)


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return f"line {i}: {x!r} became {y!r}"
    return f"{len(a)} lines became {len(b)}"


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'s' if n != 1 else ''}"


def _clients_outside(n: int) -> str:
    return f"{_count(n, 'client')} from outside the run"


def _slash_n(text: str) -> str:
    # The notes' server writes msg + "/n": two characters, not the newline that ends a line.
    if "/n" in text or "\\n" in text:
        return " ('/n' and '\\n' are two characters, not a newline)"
    return ""


class EchoedInOrder(Check):
    """Every line a client sent came back to it identically and in order, through the server.

    Four sequences per connection must be equal: what the client sent, what the server read,
    what the server wrote back, what the client read. TCP guarantees this (no loss, no
    duplication, no reordering in one stream); the check confirms it from the log. With a
    server outside the run only the client's two ends are seen, and a reply that is not the
    line, or bytes without a newline, is quoted as it came; with clients from outside the
    run, the server's two ends of their connections must agree.
    """

    name = "every line echoed identically, in order"
    needs_completion = True
    events = frozenset({"partial"})

    def __init__(self, clients: list[str], lines: int, server: str | None = None,
                 alone: bool = False) -> None:  # fmt: skip
        super().__init__()
        self._clients = clients
        self._lines = lines
        self._server = server
        # With a peer outside the run the run usually ends on its timeout: what the peer did
        # wrong is a finding all the same.
        self.needs_completion = server is None and not alone
        # Per (actor, peer): what came without a newline and no line after it, yet.
        self._partial: dict[tuple[str, str], tuple[int, str]] = {}

    def on_line(self, line: Line) -> None:
        if line.prim == _SOCKET and line.peer is not None:
            partial = line.get("partial")
            self._partial[(line.actor, str(line.peer))] = (int(line.get("bytes", 0)),
                                                           str(partial))  # fmt: skip

    def on_op(self, op: Operation) -> None:
        done = op.done
        if op.name == "recv" and done is not None and done.phase == "ok":
            self._partial.pop((op.actor, str(op.invoke.peer)), None)

    def verdict(self) -> Verdict:
        t = _talk_model(self.history)
        if self._server is not None:
            return self._outside_server(t)
        mine = {c: _client_stream(t, c) for c in self._clients} if t is not None else {}
        outside = t.outside_clients() if t is not None else []
        if t is None or not (any(st is not None and st.sent for st in mine.values())
                             or outside):  # fmt: skip
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
        theirs = 0
        for peer in outside:
            server = t.streams.get(("server", peer)) or Stream("server", peer)
            theirs += len(server.sent)
            if server.sent != server.got[: len(server.sent)]:
                self.problems.add(f"outside client {peer}: server wrote: "
                                  f"{_first_difference(server.got, server.sent)}")  # fmt: skip
        total = sum(len(st.got) for st in mine.values() if st is not None)
        ours = f"{total} lines echoed on {len(self._clients)} connections"
        if not outside:
            return self.result(ours)
        if not self._clients:
            return self.result(f"{_count(theirs, 'line')} echoed to "
                               f"{_clients_outside(len(outside))}")  # fmt: skip
        return self.result(f"{ours}; {theirs} to {_clients_outside(len(outside))}")

    def _outside_server(self, t: TcpModel | None) -> Verdict:
        mine = {c: _client_stream(t, c) for c in self._clients} if t is not None else {}
        if t is None or not any(c in t.local for c in self._clients):
            return self.skip("no client connected")
        found: list[tuple[int, str]] = []
        for c, st in mine.items():
            if st is None or c not in t.local:
                continue  # never connected: the connection check says why
            problem = self._wrong_reply(st)
            if problem is not None:
                found.append((problem[0], f"{c}: {problem[1]}"))
            elif len(st.sent) < self._lines:
                found.append((2, f"{c}: sent {len(st.sent)} of {self._lines} lines"))
        # What the server did send back wrong tells most: it comes first.
        for _, text in sorted(found, key=lambda f: f[0]):
            self.problems.add(text)
        total = sum(len(st.got) for st in mine.values() if st is not None)
        connections = sum(c in t.local for c in self._clients)
        return self.result(f"{_count(total, 'line')} echoed by {self._server} on "
                           f"{_count(connections, 'connection')}")  # fmt: skip

    def _wrong_reply(self, st: Stream) -> tuple[int, str] | None:
        """What went wrong with the outside server's replies on ``st``, in words, ranked:
        0 for what came back wrong, 1 for what never came."""
        for i, (sent, got) in enumerate(zip(st.sent, st.got, strict=False)):
            if sent != got:
                return 0, f"line {i}: sent {sent!r}, the server replied {got!r}{_slash_n(got)}"
        failed = [(op, error) for op, error in st.errors if op != "connect"]
        if len(st.got) >= len(st.sent):
            if failed:
                return 1, f"{failed[0][0]} failed: {failed[0][1]}, after {len(st.got)} echoes"
            return None
        i = len(st.got)
        waiting = f"line {i}: no echo of {st.sent[i]!r}"
        pending = self._partial.get((st.actor, st.peer))
        came = st.partial[-1] if st.partial else pending[1] if pending else ""
        if came:
            return 0, (f"line {i}: {len(came.encode())} bytes came back with no newline: "
                       f"{came!r}{_slash_n(came)}, so the line never ended")  # fmt: skip
        for op, error in failed:
            if error == "timeout":
                return 1, f"{waiting} within params.reply"
            return 1, f"{waiting}: {op} failed: {error}"
        if st.eof:
            return 1, f"{waiting}: the server closed the connection after {i} echoes"
        return 1, f"{waiting} when the run ended"


class EveryConnectionAccepted(Check):
    """Each client's connection (its local address) was accepted by the server."""

    name = "every client's connection accepted"
    needs_completion = True
    events = frozenset()

    def __init__(self, clients: list[str], server: str | None = None) -> None:
        super().__init__()
        self._clients = clients
        self._server = server
        self.needs_completion = server is None and bool(clients)

    def verdict(self) -> Verdict:
        t = _talk_model(self.history)
        if not self._clients:
            outside = len(t.outside_clients()) if t is not None else 0
            return self.skip(f"no client in the run (params.clients = 0); "
                             f"{_count(outside, 'connection')} from outside accepted")  # fmt: skip
        if self._server is not None:
            return self._outside_server(t)
        accepted = set(t.accepted.get("server", [])) if t is not None else set()
        if t is None or (not t.local and not accepted):
            return self.skip("nobody connected")
        for c in self._clients:
            if t.local.get(c) not in accepted:
                self.problems.add(f"{c}: " + (f"{t.local[c]} never accepted" if c in t.local
                                              else "never connected"))  # fmt: skip
        return self.result(f"{len(accepted)} connections accepted")

    def _outside_server(self, t: TcpModel | None) -> Verdict:
        # The server is outside the run: its accept is not in the log, a connect that returned
        # is all there is to see (the kernel accepts into the backlog before the server does).
        connected = 0
        for c in self._clients:
            st = _client_stream(t, c) if t is not None else None
            failed = [e for op, e in st.errors if op == "connect"] if st is not None else []
            if t is not None and c in t.local:
                connected += 1
            elif failed:
                self.problems.add(f"{c}: could not connect to {self._server}: {failed[0]}")
            else:
                self.problems.add(f"{c}: never connected")
        return self.result(f"{_count(connected, 'connection')} accepted by {self._server}")


class EchoAnalysis(Analysis[Params]):
    """Round-trip times and connection counts, from the history of the sockets."""

    prims = frozenset({_SOCKET})

    def __init__(self, config: RunConfig[Params], history: History) -> None:
        super().__init__(config, history)
        p = self.params
        clients = [a.name for a in _clients(p)]
        self._accepted = 0
        # Per client, the send invokes still waiting for their echo (FIFO: TCP keeps order).
        self._in_flight: dict[str, deque[float]] = defaultdict(deque)
        self._rtts: list[float] = []
        self._open = 0
        self._open_max = 0
        self._bytes = 0
        # What the server wrote to each peer (lines, bytes): those to outside clients count.
        self._served: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self._setup: list[float] = []
        self._checks: list[Check] = [
            EveryConnectionAccepted(clients, p.server),
            EchoedInOrder(clients, p.lines, p.server, alone=p.clients == 0),
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
            elif name == "send":
                served = self._served[str(op.invoke.peer)]
                served[0] += 1
                served[1] += done.get("bytes", 0)
            return
        if name == "connect":
            self._setup.append((ts - op.start) * 1000)
        elif name == "recv":
            self._bytes += done.get("bytes", 0)
            if self._in_flight[op.actor]:
                self._rtts.append((ts - self._in_flight[op.actor].popleft()) * 1000)

    def metrics(self) -> dict[str, Any]:
        t = _talk_model(self.history)
        outside = t.outside_clients() if t is not None else []
        theirs = [self._served[peer] for peer in outside if peer in self._served]
        # With a server outside the run, every connection of the run is to an outside peer.
        to_outside = len(t.local) if t is not None and self.params.server is not None else 0
        return {
            "connections": self._accepted,
            "outside": len(outside) + to_outside,
            "open_max": self._open_max,
            "echoed": len(self._rtts) + sum(lines for lines, _ in theirs),
            "bytes_echoed": self._bytes + sum(size for _, size in theirs),
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
        Metric("outside", "connections with a peer outside the run"),
        Metric("open_max", "connections open at once, max"),
        Metric("echoed", "lines echoed"),
        Metric("bytes_echoed", "bytes echoed", "B"),
        *Metric.stats("connect", "connect", "wall ms", show=("mean",)),
        *Metric.stats("rtt", "round trip", "wall ms", show=("mean", "p50", "p95", "max")),
    ),
    uncontrolled=_uncontrolled,
)
