"""Honest confidence intervals for measured means and proportions.

- :func:`mean_interval`: the Student t interval of a mean over independent values (one value per
  run, say), clipped to the bounds the metric cannot leave (a wait is never negative).
- :func:`proportion_interval`: the Wilson score interval of a proportion, always inside [0, 1]
  and sensible at 0 of n or n of n, where the textbook p +- z sqrt(p(1-p)/n) collapses to a point.
- :func:`batch_means` and :func:`time_batch_means`: one long run. Successive observations of a
  queue are correlated (a long wait is followed by another), so the t interval over them is too
  narrow; the means of k long batches are nearly independent, and their t interval is not.

Every result is an :class:`Interval` that says how many observations it rests on and by which
method; where no interval can honestly be given, ``low`` and ``high`` are None and ``method``
says why. Invalid arguments raise :class:`~sim.errors.ScenarioError` naming the argument.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import NoReturn

from .errors import ScenarioError
from .quantiles import normal_quantile, student_t_quantile

__all__ = ["Interval", "batch_means", "mean_interval", "proportion_interval", "time_batch_means"]


@dataclass(frozen=True)
class Interval:
    """A point estimate and its confidence interval (``low``/``high`` None: undefined)."""

    mean: float | None  # the point estimate; None only when there is no observation at all
    low: float | None
    high: float | None
    n: int  # observations the estimate rests on
    method: str  # how it was computed, or why there is no interval


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ScenarioError(f"level must be in (0, 1), got {level}")


def _check_bounds(lower: float | None, upper: float | None) -> None:
    if lower is not None and upper is not None and lower > upper:
        raise ScenarioError(f"lower must be <= upper, got lower={lower}, upper={upper}")


def _check_value(name: str, v: float, lower: float | None, upper: float | None) -> None:
    # A value outside the bounds means the bounds (or the data) are wrong: clipping would hide it.
    if not math.isfinite(v):
        raise ScenarioError(f"{name} must be finite, got {v}")
    if lower is not None and v < lower:
        raise ScenarioError(f"{name} = {v} is below the lower bound {lower}")
    if upper is not None and v > upper:
        raise ScenarioError(f"{name} = {v} is above the upper bound {upper}")


def _check_values(
    name: str, values: Sequence[float], lower: float | None, upper: float | None
) -> None:
    for i, v in enumerate(values):
        _check_value(f"{name}[{i}]", v, lower, upper)


def _percent(level: float) -> str:
    return f"{level * 100:g} %"


def _check_count(name: str, value: int, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ScenarioError(f"{name} must be an integer >= {least}, got {value!r}")


def _t_interval(
    means: Sequence[float],
    *,
    n: int,
    lower: float | None,
    upper: float | None,
    level: float,
    method: str,
) -> Interval:
    """The t interval over ``means`` (at least two), clipped, with ``n`` observations shown."""
    k = len(means)
    mean = math.fsum(means) / k
    var = math.fsum((m - mean) ** 2 for m in means) / (k - 1)
    half = student_t_quantile(0.5 + level / 2.0, k - 1) * math.sqrt(var / k)
    low, high = mean - half, mean + half
    clipped = []
    if lower is not None and low < lower:
        low = float(lower)
        clipped.append(f"lower bound {lower:g}")
    if upper is not None and high > upper:
        high = float(upper)
        clipped.append(f"upper bound {upper:g}")
    text = ", ".join([*filter(None, [method]), f"student t, df={k - 1}, {_percent(level)}"])
    if clipped:
        text += ", clipped at " + " and ".join(clipped)
    return Interval(mean, low, high, n, text)


def mean_interval(
    values: Sequence[float],
    *,
    lower: float | None = None,
    upper: float | None = None,
    level: float = 0.95,
) -> Interval:
    """The Student t confidence interval of the mean of independent ``values``.

    The interval is clipped to [``lower``, ``upper``], the range the metric cannot leave (0 for
    a wait, [0, 1] for a probability); a value outside that range is an error. With fewer than
    two values there is no spread to estimate, and ``low``/``high`` are None.
    """
    _check_level(level)
    _check_bounds(lower, upper)
    _check_values("values", values, lower, upper)
    n = len(values)
    if n == 0:
        return Interval(None, None, None, 0, "undefined: no values")
    if n < 2:
        return Interval(float(values[0]), None, None, n, "undefined: n = 1 < 2, no spread")
    return _t_interval(values, n=n, lower=lower, upper=upper, level=level, method="")


def proportion_interval(successes: int, trials: int, level: float = 0.95) -> Interval:
    """The Wilson score interval of the proportion ``successes / trials``.

    Always inside [0, 1], and not empty at 0 or ``trials`` successes (0 of 10 gives
    [0, 0.2775] at 95 %). Assumes independent trials with one success probability.
    """
    _check_level(level)
    _check_count("trials", trials, 0)
    _check_count("successes", successes, 0)
    if successes > trials:
        raise ScenarioError(f"successes must be <= trials ({trials}), got {successes}")
    if trials == 0:
        return Interval(None, None, None, 0, "undefined: no trials")
    z = normal_quantile(0.5 + level / 2.0)
    p = successes / trials
    z2n = z * z / trials
    centre = (p + z2n / 2.0) / (1.0 + z2n)
    half = z / (1.0 + z2n) * math.sqrt(p * (1.0 - p) / trials + z2n / (4.0 * trials))
    # At 0 (or all) successes the bound is exactly 0 (or 1), but rounding leaves ~1e-17; and
    # nowhere may rounding push a bound outside [0, 1].
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == trials else min(1.0, centre + half)
    return Interval(p, low, high, trials, f"wilson score, {_percent(level)}")


def batch_means(
    samples: Sequence[float],
    *,
    batches: int = 10,
    min_batch: int = 5,
    lower: float | None = None,
    upper: float | None = None,
    level: float = 0.95,
) -> Interval:
    """The batch-means interval of the mean of one long run's ``samples`` (in time order).

    The samples are cut into ``batches`` consecutive batches of equal size; their means are
    treated as independent, and the t interval of their mean is returned (``df = batches - 1``),
    clipped to [``lower``, ``upper``]. When the samples do not divide evenly, the first few are
    dropped: the start of a run is the part least like its steady state (``mean`` is then the
    mean of the samples kept, ``n`` their number). With fewer than ``batches * min_batch``
    samples there is no interval (``mean`` is then that of all samples). The batches must be
    long compared with the time over which the samples are correlated; with too short batches
    the interval is too narrow, as the naive one is.
    """
    _check_level(level)
    _check_bounds(lower, upper)
    _check_count("batches", batches, 2)
    _check_count("min_batch", min_batch, 1)
    _check_values("samples", samples, lower, upper)
    n = len(samples)
    mean = math.fsum(samples) / n if n else None
    need = batches * min_batch
    if n < need:
        return Interval(
            mean,
            None,
            None,
            n,
            f"too few observations: {n} < {need} ({batches} batches of at least {min_batch})",
        )
    size = n // batches
    drop = n - size * batches
    means = [
        math.fsum(samples[drop + i * size : drop + (i + 1) * size]) / size for i in range(batches)
    ]
    method = f"batch means, {batches} batches of {size}"
    if drop:
        method += f" (first {drop} of {n} dropped)"
    return _t_interval(
        means, n=size * batches, lower=lower, upper=upper, level=level, method=method
    )


def _window_means(
    changes: Iterable[tuple[float, float]], initial: float, edges: Sequence[float]
) -> list[float]:
    """Time-weighted means of a piecewise-constant level over [edges[i], edges[i + 1]]."""
    # The changes are iterated, not indexed: a long window's are read from arrays as they go.
    changes = iter(changes)
    level = initial
    change = next(changes, None)
    # The level at the window's start: the last change at or before it.
    while change is not None and change[0] <= edges[0]:
        level = change[1]
        change = next(changes, None)
    means = []
    for left, right in pairwise(edges):
        at, area = left, 0.0
        while change is not None and change[0] < right:
            t, new = change
            area += level * (t - at)
            at, level = t, new
            change = next(changes, None)
        area += level * (right - at)
        means.append(area / (right - left))
    return means


def _bad_change(
    i: int, t: float, lv: float, before: float, lower: float | None, upper: float | None
) -> NoReturn:
    """Say what is wrong with change ``i`` (the checks of time_batch_means, one at a time)."""
    _check_value(f"changes[{i}] time", t, None, None)
    if t < before:
        raise ScenarioError(
            f"changes must be in time order: changes[{i}] at t={t} "
            f"comes before changes[{i - 1}] at t={before}"
        )
    _check_value(f"changes[{i}] level", lv, lower, upper)
    raise AssertionError(f"changes[{i}] = ({t}, {lv}) passes every check")  # not reached


def time_batch_means(
    changes: Sequence[tuple[float, float]],
    start: float,
    end: float,
    *,
    initial: float = 0.0,
    batches: int = 10,
    min_batch: int = 5,
    lower: float | None = None,
    upper: float | None = None,
    level: float = 0.95,
) -> Interval:
    """The batch-means interval of the time-weighted mean of a level over [start, end].

    ``changes`` are ``(t, level)`` pairs in time order: from ``t`` on the level is ``level``
    (before the first change it is ``initial``). The window is cut into ``batches`` equal
    sub-windows, whose time-weighted means are treated as independent; the t interval of their
    mean (which is the whole window's time-weighted mean) is returned, clipped to [``lower``,
    ``upper``]. ``n`` is the number of changes in [start, end); with fewer than
    ``batches * min_batch`` of them there is no interval (the level barely moved, so the
    sub-windows' means are not independent draws of anything).
    """
    _check_level(level)
    _check_bounds(lower, upper)
    _check_count("batches", batches, 2)
    _check_count("min_batch", min_batch, 1)
    if not (math.isfinite(start) and math.isfinite(end) and start < end):
        raise ScenarioError(f"the window must have start < end, got start={start}, end={end}")
    _check_value("initial", initial, lower, upper)
    # One pass, checking and counting: a long window has many changes. The test of a change
    # is made inline, and only a change that fails it is looked at again to say why (naming
    # every change as the test goes costs more than the rest of the estimate).
    before = -math.inf
    low = -math.inf if lower is None else lower
    high = math.inf if upper is None else upper
    finite = math.isfinite
    n = 0
    for i, (t, lv) in enumerate(changes):
        if not (before <= t and finite(t) and finite(lv) and low <= lv <= high):
            _bad_change(i, t, lv, before, lower, upper)
        if start <= t < end:
            n += 1
        before = t
    edges = [start + (end - start) * i / batches for i in range(batches)] + [end]
    means = _window_means(changes, initial, edges)
    need = batches * min_batch
    if n < need:
        whole = math.fsum(means) / batches
        return Interval(
            whole,
            None,
            None,
            n,
            f"too few observations: {n} changes < {need} "
            f"({batches} sub-windows of at least {min_batch})",
        )
    method = f"time-weighted batch means, {batches} sub-windows of {(end - start) / batches:g}"
    return _t_interval(means, n=n, lower=lower, upper=upper, level=level, method=method)
