"""The coordinator: one asyncio (anyio) server per run that owns the run's events file.

Actors connect, present the run's secret in their first line, then stream newline-delimited JSON
events. Every line is checked (length, JSON, the contract's fields, the actor it claims) before it
is written; a client that breaks the protocol is disconnected, counted and logged, and nothing
it sent after the offending line is kept. Lines flow through a bounded stream into a single
writer task, so a slow disk slows the actors down (TCP back-pressure) instead of losing events
or growing memory. Nothing received is ever unpickled: lines are only ever parsed as JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import operator
import os
import secrets
import select
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Literal, NamedTuple, cast

import anyio
import msgspec
import structlog
from anyio.abc import SocketListener, SocketStream, TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .errors import ProtocolError
from .history import History, Operation
from .history.lines import Line, decode_line
from .history.window import ReorderWindow

if TYPE_CHECKING:
    from .virtual.scheduler import Scheduler

__all__ = ["Coordinator", "LiveCounters", "address_of", "bind", "live_window_s"]

# No event the engine writes comes near this; a longer line is a broken or hostile client.
MAX_LINE = 64 * 1024
_READ_SIZE = 256 * 1024


def live_window_s(flush_ms: float) -> float:
    """How long a wall-clock run's lines are held for the live history (sim.history.window):
    two batches of ``flush_ms`` and 30 ms, 40 ms at the default 5 ms.

    A line reaches the coordinator up to one batch after it was logged, plus whatever the
    machine adds (the engine's event loop busy drawing the live view, the flusher not
    scheduled on a loaded machine). Measured on 2 cores (docs/benchmarks.md, section 9), live
    view on: of 13,436 actors' lines of ten bundled configs the latest came 25 ms after its
    ``ts`` (p99.9 19 ms), of 8,928 with both CPUs kept busy besides 36 ms; the car park at
    flush_ms 1 and 20, 26 ms and 32 ms: the delay is a batch plus up to ~30 ms. The live view
    draws every 100 ms, so a window this long is not seen; a line later still (a machine
    loaded far beyond that) is counted late, never dropped."""
    return (2 * flush_ms + 30.0) / 1000.0


class _Hello(msgspec.Struct):
    hello: int
    secret: str
    actor: str
    pid: int


@dataclass
class LiveCounters:
    """What the transport saw, and the run's live history (what the lines mean so far, read in
    time order, a reordering window behind the transport), for the progress display and the
    stall detector."""

    history: History = field(default_factory=History)
    events: int = 0
    refused: int = 0
    protocol_errors: int = 0
    lines: Counter[str] = field(default_factory=Counter)
    # Actors whose process the engine has seen exit (an actor killed logs no end of its own).
    exited: set[str] = field(default_factory=set)
    # time.monotonic() of the last line any actor sent: a stall is a long silence.
    last_event: float = field(default_factory=time.monotonic)
    # When the run's coordinator was made: the live view's clock counts from here.
    began: float = field(default_factory=time.monotonic)
    # The window between the transport and the history (lines received, not yet seen).
    window: ReorderWindow | None = None

    def gone(self, actor: str) -> None:
        """``actor``'s process has exited."""
        self.exited.add(actor)

    def live(self) -> set[str]:
        """Actors that have started and neither ended nor exited."""
        h = self.history
        return {a for a in h.started if a not in h.ended and a not in self.exited}

    def blocked(self) -> dict[str, Operation]:
        """Per actor, the operation it is blocked in, if it can block forever (no timeout)."""
        found: dict[str, Operation] = {}
        for op in self.history.pending():
            if op.blocking and op.invoke.timeout is None:
                found[op.actor] = op
        return found

    def outside(self) -> dict[str, str]:
        """Per live actor blocked (without timeout) on a socket that a peer outside the run may
        answer: that peer, in words (from the socket's model)."""
        found: dict[str, str] = {}
        live = self.live()
        for op in self.history.pending():
            if op.actor in live and op.blocking and op.invoke.timeout is None:
                model = self.history.model(op.prim)
                peer = model.outside(op) if model is not None else None
                if peer is not None:
                    found.setdefault(op.actor, f"{op.name} on {op.prim}, for {peer}")
        return found

    def stalled(self, stall_s: float) -> bool:
        """Every live actor is blocked in an operation without timeout, and nothing has
        happened for ``stall_s`` seconds: nobody is left who could wake anybody. An actor
        waiting on the outside world (a socket's peer outside the run) is not stuck: only
        that peer decides when it answers, and ``engine.timeout`` ends such a run."""
        live = self.live()
        if not live or time.monotonic() - self.last_event < stall_s:
            return False
        if self.window is not None and self.window.held:
            return False  # the history has not seen the last lines yet (a stall_s that short)
        blocked = self.blocked()
        return all(actor in blocked for actor in live) and not self.outside()

    def waits(self) -> list[dict[str, Any]]:
        """Who waits on what, and who holds it."""
        blocked = self.blocked()
        found = []
        for actor in sorted(self.live()):
            op = blocked.get(actor)
            prim, name = (op.prim, op.name) if op is not None else ("?", "?")
            found.append(
                {"actor": actor, "prim": prim, "op": name, "held_by": self.history.blockers(prim)}
            )
        return found


class _LocalSink:
    """structlog logger for the engine's and the coordinator's own lines."""

    def __init__(self, coordinator: Coordinator) -> None:
        self._coordinator = coordinator

    def msg(self, line: bytes) -> None:
        self._coordinator._put_local(line)

    info = warning = error = msg


class Coordinator:
    """Serve one run: ``async with Coordinator(path, secret=...) as c:`` then hand out
    ``c.address``. Leaving the block waits for nothing: call :meth:`drain` first to let every
    connection finish, then :meth:`settle` before reading the live history's final counts
    (leaving settles it too)."""

    def __init__(
        self,
        events_path: Path,
        *,
        secret: str,
        t0_ns: int,
        transport: Literal["tcp", "unix"] = "tcp",
        max_line: int = MAX_LINE,
        buffer: int = 64,
        hello_timeout: float = 10.0,
        listener: socket.socket | None = None,
        history: History | None = None,
        scheduler: Scheduler | None = None,
        actors: Iterable[str] | None = None,
        on_write_error: Callable[[OSError], None] | None = None,
        reorder_s: float = 0.0,
    ) -> None:
        """``listener``: a socket made by :func:`bind` (this coordinator then owns it), so that
        its address is known before the event loop runs; by default one is bound on entry.
        ``history``: the run's live history, fed every line as it arrives. ``scheduler``: a
        virtual run's scheduler, which the actors' requests go to. ``actors``: the run's actor
        names, the only ones a client may present, each once (None: any name not reserved).
        ``on_write_error``: called once if the events file cannot be written (a full disk);
        the coordinator then reads on, discarding, so that the run can be stopped.
        ``reorder_s``: a wall-clock run's live history sees each line this long after its
        ``ts``, all of them in ``ts`` order (see :func:`live_window_s`); 0: as they arrive.
        The events file is written in arrival order either way."""
        self.events_path = events_path
        self.counters = LiveCounters(history if history is not None else History())
        self.scheduler = scheduler
        # A virtual run's lines come in step order, fed as they come; a wall run's go through
        # the window, and a task releases them when due (see _release).
        self._window = ReorderWindow(
            self.counters.history, reorder_s if scheduler is None else 0.0, self._held_lines
        )
        self.counters.window = self._window
        self._holding = anyio.Event()
        self._release_scope = anyio.CancelScope()
        self._kicked = anyio.Event()
        self._dispatch_scope = anyio.CancelScope()
        self._secret = secret.encode()
        self._t0_ns = t0_ns
        self._transport = transport
        self._max_line = max_line
        self._hello_timeout = hello_timeout
        send, receive = anyio.create_memory_object_stream[bytes](buffer)
        self._send: MemoryObjectSendStream[bytes] = send
        self._receive: MemoryObjectReceiveStream[bytes] = receive
        self._overflow: list[bytes] = []
        self._held: list[bytes] = []
        self._file: BinaryIO | None = None
        self._listener: SocketListener | None = None
        self._tg: TaskGroup | None = None
        self._serve_scope = anyio.CancelScope()
        self._writer_done = anyio.Event()
        self._open_connections = 0
        self._idle = anyio.Event()
        self._idle.set()
        self._actors: set[str] = set()
        # Who may connect (None: anybody with the secret), and who has already.
        self._expected = None if actors is None else frozenset(actors)
        self._seen: set[str] = set()
        # Connections still in their hello, by the cancel scope that cuts them (see drain).
        self._greeting: dict[anyio.CancelScope, SocketStream] = {}
        self._cut: set[anyio.CancelScope] = set()
        #: The first error writing the events file; nothing more is written after it.
        self.write_error: OSError | None = None
        self._on_write_error = on_write_error
        self._socket = listener
        self.address: tuple[str, int] | str = "" if listener is None else address_of(listener)
        self._loggers: dict[str, Any] = {}

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Coordinator:
        self._file = open(self.events_path, "wb", buffering=1 << 20)  # noqa: SIM115
        self._listener = await self._listen()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._writer)
        self._tg.start_soon(self._serve, self._listener)
        if self.scheduler is not None:
            self._tg.start_soon(self._dispatcher)
        elif self._window.hold_s > 0:
            self._tg.start_soon(self._release)
        return self

    async def _serve(self, listener: SocketListener) -> None:
        with self._serve_scope:
            async with anyio.create_task_group() as tg:
                while True:
                    stream = await listener.accept()
                    # Counted before the handler is even scheduled, so that drain() can never
                    # see "idle" while a connection is accepted but not yet handled.
                    self._opened()
                    tg.start_soon(self._handle, stream)

    def _opened(self) -> None:
        self._open_connections += 1
        if self._open_connections == 1:
            self._idle = anyio.Event()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        assert self._listener is not None
        try:
            # Stop accepting and cut what is still connected (by now the engine has reaped every
            # actor or given up on them), then let the writer drain what was received.
            self._serve_scope.cancel()
            self._dispatch_scope.cancel()
            self._release_scope.cancel()
            self._send.close()
            await self._tg.__aexit__(exc_type, exc, tb)
        finally:
            with anyio.CancelScope(shield=True):
                await self._listener.aclose()
            self._flush_remaining()
            self.settle()

    async def drain(self, timeout: float) -> bool:
        """Wait until every connection has closed (True) or ``timeout`` passes (False). Call it
        once every actor has gone.

        A connection still waiting in the listen backlog counts as open: an actor may connect,
        write and exit before the accept loop has had a turn. A connection that has not said
        hello and has nothing more to read is not an actor's (an actor's hello is written
        before anything else it does, so once it has gone its hello is there to read): it is
        cut and counted as refused, and it cannot hold the end of the run up.
        """
        assert self._listener is not None
        raw = self._listener.extra(anyio.abc.SocketAttribute.raw_socket)
        with anyio.move_on_after(timeout):
            while True:
                self._cut_silent_greetings()
                with anyio.move_on_after(0.05):
                    await self._idle.wait()
                if self._idle.is_set() and not select.select([raw], [], [], 0)[0]:
                    return True
                await anyio.sleep(0.005)  # the accept loop takes it on its next turn
        return False

    def _cut_silent_greetings(self) -> None:
        for scope, stream in list(self._greeting.items()):
            if scope in self._cut:
                continue
            try:
                sock = stream.extra(anyio.abc.SocketAttribute.raw_socket)
                pending = bool(select.select([sock], [], [], 0)[0])
            except (OSError, ValueError, anyio.TypedAttributeLookupError):
                pending = False
            if not pending:
                self._cut.add(scope)
                scope.cancel()

    async def _listen(self) -> SocketListener:
        sock = self._socket
        if sock is None:
            sock = bind(self._transport)
            self.address = address_of(sock)
        return await SocketListener.from_socket(sock)

    # -- the live history's window ------------------------------------------------------

    def settle(self) -> None:
        """Hand every line the live history's window holds on to it: call it once every
        actor has gone and :meth:`drain` has returned, before reading the final counts."""
        self._window.flush()

    def _held_lines(self) -> None:
        self._holding.set()

    def _now(self) -> float:
        """The run's clock, in ``ts``'s seconds."""
        return (time.monotonic_ns() - self._t0_ns) / 1e9

    async def _release(self) -> None:
        """Release the window's lines as they come due. Sleeps while it holds nothing, and
        otherwise wakes at most four times per window: a line waits between one and one and a
        quarter windows, and a busy run pays for a few wake-ups per window, not per block."""
        window = self._window
        tick = window.hold_s / 4
        with self._release_scope:
            while True:
                due = window.due()
                if due is None:
                    await self._holding.wait()
                    self._holding = anyio.Event()
                    continue
                await anyio.sleep(max(due - self._now(), tick))
                window.release(self._now())

    # -- a virtual run's turns -----------------------------------------------------------

    def dispatch(self) -> None:
        """Send the next grant, if the scheduler has one (no task is running)."""
        scheduler = self.scheduler
        if scheduler is None:
            return
        while True:
            grant = scheduler.next_grant()
            if grant is None:
                return
            send, data = grant
            try:
                send(data)
                return
            except OSError:
                continue  # that actor has gone: the scheduler has been told, choose again

    def is_connected(self, actor: str) -> bool:
        """``actor`` has a connection open (its lines may still be on their way)."""
        return actor in self._actors

    def kick(self) -> None:
        """Something outside the actors' requests changed (an actor exited, the run is being
        stopped): look for a task that can run."""
        self._kicked.set()

    async def _dispatcher(self) -> None:
        with self._dispatch_scope:
            while True:
                await self._kicked.wait()
                self._kicked = anyio.Event()
                self.dispatch()
                self._write_held()

    # -- the engine's own lines -------------------------------------------------------------

    def logger(self, actor: str) -> Any:
        """A structlog logger whose lines go straight into this run's events file."""
        if actor not in self._loggers:
            counter = itertools.count()
            clock, t0 = time.monotonic_ns, self._t0_ns
            pid = os.getpid()
            encode = msgspec.json.Encoder(enc_hook=repr).encode

            scheduler = self.scheduler

            def stamp(_l: Any, _m: str, ed: Any) -> Any:
                if scheduler is None:
                    ts, seq = (clock() - t0) / 1e9, next(counter)
                    line = {"ts": ts, "actor": actor, "pid": pid, "seq": seq, **ed}
                    if len(line) != len(ed) + 4:
                        line.update(ts=ts, actor=actor, pid=pid, seq=seq)
                    return line
                # A virtual run: the scheduler's time and step.
                ts, step = scheduler.now, scheduler.step
                seq = next(counter)
                line = {"ts": ts, "actor": actor, "pid": pid, "seq": seq, "step": step, **ed}
                if len(line) != len(ed) + 5:
                    line.update(ts=ts, actor=actor, pid=pid, seq=seq, step=step)
                return line

            def render(_l: Any, _m: str, ed: Any) -> bytes:
                return encode(ed) + b"\n"

            self._loggers[actor] = structlog.wrap_logger(
                _LocalSink(self),
                processors=[stamp, render],
                wrapper_class=structlog.make_filtering_bound_logger(0),
            )
            self.counters.lines[actor] += 0
        return self._loggers[actor]

    def _put_local(self, line: bytes) -> None:
        parsed = decode_line(line)
        parsed.raw = line  # its other fields (an exit's target, a deadlock's explanation)
        self.counters.lines[parsed.actor] += 1
        self.counters.events += 1
        if self.scheduler is not None:
            self.counters.history.feed((parsed,))
            self._held.append(line)
            self._write_held()
            return
        self._window.add(parsed.actor, [parsed])
        if self._overflow:
            # Lines already waiting must go first: this actor's lines stay in seq order.
            self._overflow.append(line)
            return
        try:
            self._send.send_nowait(line)
        except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._overflow.append(line)

    # -- writing ----------------------------------------------------------------------------

    def _write_held(self) -> None:
        # A virtual run: one task runs at a time, so there is nothing to overlap and no writer
        # task to hand lines to (that hand-over costs more than the write). A step's lines are
        # held until its grant has gone out, then written while the next task runs, in the
        # order they came; flushed at once, so that even a SIGKILL of the engine leaves every
        # received line in the file.
        if self._held:
            assert self._file is not None
            data = b"".join(self._held)
            self._held.clear()
            # Straight to the descriptor: in a virtual run nothing else writes to the file
            # object, whose buffer is therefore always empty here.
            fd = self._file.fileno()
            try:
                with memoryview(data) as view:
                    while view:
                        view = view[os.write(fd, view) :]
            except OSError as exc:
                self._write_failed(exc)

    async def _writer(self) -> None:
        assert self._file is not None
        file = self._file
        # Not `async with`: the stream must stay open until every received chunk is written.
        async for chunk in self._receive:
            if self.write_error is not None:
                continue  # the file cannot take more: read on, so that no actor blocks
            try:
                file.write(chunk)
                if self._receive.statistics().current_buffer_used == 0:
                    if self._overflow:
                        # Only now: everything sent before the overflow began has been written.
                        file.writelines(self._overflow)
                        self._overflow.clear()
                    # Caught up: hand the bytes to the OS, so that even a SIGKILL of the engine
                    # leaves every received line in the file.
                    file.flush()
            except OSError as exc:
                self._write_failed(exc)

    def _write_failed(self, exc: OSError) -> None:
        """The events file cannot be written (ENOSPC, EFBIG, EIO): say so once, write no more."""
        self._overflow.clear()
        self._held.clear()
        if self.write_error is None:
            self.write_error = exc
            if self._on_write_error is not None:
                self._on_write_error(exc)

    def _flush_remaining(self) -> None:
        assert self._file is not None
        try:
            if self.write_error is None:
                self._write_held()
            while True:
                try:
                    chunk = self._receive.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                    break
                if self.write_error is None:
                    self._file.write(chunk)
            if self.write_error is None:
                self._file.writelines(self._overflow)
                self._file.flush()
        except OSError as exc:
            self._write_failed(exc)
        finally:
            self._receive.close()
            self._overflow.clear()
            try:
                self._file.close()
            except OSError as exc:
                # What is still buffered cannot be written; the descriptor is closed anyway.
                self._write_failed(exc)

    # -- connections --------------------------------------------------------------------------

    async def _handle(self, stream: SocketStream) -> None:
        actor: str | None = None
        try:
            async with stream:
                actor, rest = await self._hello(stream)
                if actor is not None and self.scheduler is not None:
                    await self._pump_virtual(stream, actor, rest)
                elif actor is not None:
                    await self._pump(stream, actor, rest)
                # Shut the connection down, not just this fd: under fork, later actors inherit
                # copies of it, and a plain close would leave the client talking to nobody.
                with contextlib.suppress(OSError):
                    stream.extra(anyio.abc.SocketAttribute.raw_socket).shutdown(socket.SHUT_RDWR)
        finally:
            if actor is not None:
                self._actors.discard(actor)
                if self.scheduler is not None:
                    self.scheduler.gone(actor)
                    self.kick()
            self._open_connections -= 1
            if self._open_connections == 0:
                self._idle.set()

    async def _hello(self, stream: SocketStream) -> tuple[str | None, bytearray]:
        buf = bytearray()
        reason = "closed before presenting the secret"
        with anyio.move_on_after(self._hello_timeout) as scope:
            self._greeting[scope] = stream
            try:
                while b"\n" not in buf and len(buf) <= self._max_line:
                    buf += await stream.receive(_READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                buf.clear()
            finally:
                del self._greeting[scope]
        if scope in self._cut:
            self._cut.discard(scope)
            reason = "no hello by the end of the run"
        elif scope.cancelled_caught:
            reason = f"no hello within {self._hello_timeout:g} s"
        elif b"\n" in buf:
            first, _, rest = bytes(buf).partition(b"\n")
            try:
                hello = msgspec.json.decode(first, type=_Hello)
            except (msgspec.DecodeError, RecursionError):
                reason = "first line is not a valid hello"
            else:
                if not hmac.compare_digest(hello.secret.encode(), self._secret):
                    reason = "wrong secret"
                elif hello.actor in ("engine", "coordinator"):
                    reason = f"actor name {hello.actor!r} is reserved"
                elif self._expected is not None and hello.actor not in self._expected:
                    reason = f"actor name {hello.actor!r} is not an actor of this run"
                elif hello.actor in self._actors:
                    reason = f"actor name {hello.actor!r} already connected"
                elif self._expected is not None and hello.actor in self._seen:
                    # An actor connects once in its life: this is somebody else.
                    reason = f"actor name {hello.actor!r} has connected before"
                else:
                    self._actors.add(hello.actor)
                    self._seen.add(hello.actor)
                    self.counters.lines[hello.actor] += 0
                    if self.scheduler is not None:
                        self.scheduler.connected(hello.actor, self._granter(stream))
                    return hello.actor, bytearray(rest)
        elif buf:
            reason = "first line too long"
        self.counters.refused += 1
        self.logger("coordinator").warning("refused", peer=_peer(stream), reason=reason)
        return None, bytearray()

    async def _pump(self, stream: SocketStream, actor: str, buf: bytearray) -> None:
        quiet = self.counters.history.quiet
        # The live history sees the lines through the window (in ts order); the file gets
        # them as they come, at once.
        hold = self._window.add
        max_line = self._max_line
        # A connection whose blocks the history takes in one go, block after block, has them
        # decoded by a decoder of its own (see _own_decoder): made once it has sent
        # _OWN_DECODER_AFTER lines in a row taken so, used while they are.
        own: Callable[[bytes], Line] | None = None
        taken = 0  # lines taken in one go in a row
        while True:
            block = _whole_lines(buf)
            use_own = taken >= _OWN_DECODER_AFTER
            whole = (
                _decode_whole(block, actor, max_line, own if use_own else None) if block else None
            )
            if whole is not None:
                # The usual block: every line good. The history takes it in one go if nothing
                # in it needs a look of its own, and then nobody reads its lines' raw bytes
                # (the window keeps them, in case it must feed the lines one by one after all).
                lines, raws = whole
                self._count(actor, len(lines))
                if quiet(actor, lines):
                    hold(actor, lines, raws, quiet=True, own=use_own)
                    taken += len(lines)
                    if own is None and taken >= _OWN_DECODER_AFTER:
                        own = _own_decoder(actor, lines[-1].pid)
                else:
                    if use_own:
                        # The history keeps these: they must be plain Lines.
                        lines = list(map(decode_line, raws))
                    taken = 0
                    _keep_raw(lines, raws)
                    hold(actor, lines)
                await self._send.send(block)
            elif block:
                taken = 0
                # A bad line somewhere: line by line, to keep what came before it. (_pump serves
                # wall-clock runs only: a request line there is bad.)
                lines, good, error = self._take(block, actor)
                hold(actor, lines)
                if good:
                    await self._send.send(block[:good] if error else block)
                if error is not None:
                    self._protocol_error(stream, actor, str(error))
                    return
            if len(buf) > max_line:
                self._protocol_error(stream, actor, f"line longer than {max_line} bytes")
                return
            try:
                buf += await stream.receive(_READ_SIZE)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                if buf:
                    self._protocol_error(stream, actor, "connection closed inside a line")
                return

    async def _pump_virtual(self, stream: SocketStream, actor: str, buf: bytearray) -> None:
        """A virtual run's connection: read by a callback of the event loop, not a task.

        One task runs at a time, so each step is: the running actor's lines and request come
        in, the scheduler chooses, the grant goes out. Done in the callback that finds the
        socket readable, that is one turn of the event loop per step, where a stream's
        ``receive`` costs two (the waiting task is woken, then runs) and two changes to the
        loop's poll set (reading is resumed and paused around every receive).

        The callback reads a duplicate of the socket's descriptor, because the stream's
        transport owns the original: the transport stops reading (it reads from the moment
        the connection is accepted) and what it has read already is taken over. Neither can be
        done through anyio's API, so this reaches for the asyncio transport under the stream
        (anyio's asyncio backend is what the engine runs on).
        """
        scheduler = self.scheduler
        assert scheduler is not None
        loop = asyncio.get_running_loop()
        fd = os.dup(stream.extra(anyio.abc.SocketAttribute.raw_socket).fileno())
        closed = anyio.Event()
        failed: list[BaseException] = []

        def readable() -> None:
            try:
                data = os.read(fd, _READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            try:
                if not data:
                    if buf:
                        self._protocol_error(stream, actor, "connection closed inside a line")
                elif self._take_steps(stream, actor, buf, data):
                    return
            except BaseException as exc:  # re-raised in the task below
                failed.append(exc)
            loop.remove_reader(fd)
            closed.set()

        _take_over(stream, buf)
        loop.add_reader(fd, readable)
        try:
            if buf and not self._take_steps(stream, actor, buf, b""):
                return
            await closed.wait()
            if failed:
                raise failed[0]
        finally:
            loop.remove_reader(fd)
            os.close(fd)

    def _take(self, block: bytes, actor: str, requests: list[_Request] | None = None
              ) -> tuple[list[Line], int, _Broken | None]:  # fmt: skip
        """``block``'s lines, checked and counted (see :func:`_parse`): the lines, the bytes
        taken, and the protocol error that stopped the taking, if one did."""
        lines: list[Line] = []
        error: _Broken | None = None
        try:
            good = _parse(block, actor, self._max_line, lines, requests)
        except _Broken as exc:
            good, error = exc.good, exc
        self._count(actor, len(lines))
        return lines, good, error

    def _count(self, actor: str, n: int) -> None:
        counters = self.counters
        counters.events += n
        counters.lines[actor] += n
        counters.last_event = time.monotonic()

    def _take_steps(self, stream: SocketStream, actor: str, buf: bytearray, data: bytes) -> bool:
        """What a virtual run's actor sent: its lines and requests, each request handed to
        the scheduler after the lines its task logged before it (the history must have seen
        them first, and the file gets them before any line logged in answer); then the next
        grant, then the step's lines to the file (written while the next task runs). False
        when the connection is to be closed (a protocol error)."""
        scheduler = self.scheduler
        assert scheduler is not None
        if not buf and data[-1:] == b"\n":
            block = data  # a step's lines and request, whole: nothing to join or keep
        else:
            buf += data
            block = _whole_lines(buf)
        error: _Broken | None = None
        if block:
            requests: list[_Request] = []
            lines, good, error = self._take(block, actor, requests)
            feed = self.counters.history.feed
            # The lines between two requests are the bytes between them in the block.
            done = at = 0
            for request in [*requests, _Request(len(lines), good, good, None)]:
                if request.lines > done:
                    feed(lines[done : request.lines])
                    self._held.append(block[at : request.start])
                done, at = request.lines, request.end
                if request.message is not None:
                    scheduler.request(actor, request.message)
            self.dispatch()
            self._write_held()
        if error is not None:
            self._protocol_error(stream, actor, str(error))
            return False
        if len(buf) > self._max_line:
            self._protocol_error(stream, actor, f"line longer than {self._max_line} bytes")
            return False
        return True

    def _granter(self, stream: SocketStream) -> Callable[[bytes], None]:
        """How a virtual run's grants go to one actor: straight to the socket."""
        # The event loop hands out a wrapper of the socket without send(); write(2) on its
        # file descriptor is the same system call.
        fd = stream.extra(anyio.abc.SocketAttribute.raw_socket).fileno()
        tg = self._tg

        def send(data: bytes) -> None:
            # A grant is a few bytes to an actor that waits for it and sends nothing else
            # until it has read it, so the socket's buffer is empty and one write takes it
            # all. Only what did not fit goes through the stream (nothing else is ever
            # written to it); an OSError says the actor has gone.
            try:
                sent = os.write(fd, data)
            except BlockingIOError:
                sent = 0
            if sent < len(data) and tg is not None:
                tg.start_soon(stream.send, data[sent:])

        return send

    def _protocol_error(self, stream: SocketStream, actor: str, reason: str) -> None:
        self.counters.protocol_errors += 1
        self.logger("coordinator").warning(
            "protocol_error", peer=_peer(stream), client=actor, reason=reason
        )


class _Broken(ProtocolError):
    """A line that breaks the protocol, and how many bytes before it were good."""

    def __init__(self, reason: str, good: int) -> None:
        super().__init__(reason)
        self.good = good


class _Request(NamedTuple):
    """A virtual run's request line in a block: how many log lines came before it, where its
    line starts and ends (the byte after its newline), and what it asks (None: not a request,
    the end of the block's lines)."""

    lines: int
    start: int
    end: int
    message: dict[str, Any] | None


def _whole_lines(buf: bytearray) -> bytes:
    """Take the complete lines at the front of ``buf`` out of it (b"" if there is none)."""
    cut = buf.rfind(b"\n")
    if cut < 0:
        return b""
    # One copy, through a view: a slice of the bytearray would be a second one, into fresh
    # memory the size of a read (measured: 59 µs against 4 µs for 190 kB).
    with memoryview(buf) as view:
        block = bytes(view[: cut + 1])
    del buf[: cut + 1]
    return block


def _parse(
    block: bytes,
    actor: str,
    max_line: int,
    into: list[Line],
    requests: list[_Request] | None = None,
) -> int:
    """Decode ``block``'s lines one by one (each checked: length, JSON, the contract, the
    actor) into ``into``; returns the bytes taken, or raises ProtocolError at the first bad
    line, saying how much before it was good. A line that starts with ``!`` is a virtual run's
    request, not a log line: it goes to ``requests`` (where ``requests`` is given).

    A wall-clock run's good block is checked whole by :func:`_decode_whole` first; this is
    for the rest: a block with a bad line, and a virtual run's steps (a few lines and a
    request, which line by line takes sooner)."""
    good = 0
    decode = decode_line
    for raw in block.split(b"\n")[:-1]:
        if len(raw) > max_line:
            raise _Broken(f"line longer than {max_line} bytes", good)
        if raw[:1] == b"!" and requests is not None:
            try:
                message = _decode_request(raw[1:])
            except (msgspec.DecodeError, RecursionError) as exc:
                raise _Broken(f"not a valid request: {exc}", good) from None
            requests.append(_Request(len(into), good, good + len(raw) + 1, message))
            good += len(raw) + 1
            continue
        try:
            line = decode(raw)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise _Broken(f"not a valid event line: {exc}", good) from None
        if line.actor != actor:
            raise _Broken(f"line claims actor {line.actor!r}", good)
        line.raw = raw  # its other fields, on demand (without the newline: nothing needs it)
        into.append(line)
        good += len(raw) + 1
    return good


_decode_request = msgspec.json.Decoder(dict[str, Any]).decode
_ACTOR = operator.attrgetter("actor")


def _decode_whole(
    block: bytes, actor: str, max_line: int, own: Callable[[bytes], Line] | None = None
) -> tuple[list[Line], list[bytes]] | None:
    """``block``'s lines and their bytes, if every one is a good event line of ``actor``; else
    None. The checks are those of the loop in :func:`_parse` with the same decoder, but each
    is made for the whole block by one call into C (about 0.06 µs a line less: a block is
    thousands of lines, nearly always good). The lines' ``raw`` is not set (see _keep_raw).

    ``own``: ``actor``'s decoder (:func:`_own_decoder`), which checks the actor itself; the
    lines are then of its struct, which nothing may keep. None also when it was refused a
    line that ``decode_line`` would take (another ``pid``): the caller goes line by line."""
    raws = block.split(b"\n")
    if raws.pop():
        return None  # not whole lines
    if not _short_lines(block, max_line) and max(map(len, raws), default=0) > max_line:
        return None
    try:
        lines = list(map(own or decode_line, raws))
    except (msgspec.DecodeError, RecursionError):
        return None  # a request of a virtual run, or a bad line
    if own is None and set(map(_ACTOR, lines)) != {actor}:
        return None
    return lines, raws


# Lines taken in one go in a row after which a connection gets a decoder of its own: ~0.2 ms
# to make, paid by a few heavy loggers, not by the thousands of actors of a large run that log
# a few lines each.
_OWN_DECODER_AFTER = 1 << 14


def _own_decoder(actor: str, pid: int) -> Callable[[bytes], Line]:
    """A decoder of ``actor``'s lines that checks what ``decode_line`` checks and makes only
    what a block taken in one go is read for.

    Its struct has the fields of ``Line`` that have a type to check (the contract's, ``step``,
    the reader's own), so it refuses every line ``decode_line`` refuses; with ``actor`` (and
    ``pid``, when a line has one) the only value its field may take, a line of another actor
    fails to decode too, so the decode is also the actor check. Line's payload fields (typed
    ``Any``, never refused) are left out: each one a struct has costs its decode, and a
    block taken whole is read for its times, ``seq`` and events alone (bench/flood.py's
    lines, a block of 4,096 decoded over and over: 0.22 µs a line as a ``Line``, 0.23 with
    the two fields pinned, 0.16 as this). Its lines are
    no ``Line``: only blocks that the history takes in one go, which keeps none of their
    lines, may be decoded with it (the reorder window decodes them again, should it have to
    feed them one by one)."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for info in msgspec.structs.fields(Line):
        if info.type is Any:
            continue
        kind = {"actor": Literal[actor], "pid": Literal[pid]}.get(info.name, info.type)
        if info.required:
            fields.append((info.name, kind))
        else:
            fields.append((info.name, kind, msgspec.field(default=info.default,
                                                          name=info.encode_name)))  # fmt: skip
    own = msgspec.defstruct("OwnLine", fields, gc=False, kw_only=True, module=Line.__module__)
    return cast("Callable[[bytes], Line]", msgspec.json.Decoder(own).decode)


def _short_lines(block: bytes, max_line: int) -> bool:
    """True if no line of ``block`` (whole lines) can be longer than ``max_line`` bytes, found
    with a few searches rather than a length per line (~0.02 µs a line): every stretch of
    ``max_line // 2`` bytes holds a newline, so two newlines in a row are less than
    ``max_line`` bytes apart. False says nothing: the lines must then be measured."""
    step = max(max_line // 2, 1)
    find = block.find
    return all(find(b"\n", at, at + step) >= 0 for at in range(0, len(block), step))


def _keep_raw(lines: list[Line], raws: list[bytes]) -> None:
    for line, raw in zip(lines, raws, strict=True):
        line.raw = raw  # its other fields, on demand (without the newline: nothing needs it)


def bind(transport: Literal["tcp", "unix"]) -> socket.socket:
    """A listening socket for the actors of one run (non-blocking)."""
    # The socket is made here rather than by anyio's helpers: those resolve the host name on
    # a worker thread, and the engine must stay single-threaded to fork safely.
    if transport == "unix":
        # Linux's abstract namespace: a Unix socket with no file, which the kernel removes
        # with its last descriptor, so even a SIGKILL of the engine leaves nothing behind.
        # It has no file permissions to guard it; the per-run secret does that, as for TCP.
        path = f"\0sim-{os.getpid()}-{secrets.token_hex(8)}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
    else:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
    sock.listen(min(4096, socket.SOMAXCONN * 32))
    sock.setblocking(False)
    return sock


def address_of(sock: socket.socket) -> tuple[str, int] | str:
    name = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        return name.decode() if isinstance(name, bytes) else name
    return tuple(name[:2])


def _take_over(stream: SocketStream, buf: bytearray) -> None:
    """Stop ``stream``'s transport from reading, and move what it has read into ``buf``."""
    transport: asyncio.Transport | None = getattr(stream, "_transport", None)
    if transport is None:
        # A Unix socket's stream has no transport: it reads the raw socket only inside
        # receive(), which is not running, so nothing has been read ahead.
        return
    protocol: Any = stream._protocol  # type: ignore[attr-defined]
    transport.pause_reading()
    queue = protocol.read_queue
    while queue:
        buf += queue.popleft()
    protocol.read_event.clear()


def _peer(stream: SocketStream) -> str:
    try:
        address = stream.extra(anyio.abc.SocketAttribute.remote_address)
    except (anyio.TypedAttributeLookupError, OSError):
        return "?"
    return address if isinstance(address, str) else f"{address[0]}:{address[1]}"
