"""What runs inside every actor process.

``main`` is the process target. It is a module-level function so that spawn and forkserver can
import it by name; everything it needs arrives in one picklable :class:`Boot`. The logging setup
(structlog → batching sink → coordinator socket) is made here, inside the child, and never
pickled.
"""

from __future__ import annotations

import _socket
import contextlib
import functools
import itertools
import os
import random
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any, ClassVar

import msgspec
import structlog

from sim import kinds
from sim.errors import ScenarioError
from sim.faults import FaultCrash
from sim.kinds import RETURNED
from sim.virtual.gate import Gate, Stopped

from . import _launcher
from ._logger import DELIVERED, ActorLogger
from ._sink import (
    ORPHANED_EXIT,
    STOP_SIGNALS,
    BatchingSink,
    EngineWatch,
    HeldSink,
    keep_stop_signals_on_main_thread,
)
from .clock import Clock
from .ctx import Ctx

__all__ = ["TERMINATED_EXIT", "Boot", "main"]

# Exit status of an actor stopped by the engine (SIGTERM), as a shell would report it.
TERMINATED_EXIT = 143
# How long an actor's end waits for its threads that still log: well inside the engine's 3 s
# between SIGTERM and SIGKILL.
_THREADS_GRACE_S = 1.0


@dataclass(frozen=True)
class Boot:
    """Everything an actor process needs, handed over by the engine at start."""

    actor: str
    index: int
    role: Callable[[Ctx[Any]], None]
    params: Any
    prims: dict[str, tuple[str, Any]]
    address: tuple[str, int] | str
    secret: str
    t0_ns: int
    speedup: float
    seed: int
    flush_s: float
    # A virtual run: the actor runs only in the turns the engine's scheduler gives it.
    virtual: bool = False
    # The engine's pid: the actor exits when it goes, whoever its parent is.
    engine_pid: int = 0


class _Terminated(BaseException):
    """Raised in the main thread by SIGTERM, so that the role unwinds and logs its end."""


class _StopGuard:
    """SIGTERM (and a ``crash`` fault's SIGUSR1), deferred while the main thread logs.

    Between taking a ``seq`` and queueing its line, an exception would lose the line and leave
    a gap that replay reports as a lost line. So the handler only notes the request while a
    line is on its way, and it is raised once the line is queued. A line is on its way while
    the main thread runs one of the functions in :attr:`codes` (the handler looks at the frames
    it interrupted: nothing to pay per line; the function raises a noted request as its last
    step), or between :meth:`begin` and :meth:`end` (a virtual run's processors).

    A completion line is on its way, too, once a logged wrapper's call has returned: a stop
    raised between the call and the line would leave an operation that took effect (a unit
    taken, a connection accepted) looking blocked for ever. A wrapper (a function of
    ``sim.kinds.wrapper_codes``) says so by setting its local :data:`sim.kinds.RETURNED` (the
    frames are looked at here, so it costs the wrapper one store), and clears it once the line
    is logged if it does more; the request is raised once that line is queued, like any
    other. Waiting for a virtual run's turn (a code in :attr:`waits`) is no part of the
    operation: a stop there is raised at once.
    """

    def __init__(self) -> None:
        self._main = threading.get_ident()
        self._logging = False
        self.requested: BaseException | None = None
        self.codes: set[CodeType] = set()
        # Waiting for a virtual turn is no part of an operation.
        self.waits: set[CodeType] = {Gate._wait.__code__}
        # The wrappers that may defer a stop (every registered kind's, a scenario's own among
        # them): found once in a launcher, which its actors inherit, or else when a stop first
        # comes, so that no actor's start pays for it (~0.3 ms; see wrappers).
        self._returning: frozenset[CodeType] | None = None
        self._stopping = False
        self._previous_hook: Callable[[Any], object] = sys.__unraisablehook__

    def rebind(self) -> None:
        """Serve this thread (the actor's main thread) from now on."""
        self._main = threading.get_ident()

    def unraisable(self, unraisable: Any) -> None:
        """``sys.unraisablehook``: a stop raised where Python drops exceptions is noted again.

        A signal handler runs wherever the main thread is, a finalizer called by the garbage
        collector among them (multiprocessing frees its shared-memory blocks in one). Python
        prints an exception raised there and goes on, so the stop would be lost and the actor
        would run until it is killed. Noted again, it is raised with the next line, as a stop
        deferred by a line on its way is.
        """
        exc = unraisable.exc_value
        if isinstance(exc, (_Terminated, FaultCrash)) and threading.get_ident() == self._main:
            self._stopping = False
            if not isinstance(self.requested, _Terminated):
                self.requested = exc
            return
        self._previous_hook(unraisable)

    def install(self) -> None:
        """Become ``sys.unraisablehook``, passing on what is not a stop to the hook before."""
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self.unraisable

    def handler(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping:
            # A repeat: the engine sends SIGTERM again during the grace period, because a
            # signal that lands just before a blocking call (after Python last looked for
            # signals, before the call sleeps) wakes nothing. Stopping is already under way.
            return
        exc: BaseException = (
            _Terminated() if signum == signal.SIGTERM else FaultCrash("crashed by a fault")
        )
        if self._logging or self._inside(frame):
            if not isinstance(self.requested, _Terminated):
                self.requested = exc  # a stop outranks a crash
            return
        self._raise(exc)

    def _inside(self, frame: FrameType | None) -> bool:
        codes, waits, returning = self.codes, self.waits, self.wrappers()
        while frame is not None:
            code = frame.f_code
            if code in codes:
                return True
            if code in waits:
                return False
            if code in returning and frame.f_locals.get(RETURNED) is True:
                return True
            frame = frame.f_back
        return False

    def wrappers(self) -> frozenset[CodeType]:
        """The code of every wrapper that may defer a stop (see :data:`sim.kinds.RETURNED`)."""
        if self._returning is None:
            self._returning = kinds.wrapper_codes()
        return self._returning

    def begin(self) -> None:
        if threading.get_ident() == self._main:
            self._logging = True

    def end(self) -> None:
        if threading.get_ident() == self._main:
            self._logging = False
            self.fire()

    def fire(self) -> None:
        """Raise a stop deferred while a line was on its way (in the main thread only)."""
        if (
            self.requested is not None
            and not self._stopping
            and threading.get_ident() == self._main
        ):
            exc, self.requested = self.requested, None
            self._raise(exc)

    def _raise(self, exc: BaseException) -> None:
        if isinstance(exc, _Terminated):
            self._stopping = True
        raise exc


class _Threads:
    """The actor's other threads that log (a server's thread per client).

    ``actor_end`` must be an actor's last line: its end waits a little for these threads
    (:meth:`join`), and once it is logged (``ended``) whatever one of them still logs is
    dropped, so that no operation shows as begun after the actor ended, or as never returned.
    """

    def __init__(self) -> None:
        self.main = threading.get_ident()
        self.ended = False
        # Held by another thread from its check of ``ended`` until its line has a seq, and by
        # the main thread to set ``ended``: a seq taken after the end's is never logged.
        self.lock = threading.Lock()
        self._seen: dict[int, threading.Thread] = {}

    def end(self) -> None:
        """The actor's end is about to be logged: other threads' lines are dropped from now."""
        with self.lock:
            self.ended = True

    def note(self) -> None:
        """A line is being logged (under :attr:`lock`): drop it if the actor has ended."""
        ident = threading.get_ident()
        if ident != self.main:
            if self.ended:
                raise structlog.DropEvent
            if ident not in self._seen:
                self._seen[ident] = threading.current_thread()

    def join(self, seconds: float) -> None:
        """Wait up to ``seconds`` in all for the threads that logged to finish."""
        deadline = time.monotonic() + seconds
        for thread in list(self._seen.values()):
            if thread is not threading.current_thread():
                thread.join(max(deadline - time.monotonic(), 0.0))


def actor_rng(seed: int, actor: str) -> random.Random:
    """The RNG of ``actor``: the same seed and name give the same draws in every run."""
    return random.Random(f"{seed}/{actor}")


def _name_process(name: str) -> None:
    """Show the actor's name in ps and top (Linux ``comm``, 15 bytes), not the engine's."""
    # os-level calls: a text file's objects (codec, buffers) cost an actor ~0.2 ms, as
    # measured for stdin's.
    try:
        fd = os.open("/proc/self/comm", os.O_WRONLY)
    except OSError:
        return  # not Linux, or not allowed: only cosmetic
    try:
        os.write(fd, name.encode()[:15])
    except OSError:
        pass
    finally:
        os.close(fd)


# The actor's send buffer for its connection to the coordinator (the kernel doubles it). Small
# and fixed rather than autotuned (up to 4 MiB on Linux): lines wait in the actor's sink, not
# in megabytes of socket buffers, so that a coordinator that falls behind slows the actors down
# at once (back-pressure) instead of leaving a backlog to read after they have ended, and the
# live history stays current. 128 KiB rather than 64: the coordinator's reads grow from
# ~128 to ~230 kB (a read's fixed costs, its event-loop turns, halve per line) and a batch
# takes fewer partial sends, each of which waits for the GIL (docs/benchmarks.md, section 1).
_SNDBUF = 1 << 17


def _connect(address: tuple[str, int] | str) -> _socket.socket:
    # The C socket: the sink and the gate need only its methods, and socket.socket's Python
    # layer cost every actor's start ~0.1 ms (its code and objects, copied on write).
    family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
    sock = _socket.socket(family, socket.SOCK_STREAM)
    # (Not contextlib.suppress: three Python calls more, and the pages they write, per actor.)
    try:  # noqa: SIM105
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SNDBUF)
    except OSError:
        pass
    sock.connect(address)
    if family == socket.AF_INET:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


# One encoder for every line of the process (it keeps no state between calls): made at import,
# so that under fork the actors inherit it from the launcher.
_ENCODER = msgspec.json.Encoder(enc_hook=repr)
# The fields the engine stamps on every line.
_CONTRACT = frozenset({"ts", "actor", "pid", "seq"})


def _processors(
    actor: str,
    pid: int,
    t0_ns: int,
    guard: _StopGuard,
    threads: _Threads,
    gate: Gate | None = None,
    sink: BatchingSink | None = None,
) -> list[Any]:
    counter = itertools.count()
    encode = _ENCODER.encode

    if gate is not None:
        # A virtual run: the time and the step are the scheduler's, given with each turn.
        def stamp_virtual(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
            threads.note()  # one task runs at a time: no lock needed
            guard.begin()
            ts, step, seq = gate.now, gate.step, next(counter)
            line = {"ts": ts, "actor": actor, "pid": pid, "seq": seq, "step": step, **event_dict}
            if len(line) != len(event_dict) + 5:
                line.update(ts=ts, actor=actor, pid=pid, seq=seq, step=step)
            return line

        def render_virtual(
            _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
        ) -> bytes:
            return encode(event_dict) + b"\n"

        return [stamp_virtual, render_virtual]

    assert sink is not None
    # seq and the clock in one call into C: no other thread of the actor (a multi-client
    # server logs from several) can run in between, so a later seq never carries an earlier
    # time, and the main thread needs no lock.
    stamps = zip(counter, iter(time.monotonic_ns, None), strict=False)
    lines = sink.lines
    append = lines.append
    high_water = sink.HIGH_WATER
    get_ident = threading.get_ident
    main = threads.main
    lock = threads.lock
    note = threads.note

    def give_up() -> bool:
        return guard.requested is not None

    # The contract's fields as the encoder writes them, around ts's and seq's values: a line is
    # spliced from them and the encoded event dict, byte for byte what encoding the merged dict
    # gives, without making that dict (see stamp_and_queue).
    head = b'{"ts":'
    middle = b',"actor":' + encode(actor) + b',"pid":' + encode(pid) + b',"seq":'
    join = b"".join
    disjoint = _CONTRACT.isdisjoint

    def stamp_and_queue(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
        # The one processor of a wall-clock run: it stamps, renders and queues the line itself
        # (each further processor or sink call would cost a Python call per line). A stop
        # signal that comes while it runs is deferred (see _StopGuard) and raised at its end.
        if get_ident() == main:
            seq, now = next(stamps)
        else:
            with lock:
                note()  # drops the line once the actor has ended
                seq, now = next(stamps)
        ts = (now - t0_ns) / 1e9
        # The contract's fields come first so that a line reads well in a terminal.
        body = encode(event_dict)
        if len(body) > 2 and disjoint(event_dict):
            append(join((head, encode(ts), middle, encode(seq), b",", body[1:])))
        else:
            # No event field, or a field of the contract passed as an event field: it must not
            # overwrite the contract's (the flusher adds the newline).
            line = {"ts": ts, "actor": actor, "pid": pid, "seq": seq, **event_dict}
            line.update(ts=ts, actor=actor, pid=pid, seq=seq)
            append(encode(line))
        if sink.idle:
            sink.wake()
        if len(lines) >= high_water:
            sink.full(give_up)
        # The line is queued: a stop deferred meanwhile happens now. (Nothing after this check
        # lets a signal handler run in this frame: no call, no backward jump.)
        if guard.requested is not None:
            guard.fire()
        return DELIVERED  # ActorLogger then calls no logger method

    guard.codes.add(stamp_and_queue.__code__)
    return [stamp_and_queue]


class _Queued:
    """The structlog logger of a wall-clock run: its one processor has queued the line
    already (and returns ``DELIVERED``, so ActorLogger does not call it); for any other
    wrapper every method is a no-op (a builtin: no Python call)."""

    info = staticmethod(len)
    debug = warning = warn = error = critical = exception = fatal = msg = log = info


def _wrap(name: str, kind: str, raw: Any, log: Any, clock: Clock) -> Any:
    wrap = kinds.get(kind).wrap
    if wrap is None:
        raise ScenarioError(f"primitive {name}: kind {kind!r} has no logged wrapper")
    return wrap(name, raw, log, clock)


class _Prepared:
    """What :func:`prepare` set up in this process (None: nothing yet), and the actor's
    structlog processors and logger, which structlog's configuration refers to."""

    guard: ClassVar[_StopGuard | None] = None
    # The engine's watch, when a launcher opened it (its pidfd is then every actor's copy).
    engine: ClassVar[EngineWatch | None] = None
    processors: ClassVar[list[Any]] = []  # the one list structlog is configured with
    logger: ClassVar[Any] = None


def _actor_logger(*_args: Any) -> Any:
    return _Prepared.logger


def prepare(engine_pid: int | None = None) -> None:
    """Set up what every actor process needs and no two actors differ in: the signal mask and
    handlers, the thread-start mask, structlog's configuration, and (``engine_pid``: in the
    engine's launcher, a child of the engine) the watch on the engine.

    Under fork the launcher calls it once, before it forks the actors, so that they inherit the
    result: in an actor every Python call of its start-up writes to pages it shares with the
    launcher, and each page written is copied (~3 µs a page), so what is done before the fork
    costs the actors nothing. Under forkserver and spawn :func:`main` calls it.
    """
    with contextlib.suppress(ValueError):
        # An inherited event-loop wake-up fd (the engine's, forked) is not ours.
        signal.set_wakeup_fd(-1)
    # The engine blocks the stop signals while it forks, so that a signal cannot reach a
    # child that still runs the engine's handlers; the mask is inherited (across exec too).
    # They stay blocked until the actor has logged its start: a stop that comes while it
    # connects and sets up its log waits until it can be logged as the actor's end. (A
    # launcher keeps them blocked for good: its handlers below are only for its actors.)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    guard = _StopGuard()
    if engine_pid is not None:
        guard.wrappers()  # in the launcher: once, for every actor it forks
    # Ctrl-C reaches the whole process group; the engine alone decides how to stop the run.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, guard.handler)
    guard.install()
    # A declared ``crash`` fault (sim.faults): the role raises where it is, as if it had a bug.
    signal.signal(signal.SIGUSR1, guard.handler)
    # A stop signal taken by a helper thread would leave the main thread blocked in acquire.
    keep_stop_signals_on_main_thread()
    if engine_pid is not None:
        watch = EngineWatch(engine_pid)
        # Opened while the engine is still this process's parent (so alive, its pid not
        # reused): the pidfd names the engine, as an actor's successful connection proves it
        # for its own. Without pidfds the watch compares parents: each actor needs its own.
        if watch.fd is not None and os.getppid() == engine_pid:
            _Prepared.engine = watch
    # structlog's configuration, for scenario code that calls structlog.get_logger(): the
    # processors are filled in, and the logger set, by each actor (see main).
    structlog.configure(
        processors=_Prepared.processors,
        wrapper_class=ActorLogger,
        logger_factory=_actor_logger,
        cache_logger_on_first_use=True,
    )
    _Prepared.guard = guard


def main(boot: Boot) -> None:
    """Process target of every actor: connect, configure logging, run the role, report."""
    if _Prepared.guard is None:
        prepare()
    guard = _Prepared.guard
    assert guard is not None
    # Each actor's own copy (fork copies it): the thread that forked is this one.
    guard.rebind()
    _name_process(boot.actor)
    pid = os.getpid()
    parent = os.getppid()
    # Before connecting (see EngineWatch): the engine is alive if the connection succeeds.
    engine = _Prepared.engine or EngineWatch(boot.engine_pid or parent)
    try:
        sock = _connect(boot.address)
        hello = {"hello": 1, "secret": boot.secret, "actor": boot.actor, "pid": pid}
        sock.sendall(_ENCODER.encode(hello) + b"\n")
    except OSError:
        sys.exit(ORPHANED_EXIT)

    sink: BatchingSink | HeldSink
    gate: Gate | None = None
    logger: Any
    threads = _Threads()
    if boot.virtual:
        sink = logger = HeldSink(sock, after=guard.end)
        gate = Gate(boot.actor, sock, sink.take)
        processors = _processors(boot.actor, pid, boot.t0_ns, guard, threads, gate)
    else:
        sink = BatchingSink(sock, boot.flush_s, engine, masked=True)
        logger = _Queued()
        processors = _processors(boot.actor, pid, boot.t0_ns, guard, threads, sink=sink)
    _Prepared.processors[:] = processors
    _Prepared.logger = logger
    # The bound logger itself, as structlog.get_logger().bind() makes it (not structlog's lazy
    # proxy, which costs a lookup per call).
    log: Any = ActorLogger(logger, processors=_Prepared.processors, context={})
    clock = Clock(boot.speedup, boot.t0_ns, gate)
    prims = {name: (kind, _wrap(name, kind, raw, log, clock))
             for name, (kind, raw) in boot.prims.items()}  # fmt: skip
    ctx: Ctx[Any] = Ctx(
        name=boot.actor,
        index=boot.index,
        params=boot.params,
        prims=prims,
        clock=clock,
        rng=actor_rng(boot.seed, boot.actor),
        log=log,
    )
    code = 0
    end: dict[str, Any] = {"status": "ok"}
    try:
        try:
            if gate is not None:
                gate.patch_threads()
                gate.start()
            log.info("actor_start", role=boot.role.__name__, ppid=parent)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            boot.role(ctx)
        except (_Terminated, Stopped):
            code = TERMINATED_EXIT
            end = {"status": "terminated"}
        except Exception as exc:
            code = 1
            frames = traceback.extract_tb(exc.__traceback__)
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
            end = {"status": "crashed", "error": f"{type(exc).__name__}: {exc}", "where": where}
        # The role is over: a stop request or a crash fault now changes nothing, and must not
        # cut the end.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
        guard.requested = None  # one deferred until a line that never came: too late now
        if gate is None:
            # A virtual run's threads are tasks that the scheduler ends in turn.
            threads.join(_THREADS_GRACE_S)
        threads.end()
        log.info("actor_end", **end)
    except _Terminated:
        # SIGTERM while logging the end: the record above may be missing, the exit code is not.
        code = TERMINATED_EXIT
    except FaultCrash:
        code = 1  # a crash fault that came while the end was being logged (after its line)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if gate is not None:
        gate.end()
    for _, prim in prims.values():
        detach = getattr(prim, "detach", None)
        if detach is not None:
            detach()
    if (
        isinstance(sink, HeldSink)
        and gate is not None
        and _launcher.on_exit(functools.partial(_exit_virtual, gate, sock))
    ):
        # The connection stays open for the last words; what is logged from here on is
        # dropped, as it would be by a closed sink (and is under forkserver and spawn).
        sink.seal()
    else:
        sink.close()
    sys.exit(code)


def _exit_virtual(gate: Gate, sock: _socket.socket, code: int) -> None:
    """A virtual run's actor forked by the launcher, about to exit with ``code``: close every
    descriptor but the engine's connection, then say so on it (sim.virtual.gate.Gate.exit).

    A virtual run lets no other task run until an ended actor's process has exited: its exit
    closes its descriptors, which others can see (a pipe's last writer gone, a socket's peer),
    and must happen at the same step every time. Waiting for the exit itself means waiting for
    the kernel to tear the process down and for the launcher to reap it, about 2.3 ms an actor
    on the 2-core machine of docs/benchmarks.md (most of it unmapping the pages shared with
    the launcher): a sixth of the default car park's virtual run, measured side by side.
    Closed here, the descriptors are closed as the exit would close them, and the scheduler
    goes on at once. Not when a thread that is not one of the run's tasks is still running
    (one started below the threading module): it could still act, or hold a descriptor open in
    a system call; then the engine waits for the exit, as under forkserver and spawn."""
    if not gate.only_tasks_left():
        return
    keep = sock.fileno()
    # The descriptors this process has, from /proc (an os.closerange up to the limit would close
    # each number in turn where the close_range system call is missing).
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd != keep:
            with contextlib.suppress(OSError):  # (the listing's own, closed already)
                os.close(fd)
    gate.exit(code)
