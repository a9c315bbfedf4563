"""Small statistics helpers shared by the run summary, replay and sweeps."""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from typing import cast

__all__ = ["TimeWeighted", "describe", "ordered", "percentile"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of already sorted values, linearly interpolated."""
    if not len(sorted_values):
        return math.nan
    pos = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


# Below this many values a sorted list of floats is the cheaper way to sort them (importing
# numpy costs ~0.1 s, a tenth of a small run's whole analysis); from here on a numpy array of
# doubles, whose 8 bytes a value keep the memory of a long replay flat. The two give the same
# order, and the statistics below do the same IEEE double arithmetic on either.
_ARRAY_FROM = 50_000


def ordered(values: Sequence[float] | array[float], scale: float = 1.0) -> Sequence[float]:
    """``values`` (each times ``scale``) in ascending order."""
    if len(values) < _ARRAY_FROM:
        result = sorted(values)
        return result if scale == 1.0 else [v * scale for v in result]
    # Imported here, not with the module: every actor imports this module (through sim) and
    # forks from a launcher that holds it, and numpy's ~10 MB of pages would be copied into the
    # page tables of every fork and torn down at every exit (sim.runtime._launcher).
    import numpy as np

    array_ = np.sort(np.asarray(values, dtype=np.float64))
    # Indexed and iterated like a sequence of floats, which is all that is done with it.
    return cast("Sequence[float]", array_ if scale == 1.0 else array_ * scale)


def describe(
    values: Sequence[float] | array[float], prefix: str, scale: float = 1.0
) -> dict[str, float | None]:
    """Mean, p50, p95 and max of ``values`` (each times ``scale``) as ``{prefix}_mean`` ...
    (None when empty)."""
    if not len(values):
        return {f"{prefix}_{k}": None for k in ("mean", "p50", "p95", "max")}
    # Sorted as one array of doubles when there are many (see _ARRAY_FROM).
    sorted_ = ordered(values, scale)
    return {
        f"{prefix}_mean": float(sum(sorted_)) / len(sorted_),
        f"{prefix}_p50": float(percentile(sorted_, 50)),
        f"{prefix}_p95": float(percentile(sorted_, 95)),
        f"{prefix}_max": float(sorted_[-1]),
    }


class TimeWeighted:
    """The time-weighted mean and the maximum of a level that changes at known instants."""

    def __init__(self, start: float = 0.0, level: float = 0.0) -> None:
        self._t = start
        self._start = start
        self.level = level
        self.maximum = level
        self._area = 0.0

    def change(self, t: float, delta: float) -> None:
        """At time ``t`` the level moves by ``delta``."""
        self._area += self.level * (t - self._t)
        self._t = t
        self.level += delta
        self.maximum = max(self.maximum, self.level)

    def area(self, t: float) -> float:
        """The integral of the level from start to ``t`` (``t`` not before the last change)."""
        return self._area + self.level * (t - self._t)

    def mean(self, end: float) -> float:
        """Mean level over [start, end]."""
        span = end - self._start
        if span <= 0:
            return self.level
        return (self._area + self.level * (end - self._t)) / span
