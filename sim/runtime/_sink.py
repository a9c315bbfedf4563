"""The worker side of the log pipeline: batch rendered lines and send them to the coordinator.

One ``sendall`` per event costs a system call per event; batching turns that into one per
``flush_s``. A small flusher thread bounds how long a line can sit in the batch, so a crash loses
at most a few milliseconds of events. Only the flusher thread ever writes to the socket: a signal
handler in the main thread (SIGTERM) can then never interrupt a write half-way and tear a line.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable

__all__ = ["BatchingSink"]

# Above this many buffered bytes the actor waits for the flusher: back-pressure from a slow
# coordinator reaches the actor instead of growing its memory.
_HIGH_WATER = 4 << 20
# How often an idle flusher checks that the engine is still there.
_WATCH_S = 0.5
# Exit status of an actor that lost its engine (the engine was killed).
ORPHANED_EXIT = 75


class BatchingSink:
    """A structlog logger whose ``info(line)`` and friends queue one rendered line."""

    def __init__(
        self,
        sock: socket.socket,
        flush_s: float,
        parent_pid: int,
        after: Callable[[], None] | None = None,
    ) -> None:
        self._sock = sock
        self._after = after
        self._flush_s = flush_s
        self._parent_pid = parent_pid
        self._lock = threading.Lock()
        self._buf: list[bytes] = []
        self._size = 0
        self._pending = threading.Event()
        self._room = threading.Event()
        self._room.set()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="sim-log-flusher", daemon=True)
        self._thread.start()

    def msg(self, line: bytes) -> None:
        with self._lock:
            self._buf.append(line)
            self._size += len(line)
            first = len(self._buf) == 1
            full = self._size >= _HIGH_WATER
        if first:
            self._pending.set()
        if self._after is not None:
            self._after()  # the line is queued: a deferred stop may now happen
        if full:
            self._room.clear()
            self._pending.set()
            self._room.wait()

    debug = info = warning = warn = error = critical = exception = fatal = log = msg

    def close(self) -> None:
        """Send everything still buffered, then close the connection."""
        self._closing = True
        self._pending.set()
        self._thread.join()
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)
        self._sock.close()

    def _run(self) -> None:
        while True:
            if not self._pending.wait(_WATCH_S):
                self._check_parent()
                continue
            self._pending.clear()
            if not self._closing and self._size < _HIGH_WATER:
                time.sleep(self._flush_s)  # let a batch gather; this is the latency bound
            with self._lock:
                batch, self._buf, self._size = self._buf, [], 0
            if batch:
                try:
                    self._sock.sendall(b"".join(batch))
                except OSError:
                    # The coordinator is gone, so nothing this actor does can be recorded.
                    os._exit(ORPHANED_EXIT)
            self._room.set()
            if self._closing and not self._buf:
                return
            self._check_parent()

    def _check_parent(self) -> None:
        # When the engine dies (even by SIGKILL) this process is re-parented: stop, do not
        # linger as an orphan holding shared resources.
        if os.getppid() != self._parent_pid:
            os._exit(ORPHANED_EXIT)


class HeldSink:
    """The log sink of a virtual run: lines are held until the actor's next scheduling point,
    which sends them with its request in one write (no flusher thread: nothing runs between
    two turns)."""

    def __init__(self, sock: socket.socket, after: Callable[[], None] | None = None) -> None:
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

    def close(self) -> None:
        data = self.take()
        try:
            if data:
                self._sock.sendall(data)
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._sock.close()
