"""The live view of a run in progress: gauges per primitive, actors done, events per second.

Shown only on a terminal. It refreshes from the engine's event loop (rich's own refresh thread
would make the engine multi-threaded, and the engine forks).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import anyio
from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .coordinator import LiveCounters

__all__ = ["LiveView"]

_REFRESH_S = 0.1


class LiveView:
    """Draws :class:`~sim.coordinator.LiveCounters` on ``console`` until cancelled."""

    def __init__(
        self,
        console: Console,
        title: str,
        primitives: Mapping[str, Mapping[str, Any]],
        speedup: float,
    ) -> None:
        self._console = console
        self._speedup = speedup
        self._title = title
        # Gauges for what has a capacity to fill (the car park's spaces).
        self._gauges = {
            name: int(info["value"])
            for name, info in primitives.items()
            # A semaphore that starts at 0 is a signal, not a capacity: no gauge to fill.
            if info.get("kind") in ("semaphore", "bounded_semaphore") and info.get("value")
        }
        self._rate = 0.0
        self._last = (time.monotonic(), 0)

    async def run(self, counters: LiveCounters, total: int) -> None:
        start = counters.began  # the run's start, not the view's: starting takes a while
        with Live(console=self._console, auto_refresh=False, transient=True) as live:
            while True:
                live.update(self.render(counters, total, time.monotonic() - start), refresh=True)
                await anyio.sleep(_REFRESH_S)

    def render(self, counters: LiveCounters, total: int, elapsed: float) -> Group:
        now = time.monotonic()
        then, seen = self._last
        if now - then >= 0.5:
            self._rate = (counters.events - seen) / (now - then)
            self._last = (now, counters.events)
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold")
        grid.add_column(width=32)
        grid.add_column()
        for name, capacity in self._gauges.items():
            # Lines arrive in per-actor batches, so for a moment the count can run one batch
            # ahead of a release; the log's own check is exact, the gauge is a view.
            held = min(counters.held[name], capacity)
            waiting = max(counters.waiting[name], 0)
            grid.add_row(
                name,
                ProgressBar(total=capacity, completed=held, width=32),
                f"{held:>4}/{capacity} taken   {waiting:>4} waiting",
            )
        running = counters.actors_started - counters.actors_ended
        grid.add_row(
            "actors",
            ProgressBar(total=max(total, 1), completed=counters.actors_ended, width=32),
            f"{counters.actors_ended:>4}/{total} done   {running:>4} running",
        )
        minutes = int(elapsed * self._speedup / 60)
        footer = Text(
            f"{counters.events:,} events   {self._rate:,.0f} events/s   "
            f"wall {elapsed:5.1f} s   simulated {minutes // 60:d} h {minutes % 60:02d} min",
            style="dim",
        )
        return Group(Text(self._title, style="bold cyan"), grid, footer)
