"""Resource statistics straight from the history: waits per operation, levels over time.

A scenario's analysis asks its history for what it needs (``history.waits("spaces",
"acquire")``, ``history.level("spaces", "held")``) instead of pairing lines itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from sim.stats import TimeWeighted

from .subscriber import Subscriber

if TYPE_CHECKING:
    from .facts import Operation

__all__ = ["Level", "Waits"]


class Waits(Subscriber):
    """The waits (seconds from invoke to return) of one operation on one primitive.

    ``ok`` and ``timeout`` collect the completed waits by outcome, ``all`` both in the order
    they returned; ``started`` holds each wait's invoke time in the same order as ``all``.
    """

    def __init__(self, prim: str, op: str) -> None:
        self.prims = frozenset({prim})
        self.op = op
        self.all: list[float] = []
        self.started: list[float] = []
        self.ok: list[float] = []
        self.timeout: list[float] = []
        self.pending = 0

    def on_op(self, op: Operation) -> None:
        if op.invoke.op != self.op:
            return
        done = op.done
        if done is None:
            self.pending += 1
            return
        wait = done.ts - op.invoke.ts
        self.all.append(wait)
        self.started.append(op.invoke.ts)
        (self.ok if done.phase == "ok" else self.timeout).append(wait)


class Level(TimeWeighted, Subscriber):
    """The time-weighted level of one gauge series of one primitive (a car park's ``held``,
    a queue's ``length``)."""

    def __init__(self, prim: str, series: str, start: float, level: float) -> None:
        TimeWeighted.__init__(self, start, level)
        self.prims = frozenset({prim})
        self.series = series

    def on_gauge(self, ts: float, prim: str, values: Mapping[str, float]) -> None:
        value = values.get(self.series)
        if value is not None and value != self.level:
            self.change(ts, value - self.level)
