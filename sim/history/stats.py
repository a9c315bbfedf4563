"""Resource statistics straight from the history: waits per operation, levels over time.

A scenario's analysis asks its history for what it needs (``history.waits("spaces",
"acquire")``, ``history.level("spaces", "held")``) instead of pairing lines itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sim.stats import TimeWeighted

if TYPE_CHECKING:
    from .facts import Operation

__all__ = ["Level", "Waits"]


class Waits:
    """The waits (seconds from invoke to return) of one operation on one primitive, filled by
    the history as the operations return.

    ``ok`` and ``timeout`` collect the completed waits by outcome (``timeout`` also holds a
    ``fail``), ``all`` both in the order they returned; ``started`` holds each wait's invoke
    time in the same order as ``all``.
    """

    __slots__ = ("all", "ok", "op", "started", "timeout")

    def __init__(self, op: str) -> None:
        self.op = op
        self.all: list[float] = []
        self.started: list[float] = []
        self.ok: list[float] = []
        self.timeout: list[float] = []

    def add(self, op: Operation) -> None:
        done = op.done
        assert done is not None
        start = op.invoke.ts
        wait = done.ts - start
        self.all.append(wait)
        self.started.append(start)
        (self.ok if done.phase == "ok" else self.timeout).append(wait)


class Level(TimeWeighted):
    """The time-weighted level of one gauge series of one primitive (a car park's ``held``,
    a queue's ``length``), kept by the primitive's model as the gauge changes."""

    def __init__(self, series: str, start: float, level: float) -> None:
        super().__init__(start, level)
        self.series = series

    def to(self, ts: float, value: float) -> None:
        """At ``ts`` the level becomes ``value``."""
        self.change(ts, value - self.level)
