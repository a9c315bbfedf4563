"""A benchmark scenario: ``actors`` processes that each log ``ticks`` events as fast as they can.

Used by bench/log_pipeline.py and bench/transport.py (throughput of the log pipeline) and, with
``ticks = 0``, by bench/start_methods.py (process start cost). Load it with
``scenario = "bench.flood"`` in a TOML file (see bench/flood.toml); the repository root must be on
``PYTHONPATH`` so that spawned actors can import ``bench.flood`` too.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from sim import Actor, Analysis, Ctx, History, Line, Metric, RunConfig, Scenario
from sim import actors as numbered


class Params(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """How many actors, and how many ``tick`` events each one logs."""

    actors: Annotated[int, msgspec.Meta(ge=0)] = 4
    ticks: Annotated[int, msgspec.Meta(ge=0)] = 100_000


def flooder(ctx: Ctx[Params]) -> None:
    """Log ``ticks`` events back to back: nothing but the log pipeline is measured."""
    info = ctx.log.info
    for i in range(ctx.params.ticks):
        info("tick", i=i)


class FloodAnalysis(Analysis[Params]):
    """Counts ticks and the span of their timestamps (the pipeline's producing rate)."""

    events = frozenset({"tick"})

    def __init__(self, config: RunConfig[Params], history: History) -> None:
        super().__init__(config, history)
        self._ticks = 0
        self._first = float("inf")
        self._last = float("-inf")

    def on_line(self, line: Line) -> None:
        self._ticks += 1
        ts = line.ts
        self._first = min(self._first, ts)
        self._last = max(self._last, ts)

    def metrics(self) -> dict[str, Any]:
        span = self._last - self._first if self._ticks > 1 else 0.0
        return {
            "ticks": self._ticks,
            "span_s": span,
            "ticks_per_s": self._ticks / span if span > 0 else 0.0,
        }


def _actors(p: Params) -> list[Actor]:
    return numbered("flood", p.actors, flooder)


scenario = Scenario(
    name="flood",
    description="Actors that log as fast as they can (log pipeline benchmark)",
    params=Params,
    primitives=lambda p: {},
    actors=_actors,
    analysis=FloodAnalysis,
    metrics=(
        Metric("ticks", "tick events"),
        Metric("span_s", "first to last tick", "s"),
        Metric("ticks_per_s", "ticks per second", "1/s"),
    ),
)
