"""An actor's side of the virtual clock: every scheduling point waits here for its turn.

Under ``clock.mode = "virtual"`` an actor (and every thread it starts) runs only when the
scheduler in the engine lets it. At each scheduling point (an operation on a primitive or a
socket, a sleep, its start and end, a thread's start and join) the actor sends what it logged
since its last turn together with a request, in one write, and blocks until the grant for this
task comes back: the simulated time, the step, and what to do (``go``, ``timeout``, ``stop``).
A request is one line that starts with ``!`` (never a log line, which is a JSON object).

Only one task of the whole run runs at a time, so the lines of one actor need no lock of their
own and their ``ts`` and ``step`` are the grant's.
"""

from __future__ import annotations

import _socket
import contextlib
import os
import threading
from collections.abc import Callable
from typing import Any

import msgspec

from .cpu import leave, pin

__all__ = ["Gate", "Grant", "Stopped"]

_decode = msgspec.json.Decoder(dict[str, Any]).decode
_encode = msgspec.json.Encoder().encode


class Stopped(BaseException):
    """Raised in a task that the scheduler stops (the run is being stopped): it unwinds."""


class Grant:
    """What the scheduler said: ``do`` (``go``, ``timeout``), the time and the step, and what
    it decided for the operation (a barrier's ``index``, the waiters a ``notify`` ``woke``)."""

    __slots__ = ("do", "extra", "step", "ts")

    def __init__(self, data: dict[str, Any]) -> None:
        self.do: str = data.get("do", "go")
        self.ts: float = float(data.get("ts", 0.0))
        self.step: int = int(data.get("step", 0))
        self.extra = data


class Gate:
    """The scheduling points of one actor process.

    ``sock`` is the actor's connection to the coordinator; ``take_lines`` returns what the
    actor logged since the last request (the sink's buffer). The main thread is task 0; a
    thread the scenario starts gets the next number, and its task name is ``actor/number``.
    """

    def __init__(self, actor: str, sock: _socket.socket, take_lines: Callable[[], bytes]) -> None:
        self.actor = actor
        #: The simulated time of the current turn (seconds of the log's ``ts``), and its step.
        self.now = 0.0
        self.step = 0
        self._sock = sock
        self._take = take_lines
        # What has come of the next grants (a grant is one line; read with recv, not through
        # a buffered file over the socket, whose layers cost more than the system call).
        self._inbox = b""
        self._reader_busy = False
        self._arrived = threading.Condition()
        self._stash: dict[int, Grant] = {}
        self._tasks: dict[int, int] = {threading.get_ident(): 0}
        self._next_task = 1
        self._task_of: dict[threading.Thread, int] = {}
        # The run's CPU, once this process is pinned to it, and the CPUs it had before.
        self._pinned: tuple[int, set[int]] | None = None

    # -- the points --------------------------------------------------------------------------

    def start(self) -> None:
        """The actor has connected: wait for its first turn."""
        self._point("start")

    def turn(self, timeout: float | None = None, **fields: Any) -> Grant:
        """An operation was just logged (its invoke): wait until the scheduler lets it
        proceed, or says it timed out (``timeout`` in seconds of ``ts``; 0: do not wait)."""
        if timeout is not None:
            fields["timeout"] = timeout
        return self._point("op", **fields)

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of simulated time pass for this task."""
        self._point("sleep", seconds=max(seconds, 0.0))

    def end(self) -> None:
        """This task is done: send what it logged; it never waits again."""
        task = self.task()
        line = b"!" + _encode({"req": "end", "task": task}) + b"\n"
        self._send(self._take() + line)

    def only_tasks_left(self) -> bool:
        """Every thread of the process but this one is a task of the run (waiting for a turn
        that will not come): nothing else can act any more."""
        tasks = sum(thread.is_alive() for thread in self._task_of)
        return len(os.listdir("/proc/self/task")) == 1 + tasks

    def exit(self, code: int) -> None:
        """The actor's process exits with ``code`` now and has closed every descriptor but
        this connection (see sim.runtime.worker): tell the scheduler (after what was held
        when the sink was sealed), which takes it for the exit, and shut the connection
        down (a process the actor forked may hold a copy); then move off the run's CPU, so
        that the kernel's teardown of the process runs beside the next steps, not in their
        way (after the telling: waking another CPU takes a while)."""
        with contextlib.suppress(OSError):
            self._sock.sendall(self._take() + b"!" + _encode({"req": "exit", "code": code}) + b"\n")
            self._sock.shutdown(_socket.SHUT_WR)
        if self._pinned is not None:
            leave(*self._pinned)

    def task(self) -> int:
        return self._tasks.get(threading.get_ident(), 0)

    def _point(self, req: str, **fields: Any) -> Grant:
        task = self.task()
        line = b"!" + _encode({"req": req, "task": task, **fields}) + b"\n"
        self._send(self._take() + line)
        return self._wait(task)

    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError:
            os._exit(_ORPHANED)  # the engine is gone: nothing this actor does can be recorded

    def _wait(self, task: int) -> Grant:
        """Block until the grant for ``task`` has come. Whichever of the actor's waiting
        threads is free reads the next grant from the connection and hands it on."""
        if self._next_task == 1:
            # No thread was ever started: every grant is this one's, no hand-on needed.
            return self._begin(self._read())
        while True:
            with self._arrived:
                while task not in self._stash and self._reader_busy:
                    self._arrived.wait()
                grant = self._stash.pop(task, None)
                if grant is not None:
                    return self._begin(grant)
                self._reader_busy = True
            got: Grant | None = None
            try:
                got = self._read()
            finally:
                with self._arrived:
                    self._reader_busy = False
                    if got is not None:
                        self._stash[int(got.extra.get("task", 0))] = got
                    self._arrived.notify_all()

    def _read(self) -> Grant:
        # Kept in self._inbox at every turn: a signal's handler may raise out of recv (a
        # crash fault) and nothing that has come may be lost.
        while (cut := self._inbox.find(b"\n")) < 0:
            data = self._sock.recv(_READ_SIZE)
            if not data:
                os._exit(_ORPHANED)  # the engine closed the connection: it is gone
            self._inbox += data
        raw, self._inbox = self._inbox[:cut], self._inbox[cut + 1 :]
        return Grant(_decode(raw))

    def _begin(self, grant: Grant) -> Grant:
        self.now = grant.ts
        self.step = grant.step
        cpu = grant.extra.get("cpu")
        if isinstance(cpu, int):
            # The grant of the start: the run has begun, on one CPU (sim.virtual.cpu).
            allowed = os.sched_getaffinity(0)
            if pin(cpu):
                self._pinned = (cpu, allowed)
        if grant.do == "stop":
            raise Stopped
        return grant

    # -- threads -----------------------------------------------------------------------------

    def patch_threads(self) -> None:
        """Make every thread the scenario starts a task of its own: its start and its join are
        scheduling points, and it runs only in its turns."""
        gate = self
        start, join = threading.Thread.start, threading.Thread.join

        def gated_start(thread: threading.Thread) -> None:
            task = gate._next_task
            gate._next_task += 1
            run = thread.run

            def run_gated() -> None:
                gate._tasks[threading.get_ident()] = task
                try:
                    gate._wait(task)  # the spawn request made this task ready to begin
                    run()
                except Stopped:
                    pass
                finally:
                    gate.end()

            thread.run = run_gated  # type: ignore[method-assign]
            gate._task_of[thread] = task
            gate._point("spawn", child=task)
            start(thread)

        def gated_join(thread: threading.Thread, timeout: float | None = None) -> None:
            task = gate._task_of.get(thread)
            if task is not None:
                gate._point("join", child=task)  # granted once that task has ended
            join(thread, timeout)

        threading.Thread.start = gated_start  # type: ignore[method-assign,assignment]
        threading.Thread.join = gated_join  # type: ignore[method-assign,assignment]


_READ_SIZE = 4096
# Exit status of an actor that lost its engine (as sim.runtime._sink.ORPHANED_EXIT).
_ORPHANED = 75
