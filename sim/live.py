"""The live view of a run in progress: the same board the player shows, drawn as lines arrive.

Shown only on a terminal. It refreshes from the engine's event loop (rich's own refresh thread
would make the engine multi-threaded, and the engine forks). What it draws comes from the
run's live history, fed by the coordinator with every line it receives: a gauge per primitive
of every kind, a lane per actor (or counts per group), the deadlock explanation as soon as the
engine finds it.
"""

from __future__ import annotations

import time

import anyio
from rich.console import Console, RenderableType
from rich.live import Live

from .coordinator import LiveCounters
from .views import Board
from .views.frame import frame

__all__ = ["LiveView"]

_REFRESH_S = 0.1


class LiveView:
    """Draws a run's live history on ``console`` until cancelled."""

    def __init__(self, console: Console, title: str, speedup: float) -> None:
        self._console = console
        self._speedup = speedup
        self._title = title
        self._rate = 0.0
        self._last = (time.monotonic(), 0)

    async def run(self, counters: LiveCounters, total: int) -> None:
        board = Board()
        counters.history.subscribe(board)
        start = counters.began  # the run's start, not the view's: starting takes a while
        with Live(console=self._console, auto_refresh=False, transient=True) as live:
            while True:
                live.update(self.render(board, counters, time.monotonic() - start), refresh=True)
                await anyio.sleep(_REFRESH_S)

    def render(self, board: Board, counters: LiveCounters, elapsed: float) -> RenderableType:
        now = time.monotonic()
        then, seen = self._last
        if now - then >= 0.5:
            self._rate = (counters.events - seen) / (now - then)
            self._last = (now, counters.events)
        footer = f"{counters.events:,} events · {self._rate:,.0f} events/s"
        return frame(board.snapshot(now=elapsed), title=self._title, speedup=self._speedup,
                     console=self._console, footer=footer)  # fmt: skip
