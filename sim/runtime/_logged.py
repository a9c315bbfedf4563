"""Wrappers that log every operation on a shared primitive as two ``op`` events.

Jepsen style: ``phase="invoke"`` before the call and ``ok``/``fail``/``timeout`` after it. The
engine wraps each primitive once per actor; a scenario only ever sees these wrappers, so no
operation can go unlogged. Timeouts are given in simulated minutes, like every duration in a
scenario.
"""

from __future__ import annotations

import queue as _queue
import threading
from multiprocessing import shared_memory
from types import TracebackType
from typing import Any

from .clock import Clock

__all__ = [
    "LoggedArray",
    "LoggedBarrier",
    "LoggedCondition",
    "LoggedConnection",
    "LoggedEvent",
    "LoggedLock",
    "LoggedPipe",
    "LoggedQueue",
    "LoggedSharedMemory",
    "LoggedValue",
    "wrap",
]


def _limit(timeout: float | None, block: bool = True) -> dict[str, float]:
    """The ``timeout`` field of an invoke line: present whenever the call cannot block forever
    (deadlock detection counts only invokes without it as blocked)."""
    if not block:
        return {"timeout": 0.0}
    return {} if timeout is None else {"timeout": timeout}


class _Logged:
    kind = "primitive"

    def __init__(self, name: str, raw: Any, log: Any, clock: Clock) -> None:
        self.name = name
        self._raw = raw
        self._clock = clock
        # Binding once keeps the per-operation cost to the two log calls.
        self._log = log.bind(prim=name, kind=self.kind)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


class LoggedLock(_Logged):
    """Semaphore, BoundedSemaphore, Lock and RLock: acquire and release."""

    def __init__(self, name: str, raw: Any, log: Any, clock: Clock, kind: str) -> None:
        self.kind = kind
        super().__init__(name, raw, log, clock)

    def acquire(self, block: bool = True, timeout: float | None = None) -> bool:
        """Take one unit; with ``timeout`` (simulated minutes) give up after that long."""
        log = self._log
        log.info("op", op="acquire", phase="invoke", **_limit(timeout, block))
        if timeout is None:
            got = self._raw.acquire(block)
        else:
            got = self._raw.acquire(block, self._clock.seconds(timeout))
        if got:
            log.info("op", op="acquire", phase="ok")
        else:
            log.info("op", op="acquire", phase="timeout" if block else "fail")
        return bool(got)

    def release(self) -> None:
        """Give one unit back."""
        # "invoke" is logged before the release takes effect: from the log's point of view the
        # holder has gone before anybody else can be woken, so holder counts stay exact.
        self._log.info("op", op="release", phase="invoke")
        try:
            self._raw.release()
        except (ValueError, AssertionError) as exc:
            self._log.info("op", op="release", phase="fail", error=str(exc))
            raise
        self._log.info("op", op="release", phase="ok")

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class LoggedEvent(_Logged):
    """A multiprocessing Event: set, clear, wait."""

    kind = "event"

    def set(self) -> None:
        self._log.info("op", op="set", phase="invoke")
        self._raw.set()
        self._log.info("op", op="set", phase="ok")

    def clear(self) -> None:
        self._log.info("op", op="clear", phase="invoke")
        self._raw.clear()
        self._log.info("op", op="clear", phase="ok")

    def is_set(self) -> bool:
        return bool(self._raw.is_set())

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set; with ``timeout`` (simulated minutes) give up after that long."""
        self._log.info("op", op="wait", phase="invoke", **_limit(timeout))
        seconds = None if timeout is None else self._clock.seconds(timeout)
        flag = bool(self._raw.wait(seconds))
        self._log.info("op", op="wait", phase="ok" if flag else "timeout")
        return flag


class LoggedCondition(LoggedLock):
    """A Condition: its lock (acquire/release, ``with``), wait, wait_for, notify, notify_all.

    ``wait`` releases the lock while it waits: in the log the holder is gone from ``wait``
    invoke until ``wait`` ok/timeout, which is when it holds the lock again.
    """

    def __init__(self, name: str, raw: Any, log: Any, clock: Clock) -> None:
        super().__init__(name, raw, log, clock, "condition")

    def wait(self, timeout: float | None = None) -> bool:
        """Release the lock and block until notified (or ``timeout`` simulated minutes)."""
        seconds = None if timeout is None else self._clock.seconds(timeout)
        if timeout is None:
            self._log.info("op", op="wait", phase="invoke")
        else:
            self._log.info("op", op="wait", phase="invoke", timeout=timeout)
        notified = bool(self._call("wait", self._raw.wait, seconds))
        self._log.info("op", op="wait", phase="ok" if notified else "timeout")
        return notified

    def _call(self, op: str, method: Any, *args: Any) -> Any:
        # multiprocessing raises AssertionError (or RuntimeError) when the lock is not held:
        # close the operation in the log so that it does not look blocked forever.
        try:
            return method(*args)
        except (AssertionError, RuntimeError) as exc:
            self._log.info("op", op=op, phase="fail", error=f"{type(exc).__name__}: {exc}")
            raise

    def wait_for(self, predicate: Any, timeout: float | None = None) -> bool:
        """Wait until ``predicate()`` is true; every wait on the way is logged."""
        deadline = None if timeout is None else self._clock.now() + timeout
        result = predicate()
        while not result:
            remaining = None if deadline is None else deadline - self._clock.now()
            if remaining is not None and remaining <= 0:
                break
            self.wait(remaining)
            result = predicate()
        return bool(result)

    def notify(self, n: int = 1) -> None:
        self._log.info("op", op="notify", phase="invoke", n=n)
        self._call("notify", self._raw.notify, n)
        self._log.info("op", op="notify", phase="ok")

    def notify_all(self) -> None:
        self._log.info("op", op="notify_all", phase="invoke")
        self._call("notify_all", self._raw.notify_all)
        self._log.info("op", op="notify_all", phase="ok")


class LoggedBarrier(_Logged):
    """A Barrier: ``wait`` returns this process's arrival index (0 .. parties-1)."""

    kind = "barrier"

    def wait(self, timeout: float | None = None) -> int:
        self._log.info("op", op="wait", phase="invoke", **_limit(timeout))
        try:
            index = self._raw.wait(None if timeout is None else self._clock.seconds(timeout))
        except threading.BrokenBarrierError:
            self._log.info("op", op="wait", phase="fail", error="BrokenBarrierError")
            raise
        self._log.info("op", op="wait", phase="ok", index=index)
        return int(index)

    def abort(self) -> None:
        self._log.info("op", op="abort", phase="invoke")
        self._raw.abort()
        self._log.info("op", op="abort", phase="ok")

    @property
    def parties(self) -> int:
        return int(self._raw.parties)


class LoggedQueue(_Logged):
    """Queue and JoinableQueue: put and get log the item, so replay can match them up."""

    def __init__(self, name: str, raw: Any, log: Any, clock: Clock, kind: str) -> None:
        self.kind = kind
        super().__init__(name, raw, log, clock)

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> bool:
        """Put ``item``; False (logged ``timeout``/``fail``) if the queue stayed full."""
        self._log.info("op", op="put", phase="invoke", item=item, **_limit(timeout, block))
        seconds = None if timeout is None else self._clock.seconds(timeout)
        try:
            self._raw.put(item, block, seconds)
        except _queue.Full:
            self._log.info("op", op="put", phase="timeout" if block else "fail", item=item)
            return False
        self._log.info("op", op="put", phase="ok", item=item)
        return True

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """The next item; raises ``queue.Empty`` (logged ``timeout``/``fail``) if none came."""
        self._log.info("op", op="get", phase="invoke", **_limit(timeout, block))
        seconds = None if timeout is None else self._clock.seconds(timeout)
        try:
            item = self._raw.get(block, seconds)
        except _queue.Empty:
            self._log.info("op", op="get", phase="timeout" if block else "fail")
            raise
        self._log.info("op", op="get", phase="ok", item=item)
        return item

    def qsize(self) -> int:
        return int(self._raw.qsize())

    def close(self) -> None:
        """No more puts from this process; the feeder thread flushes what is buffered."""
        self._log.info("op", op="close", phase="invoke")
        self._raw.close()
        self._log.info("op", op="close", phase="ok")

    def join_thread(self) -> None:
        """Block until this process's buffered items have reached the pipe (after close)."""
        self._log.info("op", op="join_thread", phase="invoke")
        self._raw.join_thread()
        self._log.info("op", op="join_thread", phase="ok")

    def task_done(self) -> None:
        self._log.info("op", op="task_done", phase="invoke")
        self._raw.task_done()
        self._log.info("op", op="task_done", phase="ok")

    def join(self) -> None:
        """Block until every item put has been marked done (JoinableQueue only)."""
        self._log.info("op", op="join", phase="invoke")
        self._raw.join()
        self._log.info("op", op="join", phase="ok")


class LoggedConnection(_Logged):
    """One end of a Pipe: send, recv (EOFError once the other end is closed), close."""

    kind = "pipe"

    def __init__(self, name: str, raw: Any, log: Any, clock: Clock, end: str) -> None:
        super().__init__(name, raw, log, clock)
        self._log = self._log.bind(end=end)

    def send(self, item: Any) -> None:
        self._log.info("op", op="send", phase="invoke", item=item)
        try:
            self._raw.send(item)
        except OSError as exc:
            self._log.info("op", op="send", phase="fail", error=f"{type(exc).__name__}: {exc}")
            raise
        self._log.info("op", op="send", phase="ok", item=item)

    def recv(self) -> Any:
        self._log.info("op", op="recv", phase="invoke")
        try:
            item = self._raw.recv()
        except EOFError:
            self._log.info("op", op="recv", phase="fail", error="EOFError")
            raise
        self._log.info("op", op="recv", phase="ok", item=item)
        return item

    def poll(self, timeout: float | None = 0.0) -> bool:
        return bool(self._raw.poll(None if timeout is None else self._clock.seconds(timeout)))

    def close(self) -> None:
        self._log.info("op", op="close", phase="invoke")
        self._raw.close()
        self._log.info("op", op="close", phase="ok")


class LoggedPipe:
    """A Pipe's two ends, ``a`` and ``b``. An actor takes one end with :meth:`end`, which
    closes this process's copy of the other, so that EOF reaches the reader once the writer is
    done. For a one-way pipe, ``a`` receives and ``b`` sends (as ``multiprocessing.Pipe``)."""

    def __init__(self, name: str, raw: tuple[Any, Any], log: Any, clock: Clock) -> None:
        self.name = name
        self._raw = raw
        self._log = log
        self._clock = clock

    def end(self, which: str) -> LoggedConnection:
        index = {"a": 0, "b": 1}[which]
        mine, other = self._raw[index], self._raw[1 - index]
        other.close()
        return LoggedConnection(self.name, mine, self._log, self._clock, which)

    def receiver(self) -> LoggedConnection:
        """The reading end of a one-way pipe."""
        return self.end("a")

    def sender(self) -> LoggedConnection:
        """The writing end of a one-way pipe."""
        return self.end("b")


class LoggedValue(_Logged):
    """A shared number: every read and write of ``.value`` is logged with the value.

    ``v.value += 1`` is a read and then a write, two separate operations even on a synchronised
    Value: the log shows any other process's write that falls in between (a lost update).
    """

    kind = "value"

    def __init__(self, name: str, raw: Any, log: Any, clock: Clock) -> None:
        super().__init__(name, raw, log, clock)
        get_lock = getattr(raw, "get_lock", None)
        self._lock = None if get_lock is None else LoggedLock(f"{name}.lock", get_lock(), log,
                                                             clock, "rlock")  # fmt: skip

    @property
    def value(self) -> Any:
        self._log.info("op", op="read", phase="invoke")
        current = self._raw.value
        self._log.info("op", op="read", phase="ok", value=current)
        return current

    @value.setter
    def value(self, new: Any) -> None:
        self._log.info("op", op="write", phase="invoke", value=new)
        self._raw.value = new
        self._log.info("op", op="write", phase="ok", value=new)

    def get_lock(self) -> LoggedLock:
        """The Value's own lock (only for ``lock=True``), logged as ``<name>.lock``."""
        if self._lock is None:
            raise AttributeError(f"{self.name} was made with lock=False and has no lock")
        return self._lock


class LoggedArray(_Logged):
    """A shared array: ``a[i]`` reads and ``a[i] = v`` writes are logged with index and value."""

    kind = "array"

    def __init__(self, name: str, raw: Any, log: Any, clock: Clock) -> None:
        super().__init__(name, raw, log, clock)
        get_lock = getattr(raw, "get_lock", None)
        self._lock = None if get_lock is None else LoggedLock(f"{name}.lock", get_lock(), log,
                                                             clock, "rlock")  # fmt: skip

    def __len__(self) -> int:
        return len(self._raw)

    def __getitem__(self, index: int) -> Any:
        self._log.info("op", op="read", phase="invoke", index=index)
        current = self._raw[index]
        self._log.info("op", op="read", phase="ok", index=index, value=current)
        return current

    def __setitem__(self, index: int, new: Any) -> None:
        self._log.info("op", op="write", phase="invoke", index=index, value=new)
        self._raw[index] = new
        self._log.info("op", op="write", phase="ok", index=index, value=new)

    def get_lock(self) -> LoggedLock:
        if self._lock is None:
            raise AttributeError(f"{self.name} was made with lock=False and has no lock")
        return self._lock


class LoggedSharedMemory(_Logged):
    """A ``multiprocessing.shared_memory`` block seen as 64-bit integer slots."""

    kind = "shared_memory"

    def __init__(self, name: str, raw: Any, log: Any, clock: Clock) -> None:
        super().__init__(name, raw, log, clock)
        # Attaching registers the block with the resource tracker again; that is harmless (the
        # tracker keeps a set of names, and the engine's unlink removes it once), whereas
        # unregistering here would make the tracker fail on the engine's own unregister.
        self._block = shared_memory.SharedMemory(name=raw.name)
        buf = self._block.buf
        assert buf is not None
        self._slots = buf.cast("q")

    def detach(self) -> None:
        """Let go of the block (the views first: a block with live views cannot close)."""
        self._slots.release()
        self._block.close()

    def __len__(self) -> int:
        return len(self._slots)

    def __getitem__(self, index: int) -> int:
        self._log.info("op", op="read", phase="invoke", index=index)
        current = int(self._slots[index])
        self._log.info("op", op="read", phase="ok", index=index, value=current)
        return current

    def __setitem__(self, index: int, new: int) -> None:
        self._log.info("op", op="write", phase="invoke", index=index, value=new)
        self._slots[index] = new
        self._log.info("op", op="write", phase="ok", index=index, value=new)


def wrap(name: str, kind: str, raw: Any, log: Any, clock: Clock) -> Any:
    """The logged wrapper for a raw primitive of ``kind``."""
    if kind in ("semaphore", "bounded_semaphore", "lock", "rlock"):
        return LoggedLock(name, raw, log, clock, kind)
    simple: dict[str, Any] = {
        "event": LoggedEvent,
        "condition": LoggedCondition,
        "barrier": LoggedBarrier,
        "pipe": LoggedPipe,
        "value": LoggedValue,
        "array": LoggedArray,
        "shared_memory": LoggedSharedMemory,
    }
    if kind in ("queue", "joinable_queue"):
        return LoggedQueue(name, raw, log, clock, kind)
    if kind in simple:
        return simple[kind](name, raw, log, clock)
    raise ValueError(f"no logged wrapper for primitive kind {kind!r}")
