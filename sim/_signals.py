"""What SIGINT and SIGTERM do in sim's own processes: the command line, a run's engine, a sweep.

Both stop what runs as Ctrl-C does: whatever was begun is cleaned up (shared memory released,
a run's manifest marked ``interrupted``) and the command exits 130. Outside an event loop
that is KeyboardInterrupt (:func:`sigterm_as_ctrl_c` makes SIGTERM raise it too); inside one,
the engine and a sweep read both signals from :func:`stop_signals`.

:func:`stop_signals` records a stop in a Python-level handler the moment it comes and, when
the block ends, puts back the handlers from before it at once (SIGTERM's default would kill
the process where it is), so that a stop while a run ends or is analysed is still a clean one.
A stop that came just as its reader was cancelled (the run had ended in that very step) is not
lost with the reader: :attr:`Stops.unread` still holds it.
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

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: deque[signal.Signals] = deque()
        self._arrived = anyio.Event()

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        # A Python-level handler: it runs in the main thread between two bytecodes, whatever
        # the loop is doing, so a stop is recorded the moment it comes (asyncio's own signal
        # handling relays it through its self-pipe, and a stop still in the pipe when the
        # handler was removed was dropped: CI saw explore run on after Ctrl-C). The reader
        # is woken from the loop, where its event may be set.
        self._queue.append(signal.Signals(signum))
        self._loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
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
    before it once it is closed: straight back, with no moment of the default action between
    (SIGTERM's kills)."""
    stops = Stops(asyncio.get_running_loop())
    if not _main_thread():
        yield stops
        return
    saved = _saved()
    try:
        for signum in _STOPS:
            # A stop the process was started to ignore (a background job of a shell without
            # job control ignores SIGINT) stays ignored, as Python leaves it outside a run.
            if saved.get(signum) is not signal.SIG_IGN:
                signal.signal(signum, stops._handler)
        yield stops
    finally:
        _restore(saved)
