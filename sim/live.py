"""The live view of a run in progress: the same board the player shows, drawn as lines arrive.

Shown only on a terminal. It refreshes from the engine's event loop (rich's own refresh thread
would make the engine multi-threaded, and the engine forks). What it draws comes from the
run's live history, fed by the coordinator with every line it receives, in time order (through
its reordering window, sim.history.window, a few tens of milliseconds behind): a gauge per
primitive of every kind, a lane per actor (or counts per group), the deadlock explanation as
soon as the engine finds it.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
from rich.console import Console, RenderableType
from rich.live import Live

from .coordinator import LiveCounters
from .views import Board
from .views.frame import frame
from .views.watch import Watch

if TYPE_CHECKING:
    from .config import RunConfig

__all__ = ["LiveView"]

_REFRESH_S = 0.1


class LiveView:
    """Draws a run's live history on ``console`` until cancelled."""

    def __init__(self, console: Console, title: str, speedup: float,
                 config: RunConfig[Any] | None = None) -> None:  # fmt: skip
        self._config = config
        self._watch: Watch | None = None
        self._console = console
        self._speedup = speedup
        self._title = title
        self._rate = 0.0
        self._last = (time.monotonic(), 0)

    async def run(self, counters: LiveCounters, total: int) -> None:
        board = Board()
        counters.history.subscribe(board)
        if self._config is not None:
            from . import scenario as _scenario

            # The checks, live: a phenomenon is said when it happens, not at the end.
            self._watch = Watch(counters.history, self._config,
                                _scenario.load(self._config.scenario))  # fmt: skip
        start = counters.began  # the run's start, not the view's: starting takes a while
        # Not transient: the last board (the deadlock, who waits for what) stays on the screen
        # above the summary.
        with Live(console=self._console, auto_refresh=False, transient=False) as live:
            try:
                while True:
                    live.update(self.render(board, counters, time.monotonic() - start),
                                refresh=True)  # fmt: skip
                    await anyio.sleep(_REFRESH_S)
            finally:
                # The engine stops the view once the run's last lines are in the history,
                # which may be within a refresh of its finding a deadlock: the last frame
                # draws the explanation and the final counts all the same.
                live.update(self.render(board, counters, time.monotonic() - start), refresh=True)

    def render(self, board: Board, counters: LiveCounters, elapsed: float) -> RenderableType:
        now = time.monotonic()
        then, seen = self._last
        if now - then >= 0.5:
            self._rate = (counters.events - seen) / (now - then)
            self._last = (now, counters.events)
        footer = f"{counters.events:,} events · {self._rate:,.0f} events/s"
        notes = self._watch.notes() if self._watch is not None else ()
        return frame(board.snapshot(now=elapsed, notes=notes), title=self._title,
                     speedup=self._speedup, console=self._console, footer=footer)  # fmt: skip
