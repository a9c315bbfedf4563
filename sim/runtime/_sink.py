"""The worker side of the log pipeline: batch rendered lines and send them to the coordinator.

One ``sendall`` per event costs a system call per event; batching turns that into one per
``flush_s``. A small flusher thread bounds how long a line can sit in the batch, so a crash loses
at most a few milliseconds of events. Only the flusher thread ever writes to the socket: a signal
handler in the main thread (SIGTERM) can then never interrupt a write half-way and tear a line.
"""

from __future__ import annotations

import _socket
import _thread
import contextlib
import os
import select
import signal
import socket
import threading
from collections.abc import Callable

__all__ = ["BatchingSink", "EngineWatch", "keep_stop_signals_on_main_thread"]

# Above this many buffered lines the actor waits for the flusher: back-pressure from a slow
# coordinator reaches the actor instead of growing its memory. (Lines, not bytes: the count is
# what a producer can read without a lock; at a typical 100-200 bytes a line, under 1 MiB.)
# Measured (docs/benchmarks.md, section 1): 4,096 costs less CPU per line than 16,384 (the
# batch stays in the caches) and keeps the coordinator's backlog short.
_HIGH_WATER = 1 << 12
# How often an idle flusher checks that the engine is still there.
_WATCH_S = 0.5
# Exit status of an actor that lost its engine (the engine was killed).
ORPHANED_EXIT = 75
# What the engine sends to stop an actor: only the main thread may take them (see below).
# SIGUSR1 is a declared crash fault (sim.faults): it must interrupt the main thread too. The
# engine blocks all three while it forks, so that none reaches an actor before its handlers
# are installed (SIGUSR1's default action would kill it).
STOP_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM, signal.SIGUSR1})


class EngineWatch:
    """Tells whether the run's engine is still there, under every start method.

    The actor's parent is not the engine under forkserver (the fork server, which lives as
    long as any of its children does) nor under fork (the launcher), so a change of
    ``getppid()`` is not enough. A pidfd of the engine becomes readable when the engine exits,
    whoever the parent is. Open it before connecting to the coordinator: the connection can
    only succeed while the engine lives, so the pidfd cannot name a later process that
    reused the engine's pid. Without pidfds (Linux < 5.3), the engine's pid is probed instead.
    """

    def __init__(self, engine_pid: int) -> None:
        self._pid = engine_pid
        self._parent = os.getppid()
        self._poll: select.poll | None = None
        self.fd: int | None = None
        try:
            self.fd = os.pidfd_open(engine_pid)
        except ProcessLookupError:
            os._exit(ORPHANED_EXIT)  # gone before this actor even started
        except (AttributeError, OSError):
            return
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)

    def gone(self) -> bool:
        """The engine has exited (a SIGKILL too)."""
        if self._poll is not None:
            return bool(self._poll.poll(0))
        if os.getppid() != self._parent:
            return True
        try:
            os.kill(self._pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False


def keep_stop_signals_on_main_thread() -> None:
    """Start every thread of this process with the stop signals blocked.

    The kernel hands a process-directed signal to any thread that does not block it. Python
    runs the handler in the main thread anyway, but only a signal delivered to the main thread
    interrupts a blocking call there (a semaphore's ``acquire``); one delivered to a helper
    thread leaves the main thread blocked, and the actor misses its stop. A thread inherits
    the mask of the thread that starts it, so the signals are blocked around ``start`` (never
    inside the new thread, where one could slip in before it blocks them): a queue's feeder
    thread and a scenario's own threads are covered alike. (The flusher is a bare thread,
    started with the mask blocked by BatchingSink itself.)
    """
    start = threading.Thread.start
    if getattr(start, "_sim_masked", False):
        return

    def masked_start(thread: threading.Thread) -> None:
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            start(thread)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    masked_start._sim_masked = True  # type: ignore[attr-defined]
    threading.Thread.start = masked_start  # type: ignore[method-assign,assignment]


class _Flag:
    """A ``threading.Event``'s set, clear and wait, on one bare lock (unlocked: set).

    An Event is a Condition, a lock and a list of waiters, run by Python code: building two of
    them cost every actor's start ~90 µs (mostly pages copied on write), and each wake-up of
    the flusher some ten Python calls. Any thread may release a bare lock."""

    __slots__ = ("_lock",)

    def __init__(self, value: bool = False) -> None:
        self._lock = _thread.allocate_lock()
        if not value:
            self._lock.acquire()

    def set(self) -> None:
        # (Not contextlib.suppress: a producer calls this for a line, a context manager costs
        # two Python calls more.)
        try:  # noqa: SIM105
            self._lock.release()
        except RuntimeError:
            pass  # set already

    def clear(self) -> None:
        self._lock.acquire(False)

    def wait(self, timeout: float) -> bool:
        """True once set (left set), False after ``timeout`` seconds."""
        if not self._lock.acquire(True, timeout):
            return False
        self.set()
        return True


class BatchingSink:
    """The batch of an actor's rendered lines, and the flusher thread that sends it.

    The producer (the actor's final log processor, see sim.runtime.worker) appends a rendered
    line, without its newline (the flusher joins the batch with them), to :attr:`lines`
    itself, then calls :meth:`wake` if :attr:`idle` is set, and :meth:`full`
    when the batch has :attr:`HIGH_WATER` lines. A list append is atomic, so producers (an
    actor's threads) need no lock, and a line costs no Python call of the sink. The flusher
    takes whole prefixes of the list (``del lines[:n]`` leaves what was appended meanwhile).

    It is also a structlog logger (``msg(line)`` queues one line, newline included or not)
    for other producers.
    """

    HIGH_WATER = _HIGH_WATER

    def __init__(
        self,
        sock: _socket.socket,
        flush_s: float,
        engine: EngineWatch,
        after: Callable[[], None] | None = None,
        *,
        masked: bool = False,
    ) -> None:
        self._sock = sock
        self._after = after
        self._flush_s = flush_s
        self._engine = engine
        self.lines: list[bytes] = []
        # Set by the flusher before it sleeps on an empty batch; a producer that sees it wakes
        # the flusher. The producer appends first and then looks; the flusher sets it first and
        # then looks at the batch again: so a line is never left behind a sleeping flusher.
        self.idle = False
        self._pending = _Flag()
        self._room = _Flag(True)
        self._closing = False
        # Held while the flusher runs: close() waits for it by taking it.
        self._running = _thread.allocate_lock()
        self._running.acquire()
        # A bare thread, not a threading.Thread: nothing joins, names or lists the flusher but
        # close(), and a Thread's objects and its start-up handshake (the starter waits until
        # the thread runs) cost every actor ~0.3 ms of its start. The stop signals are blocked
        # around the start (the thread inherits the mask) and not only inside it: a stop signal
        # must never be taken by the flusher, even in its first instant. ``masked``: the
        # caller has blocked them already (an actor starting up).
        if masked:
            _thread.start_new_thread(self._serve, ())
            return
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            _thread.start_new_thread(self._serve, ())
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    def wake(self) -> None:
        """A line was queued while the flusher slept."""
        self.idle = False
        self._pending.set()

    def full(self, give_up: Callable[[], bool] | None = None) -> None:
        """The batch is at the high-water mark: wait until the flusher has taken it, or until
        ``give_up()`` says to stop waiting (a stop request: the line is queued already)."""
        self._room.clear()
        self._pending.set()
        while len(self.lines) >= _HIGH_WATER and not self._room.wait(0.05):
            if give_up is not None and give_up():
                return

    def msg(self, line: bytes) -> None:
        lines = self.lines
        lines.append(line[:-1] if line.endswith(b"\n") else line)
        if self.idle:
            self.wake()
        if self._after is not None:
            self._after()  # the line is queued: a deferred stop may now happen
        if len(lines) >= _HIGH_WATER:
            self.full()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg

    def close(self) -> None:
        """Send everything still buffered, then close the connection."""
        self._closing = True
        self._pending.set()
        with self._running:  # the flusher has sent everything and returned
            pass
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)
        self._sock.close()

    def _serve(self) -> None:
        try:
            self._run()
        finally:
            self._running.release()

    def _run(self) -> None:
        lines = self.lines
        while True:
            if not lines and not self._closing:
                woke = True
                self._pending.clear()
                self.idle = True
                if not lines and not self._closing:
                    woke = self._pending.wait(_WATCH_S)
                self.idle = False
                if not lines and not self._closing:
                    if not woke:
                        self._check_engine()
                    continue
            if not self._closing and len(lines) < _HIGH_WATER:
                # Let a batch gather (this is the latency bound), unless it fills first or
                # the sink closes: full() and close() set _pending, which ends the wait.
                # (Cleared before the batch is looked at again: a full() in between is
                # seen in one or the other.) A plain sleep here held a producer at the high
                # water mark, and an actor's close, until the sleep ended.
                self._pending.clear()
                if not self._closing and len(lines) < _HIGH_WATER:
                    self._pending.wait(self._flush_s)
            n = len(lines)
            batch = lines[:n]
            del lines[:n]  # only the lines taken: producers may have appended more
            if batch:
                batch.append(b"")  # so that the join ends the last line too
                try:
                    self._sock.sendall(b"\n".join(batch))
                except OSError:
                    # The coordinator is gone, so nothing this actor does can be recorded.
                    os._exit(ORPHANED_EXIT)
            self._room.set()
            if self._closing and not lines:
                return
            self._check_engine()

    def _check_engine(self) -> None:
        # When the engine dies (even by SIGKILL) stop at once, blocked main thread or not: do
        # not linger as an orphan holding shared resources (and, under forkserver, keeping
        # the fork server and the resource tracker alive, and with them /dev/shm entries).
        if self._engine.gone():
            os._exit(ORPHANED_EXIT)


class HeldSink:
    """The log sink of a virtual run: lines are held until the actor's next scheduling point,
    which sends them with its request in one write (no flusher thread: nothing runs between
    two turns)."""

    def __init__(self, sock: _socket.socket, after: Callable[[], None] | None = None) -> None:
        self._sock = sock
        self._after = after
        self._buf: list[bytes] = []

    def msg(self, line: bytes) -> None:
        self._buf.append(line)
        if self._after is not None:
            self._after()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg

    def take(self) -> bytes:
        """Everything logged since the last call."""
        data = b"".join(self._buf)
        self._buf.clear()
        return data

    def seal(self) -> None:
        """From now on drop what is logged, as a closed sink would; what is held stays for
        the next :meth:`take` (the actor's last words, under fork: see sim.runtime.worker)."""
        self._buf = _Dropping(self._buf)

    def close(self) -> None:
        data = self.take()
        try:
            if data:
                self._sock.sendall(data)
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._sock.close()


class _Dropping(list[bytes]):
    """A sealed sink's buffer: it keeps what it was made with and takes nothing more."""

    def append(self, line: bytes) -> None:
        pass
