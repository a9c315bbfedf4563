"""What SIGINT and SIGTERM do in sim's own processes: the command line, a run's engine, a sweep.

Both stop what runs as Ctrl-C does: whatever was begun is cleaned up (shared memory released,
a run's manifest marked ``interrupted``) and the command exits 130. Outside an event loop
that is KeyboardInterrupt (:func:`sigterm_as_ctrl_c` makes SIGTERM raise it too); inside one,
the engine and a sweep read both signals from anyio's receiver (:func:`stop_signals`).

asyncio puts a signal back to its default when it lets go of it, and SIGTERM's default kills
the process where it is: :func:`stop_signals` reinstalls the handlers from before it at once,
so that a stop while a run ends or is analysed is still a clean one. And a stop that came just
as its reader was cancelled (the run had ended in that very step) is not lost with the reader:
:attr:`Stops.unread` still holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections import deque
from collections.abc import Iterator
from types import FrameType
from typing import Any

import anyio

__all__ = ["Stops", "sigterm_as_ctrl_c", "stop_signals"]

_STOPS = (signal.SIGINT, signal.SIGTERM)


def _main_thread() -> bool:
    # Handlers can be set, and signals are handled, in the main thread only.
    return threading.current_thread() is threading.main_thread()


def _saved() -> dict[int, Any]:
    return {signum: signal.getsignal(signum) for signum in _STOPS} if _main_thread() else {}


def _restore(handlers: dict[int, Any]) -> None:
    for signum, handler in handlers.items():
        # None: a handler not set from Python, which cannot be put back from Python either.
        if handler is not None:
            signal.signal(signum, handler)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def sigterm_as_ctrl_c() -> Iterator[None]:
    """Within the block, SIGTERM raises KeyboardInterrupt, as SIGINT does (main thread only)."""
    if not _main_thread():
        yield
        return
    saved = _saved()
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        _restore(saved)


class Stops:
    """The SIGINTs and SIGTERMs that came while :func:`stop_signals` was open, read in order by
    ``async for``; the ones nobody read stay in :attr:`unread`."""

    def __init__(self) -> None:
        self._queue: deque[signal.Signals] = deque()
        self._arrived = anyio.Event()

    def _deliver(self, signum: signal.Signals) -> None:
        self._queue.append(signum)
        self._arrived.set()

    @property
    def unread(self) -> list[signal.Signals]:
        """Stops that came but were not read: one a cancelled reader never got to."""
        return list(self._queue)

    def __aiter__(self) -> Stops:
        return self

    async def __anext__(self) -> signal.Signals:
        while not self._queue:
            self._arrived = anyio.Event()
            await self._arrived.wait()
        return self._queue.popleft()


@contextlib.contextmanager
def stop_signals() -> Iterator[Stops]:
    """The stops that come while the block runs (in a running asyncio loop; they are not
    delivered outside the main thread, where no handler can be set), and the handlers from
    before it once it is closed."""
    stops = Stops()
    if not _main_thread():
        yield stops
        return
    saved = _saved()
    loop = asyncio.get_running_loop()
    try:
        for signum in _STOPS:
            loop.add_signal_handler(signum, stops._deliver, signal.Signals(signum))
        yield stops
    finally:
        for signum in _STOPS:
            loop.remove_signal_handler(signum)
        _restore(saved)
