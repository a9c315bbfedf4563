"""Resource statistics straight from the history: waits per operation, levels over time.

A scenario's analysis asks its history for what it needs (``history.waits("spaces",
"acquire")``, ``history.level("spaces", "held")``) instead of pairing lines itself.
"""

from __future__ import annotations

from array import array
from collections import Counter
from typing import TYPE_CHECKING

from sim.stats import TimeWeighted

if TYPE_CHECKING:
    from .facts import Operation

__all__ = ["Level", "Waits"]


class Waits:
    """The waits (seconds from invoke to return) of one operation on one primitive, filled by
    the history as the operations return.

    ``all`` holds every completed wait in the order they returned (8 bytes each: memory stays
    flat in the log's length); ``outcomes`` counts them by how they ended (``ok``,
    ``timeout``, ``fail``).
    """

    __slots__ = ("all", "op", "outcomes")

    def __init__(self, op: str) -> None:
        self.op = op
        self.all = array("d")
        self.outcomes: Counter[str] = Counter()

    def add(self, op: Operation) -> None:
        done = op.done
        assert done is not None
        self.all.append(done.ts - op.invoke.ts)
        self.outcomes[str(done.phase)] += 1


class Level(TimeWeighted):
    """The time-weighted level of one gauge series of one primitive (a car park's ``held``,
    a queue's ``length``), kept by the primitive's model as the gauge changes."""

    def __init__(self, series: str, start: float, level: float) -> None:
        super().__init__(start, level)
        self.series = series

    def to(self, ts: float, value: float) -> None:
        """At ``ts`` the level becomes ``value``."""
        # TimeWeighted.change inlined, with the same arithmetic in the same order: this is
        # called at every change of a gauge somebody follows.
        level = self.level
        self._area += level * (ts - self._t)
        self._t = ts
        level += value - level
        self.level = level
        if level > self.maximum:
            self.maximum = level
