"""Wrappers that log every operation on a shared primitive as two ``op`` events.

Jepsen style: ``phase="invoke"`` before the call and ``ok``/``fail``/``timeout`` after it. The
engine wraps each primitive once per actor; a scenario only ever sees these wrappers, so no
operation can go unlogged. Timeouts are given in simulated minutes, like every duration in a
scenario.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from .clock import Clock

__all__ = ["LoggedEvent", "LoggedLock", "wrap"]


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
        if timeout is None:
            log.info("op", op="acquire", phase="invoke")
            got = self._raw.acquire(block)
        else:
            log.info("op", op="acquire", phase="invoke", timeout=timeout)
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
        self._log.info("op", op="wait", phase="invoke")
        seconds = None if timeout is None else self._clock.seconds(timeout)
        flag = bool(self._raw.wait(seconds))
        self._log.info("op", op="wait", phase="ok" if flag else "timeout")
        return flag


def wrap(name: str, kind: str, raw: Any, log: Any, clock: Clock) -> Any:
    """The logged wrapper for a raw primitive of ``kind``."""
    if kind in ("semaphore", "bounded_semaphore", "lock", "rlock"):
        return LoggedLock(name, raw, log, clock, kind)
    if kind == "event":
        return LoggedEvent(name, raw, log, clock)
    raise ValueError(f"no logged wrapper for primitive kind {kind!r}")
