"""The steady-state window of a run, and honest estimates of what was measured in it.

A queueing model describes a system in equilibrium; a run starts empty and ends when its
actors run out of work. Only a window away from both ends is near the model. It opens a warm-up
after the *last* actor has started (real processes take a while to start: 200 forks take up to
2 s, which at a high speedup is hours of simulated time, during which the system is not yet
loaded) and closes when the scenario says its load begins to fall (the first car has made its
last visit, the first producer has put its last item).

An analysis feeds its :class:`Window` with the actors' starts, the arrivals in the window and
their outcomes (:meth:`Window.add`), and the levels it tracks (:meth:`Window.level`);
:meth:`Window.metrics` turns them into metrics with their batch-means confidence intervals,
the window's length and its number of arrivals, or withholds them with the reason when the
window holds too few arrivals for numbers that mean something.
"""

from __future__ import annotations

import bisect
import dataclasses
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

from .estimate import Interval, batch_means, time_batch_means
from .scenario import Metric

__all__ = ["Estimate", "Window", "steady_metrics"]

# Fewest arrivals in the window for its metrics to be reported at all.
LEAST = 30
# Batch means: this many batches, each of at least so many observations, for an interval.
BATCHES = 10
MIN_BATCH = 5


@dataclass(frozen=True)
class Estimate:
    """How one steady metric is estimated from the window: the mean of the samples called
    ``source`` (``kind="mean"``) or the time-weighted mean of the level called ``source``
    (``kind="level"``), times ``scale``, within [``lower``, ``upper``]."""

    source: str
    kind: str = "mean"
    lower: float | None = 0.0
    upper: float | None = None
    scale: float = 1.0


class _Track:
    __slots__ = ("initial", "level", "times", "values")

    def __init__(self) -> None:
        self.level = 0.0  # the latest value
        self.initial = 0.0  # the value when the window opened
        # The changes inside the window, (times[i], values[i]): doubles, not a tuple per
        # change, so that a long log's window costs 16 bytes a change.
        self.times = array("d")
        self.values = array("d")


class _Pairs(Sequence[tuple[float, float]]):
    """A track's changes as the ``(t, level)`` pairs estimate.time_batch_means takes, scaled
    to simulated minutes and the metric's unit as they are read (the arrays are not copied:
    a long window's changes would be twice in memory). Reading them is most of the cost of a
    level's interval, so a pair is read with as little Python as can be: ``zip`` and ``map``
    to iterate, no slice test for an index.
    """

    def __init__(self, track: _Track, per_second: float, scale: float) -> None:
        self._times, self._values = track.times, track.values
        # Floats, so that their __mul__ takes a float (an int's would not).
        self._m, self._s = float(per_second), float(scale)

    def __len__(self) -> int:
        return len(self._times)

    @overload
    def __getitem__(self, i: int) -> tuple[float, float]: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[tuple[float, float]]: ...
    def __getitem__(self, i: int | slice) -> Any:
        if type(i) is int:
            return (self._times[i] * self._m, self._values[i] * self._s)
        assert isinstance(i, slice)
        return [self[j] for j in range(*i.indices(len(self)))]

    def __iter__(self) -> Iterator[tuple[float, float]]:
        # m * t is t * m (IEEE products commute): the same pairs as __getitem__ makes.
        times = map(self._m.__mul__, self._times)
        return zip(times, map(self._s.__mul__, self._values), strict=True)


class Window:
    """One run's steady window.

    ``starters`` are the actors whose start the window waits for, ``warm_up`` the seconds of
    ``ts`` after the last start before it opens, ``per_second`` the simulated minutes per
    second of ``ts`` (for what the summary says), ``what`` what the samples are called
    (``arrivals``, ``items put``).

    ``correlated`` is how long (simulated minutes) a sample stays correlated with those after
    it: a car's whole cycle, say, since a queue that is long now is still long when the car
    comes back. Batch means assume nearly independent batches; batches shorter than that make
    an interval far narrower than the scatter of the mean (of the default car park's
    57-minute windows, 0.6 of its cycle, cut into ten, 67 % of the intervals held the model's
    mean, not 95 %), so the estimates then come without one, saying why.
    """

    def __init__(
        self,
        starters: Iterable[str],
        warm_up: float,
        *,
        per_second: float,
        what: str = "arrivals",
        least: int = LEAST,
        correlated: float = 0.0,
    ) -> None:
        self._pending = set(starters)
        self.correlated = correlated
        self._expected = len(self._pending)
        self.warm_up = warm_up
        self.per_second = per_second
        self.what = what
        self.least = least
        #: When the last starter started, when the window opens and when it closed (``ts``).
        self.last_start: float | None = None
        self.opens: float | None = None
        self.closed: float | None = None
        self.close_reason = ""
        self.arrivals = 0
        self._samples: dict[str, array[float]] = {}
        self._tracks: dict[str, _Track] = {}

    # -- feeding ------------------------------------------------------------------------------

    def started(self, actor: str, ts: float) -> None:
        """``actor`` has started (its ``actor_start`` line)."""
        if actor not in self._pending:
            return
        self._pending.discard(actor)
        if not self._pending:
            self.last_start = ts
            self.opens = ts + self.warm_up
            for track in self._tracks.values():
                # Changes before the opening were only kept as the latest level.
                first = bisect.bisect_left(track.times, self.opens)
                if first:
                    track.initial = track.values[first - 1]
                    del track.times[:first]
                    del track.values[:first]

    def close(self, ts: float, reason: str = "") -> None:
        """The load begins to fall at ``ts``: the window closes (the first call counts)."""
        if self.closed is None:
            self.closed = ts
            self.close_reason = reason

    def contains(self, ts: float) -> bool:
        """``ts`` lies in the window (which is open from ``opens`` until ``closed``)."""
        return (
            self.opens is not None
            and ts >= self.opens
            and (self.closed is None or ts < self.closed)
        )

    def arrival(self, ts: float) -> bool:
        """An arrival at ``ts``: counted, and True, if it lies in the window."""
        # contains(), inlined: this is called for every arrival of the run.
        opens, closed = self.opens, self.closed
        if opens is not None and ts >= opens and (closed is None or ts < closed):
            self.arrivals += 1
            return True
        return False

    def add(self, name: str, value: float) -> None:
        """One sample of ``name`` (a wait, 1.0 or 0.0 for an outcome) of an arrival in the
        window, in the order they are known."""
        samples = self._samples.get(name)
        if samples is None:
            samples = self._samples[name] = array("d")
        samples.append(float(value))

    def level(self, name: str, ts: float, value: float) -> None:
        """The level ``name`` is ``value`` from ``ts`` on (give every change, in time order)."""
        track = self._tracks.get(name)
        if track is None:
            track = self._tracks[name] = _Track()
        track.level = value
        opens, closed = self.opens, self.closed
        if opens is not None and ts < opens:
            track.initial = value
        elif opens is None or closed is None or ts < closed:
            # Before the window is known to open, every change is kept (few, during the
            # start); the opening drops those before it.
            track.times.append(ts)
            track.values.append(value)

    def finish(self, ts: float) -> None:
        """The log has ended at ``ts``: a window still open closes there."""
        self.close(ts, "the log ended")

    # -- results --------------------------------------------------------------------------

    @property
    def minutes(self) -> float:
        """The window's length in simulated minutes (0 if it never opened)."""
        if self.opens is None or self.closed is None or self.closed <= self.opens:
            return 0.0
        return (self.closed - self.opens) * self.per_second

    def withheld(self) -> str:
        """Why there are no steady metrics, or "" when there are."""
        if self.last_start is None:
            started = self._expected - len(self._pending)
            return f"withheld: only {started} of {self._expected} actors started"
        assert self.opens is not None
        opens = self.opens * self.per_second
        if self.closed is None or self.closed <= self.opens:
            closed = (self.closed or 0.0) * self.per_second
            return (
                f"withheld: the window never opened (the last actor started at minute "
                f"{self.last_start * self.per_second:.4g}, warm-up until {opens:.4g}; "
                f"{self.close_reason or 'closed'} at minute {closed:.4g})"
            )
        if self.arrivals < self.least:
            return (
                f"withheld: {self.arrivals} {self.what} in minutes {opens:.4g} to "
                f"{self.closed * self.per_second:.4g}, fewer than {self.least}"
            )
        return ""

    def describe(self) -> str:
        """The window in words: where it lies, how long it is, how many arrivals it holds."""
        why = self.withheld()
        if why:
            return why
        assert self.opens is not None
        assert self.closed is not None
        return (
            f"minutes {self.opens * self.per_second:.4g} to {self.closed * self.per_second:.4g} "
            f"({self.minutes:.4g} min), {self.arrivals} {self.what}"
        )

    def estimate(self, how: Estimate) -> Interval:
        """The 95 % batch-means interval of one steady metric (the mean alone if the batches
        would be shorter than ``correlated``)."""
        found = self._batch_means(how)
        batch = self.minutes / BATCHES
        if found.low is None or batch >= self.correlated:
            return found
        why = (f"its batches of {batch:.3g} min are shorter than the {self.correlated:.3g} min "
               f"a sample stays correlated; a window of {BATCHES * self.correlated:.4g} min "
               "would give one")  # fmt: skip
        return dataclasses.replace(found, low=None, high=None, method=why)

    def _batch_means(self, how: Estimate) -> Interval:
        if how.kind == "level":
            track = self._tracks.get(how.source) or _Track()
            assert self.opens is not None
            assert self.closed is not None
            s, m = how.scale, self.per_second
            # In simulated minutes, so that the method's sub-window length reads as minutes.
            return time_batch_means(
                _Pairs(track, m, s),
                self.opens * m,
                self.closed * m,
                initial=track.initial * s,
                batches=BATCHES,
                min_batch=MIN_BATCH,
                lower=how.lower,
                upper=how.upper,
            )
        samples = self._samples.get(how.source, array("d"))
        if how.scale != 1.0:
            samples = array("d", (v * how.scale for v in samples))
        return batch_means(
            samples,
            batches=BATCHES,
            min_batch=MIN_BATCH,
            lower=how.lower,
            upper=how.upper,
        )

    def metrics(self, estimates: Mapping[str, Estimate], prefix: str = "steady") -> dict[str, Any]:
        """Every steady metric with its interval (``{key}_low``, ``{key}_high``), and the
        window's ``{prefix}_window`` (in words), ``{prefix}_from``, ``{prefix}_minutes``,
        ``{prefix}_arrivals`` and ``{prefix}_ci`` (how the intervals were made, or why not)."""
        found: dict[str, Any] = {
            f"{prefix}_window": self.describe(),
            f"{prefix}_from": None if self.opens is None else self.opens * self.per_second,
            f"{prefix}_minutes": self.minutes,
            f"{prefix}_arrivals": self.arrivals,
        }
        withheld = bool(self.withheld())
        missing: list[tuple[str, str]] = []
        for key, how in estimates.items():
            interval = None if withheld else self.estimate(how)
            found[key] = None if interval is None else interval.mean
            found[f"{key}_low"] = None if interval is None else interval.low
            found[f"{key}_high"] = None if interval is None else interval.high
            if interval is not None and interval.low is None:
                missing.append((key, interval.method))
        found[f"{prefix}_ci"] = None if withheld else self._ci_words(len(estimates), missing)
        return found

    def _ci_words(self, count: int, missing: list[tuple[str, str]]) -> str:
        each = f"{self.arrivals // BATCHES} {self.what} or {self.minutes / BATCHES:.3g} min each"
        made = f"95 %, batch means of {BATCHES} batches ({each})"
        if not missing:
            return made
        whys = {why for _, why in missing}
        if len(missing) == count and len(whys) == 1:
            return f"no interval: {whys.pop()}"  # one reason for all: said once
        none = "no interval for " + "; ".join(f"{key} ({why})" for key, why in missing)
        return none if len(missing) == count else f"{made}; {none}"


def steady_metrics(*estimated: Metric, prefix: str = "steady") -> tuple[Metric, ...]:
    """The declarations of a :class:`Window`'s metrics: ``estimated`` (each with its interval)
    and the window's own (``{prefix}_window`` and ``{prefix}_ci`` in the table; its start,
    length and arrivals as numbers for sweeps)."""
    return (
        Metric(f"{prefix}_window", "steady state: window", words=True),
        *(dataclasses.replace(m, interval=True) for m in estimated),
        Metric(f"{prefix}_ci", "steady state: intervals", words=True),
        Metric(f"{prefix}_from", "steady state: window opens", "sim min", show=False, lower=0.0),
        Metric(
            f"{prefix}_minutes", "steady state: window length", "sim min", show=False, lower=0.0
        ),
        Metric(f"{prefix}_arrivals", "steady state: arrivals in the window", show=False, lower=0.0),
    )
