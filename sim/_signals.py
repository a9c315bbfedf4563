"""What SIGINT and SIGTERM do in sim's own processes: the command line, a run's engine, a sweep.

Both stop what runs as Ctrl-C does: whatever was begun is cleaned up (shared memory released,
a run's manifest marked ``interrupted``) and the command exits 130. Outside an event loop
that is KeyboardInterrupt (:func:`sigterm_as_ctrl_c` makes SIGTERM raise it too); inside one,
the engine and a sweep read both signals from anyio's receiver (:func:`stop_signals`).

asyncio, under anyio's receiver, puts a signal back to its default when it lets go of it, and
SIGTERM's default kills the process where it is: :func:`stop_signals` reinstalls the handlers
from before it at once, so that a stop while a run ends or is analysed is still a clean one.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import AsyncIterator, Iterator
from types import FrameType
from typing import Any

import anyio

__all__ = ["sigterm_as_ctrl_c", "stop_signals"]

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


@contextlib.contextmanager
def stop_signals() -> Iterator[AsyncIterator[signal.Signals]]:
    """anyio's receiver of SIGINT and SIGTERM (in a running event loop), and the handlers from
    before it once it is closed."""
    saved = _saved()
    try:
        with anyio.open_signal_receiver(*_STOPS) as signals:
            yield signals
    finally:
        _restore(saved)
